"""LLaVA-Bench-style judging against a stub OpenAI-compatible server on 127.0.0.1: relative scores by hand,
retries with backoff, per-item failures (timeout, unparsable reply), the API key variable, and resume."""

from __future__ import annotations

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from scitune.cli.eval import main
from scitune.eval.llava_bench import parse_score_pair
from scitune.llm_client import JudgeClient, JudgeError


class _Judge(BaseHTTPRequestHandler):
    seen: list[dict] = []
    flaky_failures = 0

    def log_message(self, *args):  # keep the test output clean
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        user = body["messages"][1]["content"]
        type(self).seen.append({"path": self.path, "auth": self.headers.get("Authorization"), "user": user})
        if "Q-slow" in user:
            time.sleep(1.0)
        if "Q-flaky" in user and type(self).flaky_failures < 2:
            type(self).flaky_failures += 1
            self.send_response(503)
            self.end_headers()
            return
        reply = {
            "Q-ok": "8 6\nAssistant 1 is better.",
            "Q-flaky": "7,8\nfine",
            "Q-slow": "9 9",
            "Q-garbage": "Score: seven",
        }
        text = next(v for k, v in reply.items() if f"[Question]\n{k}" in user)
        data = json.dumps({"choices": [{"message": {"role": "assistant", "content": text}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def judge_server():
    _Judge.seen, _Judge.flaky_failures = [], 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Judge)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_parse_score_pair_llava_rule():
    assert parse_score_pair("8 6\nbecause") == (8.0, 6.0)
    assert parse_score_pair("7,8") == (7.0, 8.0)
    assert parse_score_pair("7, 8") is None  # ", " becomes two spaces: LLaVA's parser fails too
    assert parse_score_pair("8  6") is None  # two spaces: three pieces, as LLaVA's parser
    assert parse_score_pair("Score: 8 6") is None


def _bench_dir(tmp_path):
    root = tmp_path / "bench"
    root.mkdir()
    qs = [("Q-ok", "conv"), ("Q-flaky", "detail"), ("Q-slow", "complex"), ("Q-garbage", "complex")]
    (root / "questions.jsonl").write_text("".join(json.dumps({"question_id": i, "image": f"{i}.jpg", "text": q,
                                                              "category": c}) + "\n" for i, (q, c) in enumerate(qs)))  # fmt: skip
    (root / "context.jsonl").write_text("".join(json.dumps({"image": f"{i}.jpg", "caption": f"caption {i}"}) + "\n"
                                                for i in range(4)))  # fmt: skip
    (root / "answers_gpt4.jsonl").write_text(
        "".join(json.dumps({"question_id": i, "text": f"ref {i}"}) + "\n" for i in range(4))
    )
    pred = tmp_path / "answers.jsonl"
    pred.write_text("".join(json.dumps({"question_id": i, "text": f"model {i}"}) + "\n" for i in range(4)))
    return root, pred


def test_llava_bench_relative_scores_retries_failures_and_resume(judge_server, tmp_path, monkeypatch):
    monkeypatch.setenv("SCITUNE_JUDGE_API_KEY", "sk-test")
    root, pred = _bench_dir(tmp_path)
    out = tmp_path / "o"
    argv = ["llava-bench", "--data", str(root), "--predictions", str(pred), "--out", str(out), "--judge-url",
            judge_server, "--judge-model", "stub", "--judge-timeout", "0.3", "--judge-retries", "2",
            "--judge-backoff", "0.01", "--progress", "false"]  # fmt: skip
    start = time.monotonic()
    assert main(argv) == 0
    assert time.monotonic() - start < 10  # the slow judge times out; nothing hangs
    res = json.loads((out / "results.json").read_text())
    cats = res["categories"]
    assert cats["conv"]["relative"] == pytest.approx(100 * 6 / 8)
    assert cats["detail"]["relative"] == pytest.approx(100 * 8 / 7)
    assert cats["all"]["relative"] == pytest.approx(100 * 7 / 7.5) and cats["all"]["count"] == 2
    failed = {f["id"]: f["error"] for f in res["failures"]}
    assert set(failed) == {"2", "3"} and "unparsable" in failed["3"] and "3 attempt(s)" in failed["2"]
    assert _Judge.flaky_failures == 2 and sum("Q-flaky" in s["user"] for s in _Judge.seen) == 3
    assert all(s["auth"] == "Bearer sk-test" and s["path"] == "/v1/chat/completions" for s in _Judge.seen)
    first = _Judge.seen[0]["user"]
    assert first.startswith("[Context]\ncaption 0\n\n[Question]\nQ-ok\n\n[Assistant 1]\nref 0\n\n")
    assert "[Assistant 2]\nmodel 0\n\n[End of Assistant 2]" in first
    assert "Failed items (2)" in (out / "report.md").read_text()
    # rerun: judged items come from reviews.jsonl, only the failed ones are asked again
    _Judge.seen = []
    assert main(argv) == 0
    assert (
        sorted(s["user"].split("[Question]\n")[1].split("\n")[0] for s in _Judge.seen) == ["Q-garbage"] + ["Q-slow"] * 3
    )


class _ErrorJudge(BaseHTTPRequestHandler):
    """Answers every request with ``status`` and ``body``; records what arrived."""

    status, body, content_type = 404, b"", "application/json"
    calls: list[dict] = []

    def log_message(self, *args):
        pass

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        type(self).calls.append({"path": self.path, "auth": self.headers.get("Authorization")})
        self.send_response(self.status)
        self.send_header("Content-Type", self.content_type)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)


@pytest.fixture
def error_judge():
    _ErrorJudge.calls = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ErrorJudge)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_judge_client_does_not_retry_client_errors(error_judge, monkeypatch):
    monkeypatch.delenv("SCITUNE_JUDGE_API_KEY", raising=False)
    monkeypatch.setattr(_ErrorJudge, "status", 404)
    monkeypatch.setattr(_ErrorJudge, "body", b"")
    client = JudgeClient(error_judge, "m", retries=3, backoff=0.01)
    with pytest.raises(JudgeError, match="HTTP 404"):
        client.complete("s", "u")
    # one attempt, at <url>/chat/completions, and no Authorization header without a key
    assert _ErrorJudge.calls == [{"path": "/chat/completions", "auth": None}]
    with pytest.raises(ValueError, match="http"):
        JudgeClient("127.0.0.1:80", "m")


@pytest.mark.parametrize(
    ("status", "body", "content_type", "expected", "attempts"),
    [
        (404, {"error": {"message": "The model `gpt-x` does not exist", "type": "invalid_request_error"}},
         "application/json", "HTTP 404 Not Found: The model `gpt-x` does not exist", 1),
        (400, {"detail": "max_tokens is too large"}, "application/json", "HTTP 400 Bad Request: max_tokens is too", 1),
        (503, {"error": {"message": "engine overloaded, try later"}}, "application/json",
         "HTTP 503 Service Unavailable: engine overloaded, try later", 3),
        (500, "upstream crashed", "text/plain", "HTTP 500 Internal Server Error: upstream crashed", 3),
    ],
)  # fmt: skip
def test_judge_error_shows_the_servers_status_and_message(error_judge, monkeypatch, status, body, content_type,
                                                           expected, attempts):  # fmt: skip
    raw = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    monkeypatch.setattr(_ErrorJudge, "status", status)
    monkeypatch.setattr(_ErrorJudge, "body", raw)
    monkeypatch.setattr(_ErrorJudge, "content_type", content_type)
    client = JudgeClient(error_judge + "/v1/chat/completions", "m", api_key="sk-x", retries=2, backoff=0.01)
    with pytest.raises(JudgeError) as err:
        client.complete("s", "u")
    assert expected in str(err.value) and f"(after {attempts} attempt(s))" in str(err.value)
    assert str(err.value).startswith(error_judge + "/v1/chat/completions: ")
    assert len(_ErrorJudge.calls) == attempts  # 4xx at once; 5xx retried (1 + 2)
    assert all(c == {"path": "/v1/chat/completions", "auth": "Bearer sk-x"} for c in _ErrorJudge.calls)


def test_judge_client_without_openai_names_the_extra(monkeypatch):
    from scitune.extras import MissingExtra

    monkeypatch.setitem(sys.modules, "openai", None)  # `import openai` now fails
    with pytest.raises(MissingExtra, match=r"the LLM judge needs openai.*pip install 'scitune\[eval\]'"):
        JudgeClient("http://127.0.0.1:9/v1", "m")


def test_llava_bench_needs_a_judge(tmp_path):
    root, pred = _bench_dir(tmp_path)
    with pytest.raises(ValueError, match="--judge_url"):
        main(["llava-bench", "--data", str(root), "--predictions", str(pred), "--out", str(tmp_path / "o")])
