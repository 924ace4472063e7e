"""ScienceQA ensembling: complement and judge counts on hand-made prediction files (accuracies by hand), the judge
against a stub OpenAI-compatible server on 127.0.0.1 (retries, a failed item falls back, resume), mismatched ids, and
the real 100-problem sample."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from scitune.cli.eval import main
from scitune.eval.ensemble import parse_judge_answer

# pid: (number of choices, answer index, A's text, B's option index in a ScienceQA result file)
PROBLEMS = {
    "p1": (2, 0, "The answer is A.", 0),  # agree, right
    "p2": (2, 1, "B", 0),  # A right, B wrong
    "p3": (3, 2, "I am not sure.", 2),  # A unparsable, B right
    "p4": (2, 0, "The answer is A. The answer is A.", 1),  # A unparsable (two matches, as LLaVA), B wrong
    "p5": (2, 0, "The answer is B.", 0),  # A wrong, B right
    "p6": (3, 2, "The answer is A.", 1),  # both wrong, differently
}
# the stub judge's reply per question: p3 quotes the students before its own last line, p4 never gives a letter
JUDGE = {
    "p2": "Student 1 is right.\nThe answer is B.",
    "p3": "Student 2 wrote The answer is C. and Student 1 gave none.\nThe answer is C.",
    "p4": "Both could be right.",
    "p5": "The answer is A.",
    "p6": "Neither: the answer is C.\nThe answer is C.",
}


def _problem(pid: str, n: int, answer: int) -> dict:
    return {"question": f"Question {pid}?", "choices": [f"{pid} option {i}" for i in range(n)], "answer": answer,
            "hint": "" if pid != "p2" else "A hint.", "image": "image.png" if pid == "p5" else None,
            "subject": "natural science", "grade": "grade3", "topic": "physics", "category": "Forces",
            "lecture": "", "solution": "", "task": "closed choice", "split": "test"}  # fmt: skip


@pytest.fixture
def sqa(tmp_path):
    root = tmp_path / "sqa"
    root.mkdir()
    problems = {pid: _problem(pid, n, ans) for pid, (n, ans, _, _) in PROBLEMS.items()}
    problems["p7"] = _problem("p7", 2, 0)
    (root / "problems.json").write_text(json.dumps(problems))
    (root / "pid_splits.json").write_text(json.dumps({"test": list(PROBLEMS), "val": ["p7"]}))
    a = tmp_path / "a.jsonl"  # a LLaVA answer file
    a.write_text("".join(json.dumps({"question_id": p, "text": t}) + "\n" for p, (_, _, t, _) in PROBLEMS.items()))
    b = tmp_path / "b.json"  # a ScienceQA result file
    b.write_text(json.dumps({"results": {p: i for p, (*_, i) in PROBLEMS.items()}, "outputs": {}}))
    return root, a, b


class _Judge(BaseHTTPRequestHandler):
    seen: list[dict] = []

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        user = body["messages"][-1]["content"]
        pid = user.split("Question: Question ")[1].split("?")[0]
        type(self).seen.append({"pid": pid, "user": user, "system": body["messages"][0]["content"]})
        data = json.dumps({"choices": [{"message": {"content": JUDGE[pid]}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def judge_url():
    _Judge.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Judge)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def _run(capsys, root, a, b, out, *extra) -> dict:
    argv = ["ensemble", "--a", str(a), "--b", str(b), "--data", str(root), "--split", "test", "--out", str(out),
            "--progress", "false", *extra]  # fmt: skip
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_complement_counts_and_the_same_score_as_eval_scienceqa(sqa, tmp_path, capsys):
    root, a, b = sqa
    out = tmp_path / "comp"
    printed = _run(capsys, root, a, b, out, "--mode", "complement")
    # A: p1 p2 right = 2/6; B: p1 p3 p5 = 3/6; complement (A, else B on p3 p4): p1 p2 p3 = 3/6
    ens = json.loads((out / "results.json").read_text())["ensemble"]
    assert ens["accuracy_a"] == pytest.approx(100 * 2 / 6) and ens["accuracy_b"] == pytest.approx(50.0)
    assert ens["accuracy"] == pytest.approx(50.0) == printed["summary"]["acc"]
    assert (ens["a_unparsable"], ens["b_unparsable"], ens["agree"], ens["disagree"]) == (2, 0, 1, 5)
    assert ens["source"] == {"a": 4, "b": 2} and not (out / "judge.jsonl").exists()
    preds = {r["id"]: r for r in map(json.loads, (out / "ensemble_predictions.jsonl").read_text().splitlines())}
    assert [preds[p]["index"] for p in PROBLEMS] == [0, 1, 2, 1, 1, 0] and preds["p3"]["source"] == "b"
    report = (out / "report.md").read_text()
    assert "## Ensemble (complement)" in report and "A unparsable: 2" in report
    # the combined file scores the same through `scitune eval scienceqa --predictions`
    assert main(["scienceqa", "--predictions", str(out / "ensemble_predictions.jsonl"), "--data", str(root),
                 "--out", str(tmp_path / "plain"), "--progress", "false"]) == 0  # fmt: skip
    plain = json.loads((tmp_path / "plain" / "results.json").read_text())
    assert plain["summary"] == printed["summary"] and plain["accuracy"]["results"] == {p: preds[p]["index"]
                                                                                       for p in PROBLEMS}  # fmt: skip


def test_judge_mode_with_a_stub_judge_failures_fall_back_and_resume(sqa, tmp_path, capsys, judge_url, monkeypatch):
    monkeypatch.setenv("SCITUNE_JUDGE_API_KEY", "sk-j")
    root, a, b = sqa
    out = tmp_path / "judge"
    extra = ["--mode", "judge", "--judge-url", judge_url, "--judge-model", "stub", "--judge-retries", "1",
             "--judge-backoff", "0.01"]  # fmt: skip
    printed = _run(capsys, root, a, b, out, *extra)
    # disputed p2..p6 go to the judge: p2 B, p3 C, p5 A, p6 C right; p4 unparsable twice -> B's wrong answer kept
    assert sorted(s["pid"] for s in _Judge.seen) == ["p2", "p3", "p4", "p4", "p5", "p6"]
    assert printed["summary"]["acc"] == pytest.approx(100 * 5 / 6)
    ens = json.loads((out / "results.json").read_text())["ensemble"]
    assert ens["source"] == {"a": 1, "judge": 4, "b": 1} and ens["judge_failed"] == 1
    assert ens["judge_sided_with"] == {"a": 1, "b": 2, "neither": 1}
    assert ens["failures"][0]["id"] == "p4" and "2 attempt(s)" in ens["failures"][0]["error"]
    first = next(s for s in _Judge.seen if s["pid"] == "p5")["user"]
    assert "Options: (A) p5 option 0 (B) p5 option 1" in first and "an image that you cannot see" in first
    assert "[Student 1]\nThe answer is B.\n[End of Student 1]" in first and "[Student 2]\nThe answer is A." in first
    p3 = next(s for s in _Judge.seen if s["pid"] == "p3")["user"]
    assert "[Student 1]\nI am not sure.\n" in p3
    assert "Judge failures" in (out / "report.md").read_text()
    # rerun: judged problems come from judge.jsonl; only the failed one is asked again
    _Judge.seen = []
    assert _run(capsys, root, a, b, out, *extra)["summary"]["acc"] == pytest.approx(100 * 5 / 6)
    assert [s["pid"] for s in _Judge.seen] == ["p4", "p4"]


def test_mismatched_or_foreign_ids_are_named(sqa, tmp_path):
    root, a, b = sqa
    short = tmp_path / "short.jsonl"
    lines = a.read_text().splitlines()
    short.write_text("\n".join([*lines[:4], json.dumps({"question_id": "p9", "text": "A"})]) + "\n")
    argv = ["ensemble", "--a", str(short), "--b", str(b), "--data", str(root), "--out", str(tmp_path / "x")]
    with pytest.raises(ValueError, match=r"only in A: \[p9\]; only in B: \[p5, p6\]"):
        main(argv)
    val = tmp_path / "val.jsonl"
    val.write_text(a.read_text() + json.dumps({"question_id": "p7", "text": "A"}) + "\n")
    val_b = tmp_path / "val_b.jsonl"
    val_b.write_text(val.read_text())
    with pytest.raises(ValueError, match=r"not in split 'test': \[p7\]"):
        main(["ensemble", "--a", str(val), "--b", str(val_b), "--data", str(root), "--out", str(tmp_path / "y")])
    with pytest.raises(ValueError, match="--judge_url"):
        main(["ensemble", "--a", str(a), "--b", str(b), "--data", str(root), "--out", "o", "--mode", "judge"])


def test_parse_judge_answer():
    assert parse_judge_answer("The answer is B.", 2) == 1
    assert parse_judge_answer("Student 1: The answer is A.\nSo the answer is C.\nThe answer is (C)", 3) == 2
    assert parse_judge_answer("The answer is D.", 3) == -1 and parse_judge_answer("no idea", 4) == -1
    assert parse_judge_answer("B. It floats.\nSo it sinks? No.", 2) == 1  # no last-line answer: LLaVA's rules


def test_complement_on_the_real_sample(shared_data, tmp_path, capsys):
    sqa = shared_data / "scienceqa"
    problems = json.loads((sqa / "problems_trainval_sample.json").read_text())
    val = [p for p in json.loads((sqa / "pid_splits.json").read_text())["val"] if p in problems]
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    # A: "The answer is A." on even positions, nothing usable on odd ones; B: always the last option
    a.write_text("".join(json.dumps({"question_id": p, "text": "The answer is A." if i % 2 == 0 else "Unsure"}) + "\n"
                         for i, p in enumerate(val)))  # fmt: skip
    last = {p: "ABCDE"[len(problems[p]["choices"]) - 1] for p in val}
    b.write_text("".join(json.dumps({"question_id": p, "text": last[p]}) + "\n" for p in val))
    want = sum(
        problems[p]["answer"] == (0 if i % 2 == 0 else len(problems[p]["choices"]) - 1) for i, p in enumerate(val)
    )
    argv = ["ensemble", "--a", str(a), "--b", str(b), "--data", str(sqa / "problems_trainval_sample.json"),
            "--pid-splits", str(sqa / "pid_splits.json"), "--split", "val", "--out", str(tmp_path / "o"),
            "--progress", "false"]  # fmt: skip
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    assert len(val) == 50 and printed["summary"]["acc"] == pytest.approx(100 * want / 50)
    assert printed["ensemble"]["source"] == {"a": 25, "b": 25}
