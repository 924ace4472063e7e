"""`scitune eval scienceqa --predictions` on the real 100-problem sample: exact counts from known predicted indices,
bad input counted (never a crash), the report's tables and plots, result-file and LLaVA-answer inputs."""

from __future__ import annotations

import json

import pytest
from evalkit import is_png

from scitune.cli.eval import main

LETTERS = "ABCDE"


@pytest.fixture(scope="module")
def sample(shared_data):
    sqa = shared_data / "scienceqa"
    problems = json.loads((sqa / "problems_trainval_sample.json").read_text())
    splits = json.loads((sqa / "pid_splits.json").read_text())
    val = [pid for pid in splits["val"] if pid in problems]
    return {"dir": sqa, "problems": problems, "val": val}


def _argv(sample, pred, out, *extra):
    d = sample["dir"]
    return ["scienceqa", "--predictions", str(pred), "--data", str(d / "problems_trainval_sample.json"),
            "--pid-splits", str(d / "pid_splits.json"), "--split", "val", "--out", str(out), "--progress", "false",
            *extra]  # fmt: skip


def _expected_groups(problems, pids, right):
    """The official groups, computed here from the problem fields."""
    rules = {
        "NAT": lambda p: p["subject"] == "natural science",
        "SOC": lambda p: p["subject"] == "social science",
        "LAN": lambda p: p["subject"] == "language science",
        "TXT": lambda p: p["hint"] != "",
        "IMG": lambda p: p["image"] is not None,
        "NO": lambda p: p["hint"] == "" and p["image"] is None,
        "G1-6": lambda p: int(p["grade"][5:]) <= 6,
        "G7-12": lambda p: int(p["grade"][5:]) >= 7,
    }
    return {g: (sum(1 for q in pids if r(problems[q]) and q in right), sum(1 for q in pids if r(problems[q])))
            for g, r in rules.items()}  # fmt: skip


def test_known_indices_give_exact_counts_and_bad_input_is_counted(sample, tmp_path, capsys):
    problems, val = sample["problems"], sample["val"]
    assert len(val) == 50
    lines, right, missing, empty = [], set(), [], []
    for i, pid in enumerate(val):
        p = problems[pid]
        wrong = (p["answer"] + 1) % len(p["choices"])
        mode = i % 6
        if mode == 0:  # correct option index
            lines.append(json.dumps({"id": pid, "index": p["answer"]}))
            right.add(pid)
        elif mode == 1:  # correct, as a generated text
            lines.append(
                json.dumps(
                    {"question_id": pid, "text": f"LECTURE: x\nSOLUTION: y\nThe answer is {LETTERS[p['answer']]}."}
                )
            )
            right.add(pid)
        elif mode == 2:  # wrong index
            lines.append(json.dumps({"id": pid, "index": wrong}))
        elif mode == 3:
            missing.append(pid)
        elif mode == 4:  # empty generation
            lines.append(json.dumps({"question_id": pid, "text": ""}))
            empty.append(pid)
        else:  # two answers: LLaVA's parser fails
            lines.append(json.dumps({"question_id": pid, "text": "The answer is A. The answer is B."}))
    lines += ['{"question_id": "999999", "text": "A"}', "{not json", '{"question_id": "1"}']
    pred = tmp_path / "pred.jsonl"
    pred.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    assert main(_argv(sample, pred, out)) == 0

    res = json.loads((out / "results.json").read_text())
    acc = res["accuracy"]
    assert (acc["correct"], acc["count"]) == (len(right), 50)
    assert acc["acc_str"] == f"{100 * len(right) / 50:.2f}"
    for g, (c, n) in _expected_groups(problems, val, right).items():
        assert (acc["groups"][g]["correct"], acc["groups"][g]["count"]) == (c, n), g
    assert sum(acc["groups"][g]["count"] for g in ("NAT", "SOC", "LAN")) == 50
    inp = res["input"]
    assert inp["missing"] == len(missing) and inp["empty"] == len(empty)
    assert inp["unknown_ids"] == 1 and inp["malformed"] == 2 and inp["predictions"] == 50 - len(missing)
    assert res["unparsable"] == len(empty) + sum(1 for i in range(50) if i % 6 == 5)
    report = (out / "report.md").read_text()
    assert "| accuracy (%) | " + acc["acc_str"] + " | " + acc["groups"]["NAT"]["acc_str"] in report
    assert "Accuracy by topic" in report and "Accuracy by category" in report
    assert "missing predictions (scored wrong): " + str(len(missing)) in report
    assert "Table 5" in report  # the generated texts carry LECTURE/SOLUTION
    for png in res["plots"]:
        assert is_png(out / png)
    assert json.loads(capsys.readouterr().out)["summary"]["acc"] == pytest.approx(100 * len(right) / 50)


def test_result_file_and_llava_answers_agree(sample, tmp_path):
    problems, val = sample["problems"], sample["val"]
    chosen = {pid: (problems[pid]["answer"] if i % 2 else 0) for i, pid in enumerate(val)}
    expected = sum(chosen[pid] == problems[pid]["answer"] for pid in val)
    rf = tmp_path / "result.json"
    rf.write_text(json.dumps({"acc": 0, "correct": 0, "count": 50, "results": chosen, "outputs": {}}))
    llava = tmp_path / "answers.jsonl"
    llava.write_text("".join(json.dumps({"question_id": pid, "prompt": "q", "text": LETTERS[k], "answer_id": "x",
                                         "model_id": "m", "metadata": {}}) + "\n" for pid, k in chosen.items()))  # fmt: skip
    for i, pred in enumerate((rf, llava)):
        assert main(_argv(sample, pred, tmp_path / f"o{i}")) == 0
        res = json.loads((tmp_path / f"o{i}" / "results.json").read_text())
        assert res["accuracy"]["correct"] == expected and res["input"]["missing"] == 0


def test_lecture_frequency_table_with_train_problems(sample, tmp_path):
    d = sample["dir"]
    pred = tmp_path / "p.jsonl"
    pred.write_text("".join(json.dumps({"id": pid, "index": sample["problems"][pid]["answer"]}) + "\n"
                            for pid in sample["val"]))  # fmt: skip
    out = tmp_path / "o"
    assert main(_argv(sample, pred, out, "--train-problems", str(d / "problems_trainval_sample.json"))) == 0
    lf = json.loads((out / "results.json").read_text())["lecture_frequency"]
    with_lecture = [p for p in sample["val"] if sample["problems"][p]["lecture"]]
    assert [r["questions"] for r in lf["rows"]][-1] <= len(with_lecture)
    assert all(r["acc"] == 100.0 for r in lf["rows"] if r["questions"])  # every answer was right
    assert "Table 4" in (out / "report.md").read_text()


def test_predictions_need_out_and_one_source(sample, tmp_path):
    d = sample["dir"]
    with pytest.raises(ValueError, match="--out"):
        main(
            [
                "scienceqa",
                "--predictions",
                str(tmp_path / "x.jsonl"),
                "--data",
                str(d / "problems_trainval_sample.json"),
            ]
        )
    with pytest.raises(ValueError, match="exactly one"):
        main(["scienceqa", "--data", str(d)])
