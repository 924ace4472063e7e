"""The judge-based evaluation can point at `scitune serve` (both speak OpenAI's chat-completions protocol)."""

from __future__ import annotations

from serve_testkit import raw_get, running_server

from scitune.llm_client import JudgeClient


def test_judge_client_talks_to_scitune_serve():
    with running_server() as (base, _app):
        status, models = raw_get(base, "/v1/models")
        assert status == 200
        model_id = models["data"][0]["id"]
        judge = JudgeClient(url=base + "/v1", model=model_id, timeout=30, retries=1, max_tokens=16)
        reply = judge.complete("You are a strict judge.", "Rate both answers from 1 to 10.")
    assert isinstance(reply, str)  # a tiny random model answers with some text; the protocol round trip works
