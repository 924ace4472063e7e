"""``POST /v1/completions``: raw-text and token prompts, several prompts with ``n`` choices each, ``echo`` with the
prompt's log-probabilities (how lm-evaluation-harness computes loglikelihoods), the legacy logprobs shape, streaming,
and refusals."""

from __future__ import annotations

import json

import pytest
import torch
from serve_testkit import MODEL, assert_error_shape, client, raw_post, running_server, tiny_model

pytest.importorskip("fastapi", reason="needs the serve extras: pip install -e .[serve]")
openai = pytest.importorskip("openai", reason="needs the serve extras: pip install -e .[serve]")


@pytest.fixture(scope="module")
def server():
    with running_server(max_wait_ms=20, max_prompts=4) as (base, app):
        yield base


@pytest.fixture(scope="module")
def api(server):
    return client(server)


def complete(base: str, **body) -> dict:
    status, got = raw_post(base, "/v1/completions", json.dumps({"model": MODEL, **body}).encode())
    assert status == 200, got
    return got


def encode(text: str) -> list[int]:
    return list(tiny_model()[1].tokenizer(text).input_ids)


def raw_reference(ids: list[int], max_new_tokens: int) -> str:
    """What the engine generates greedily for ``ids`` as raw text (no chat template)."""
    from scitune.infer.engine import GenerationEngine, GenerationRequest

    r = GenerationRequest(ids, max_new_tokens=max_new_tokens, chat=False)
    return GenerationEngine(*tiny_model()).run([r])[0].text


def log_softmax(ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return tiny_model()[0].llm(input_ids=torch.tensor([ids])).logits[0].float().log_softmax(-1)


def test_text_prompt_is_raw_text_and_official_client_works(api):
    r = api.completions.create(model=MODEL, prompt="The figure shows", max_tokens=6, temperature=0)
    assert r.object == "text_completion" and r.model == MODEL
    assert r.choices[0].text == raw_reference(encode("The figure shows"), 6)
    assert r.usage.prompt_tokens == len(encode("The figure shows")) and r.usage.completion_tokens == 6
    default = api.completions.create(model=MODEL, prompt="The figure shows", temperature=0)
    assert default.usage.completion_tokens == 16  # OpenAI's default max_tokens


def test_several_prompts_with_n_choices_each(server):
    prompts = ["a bar chart of", encode("the plot shows"), "a table"]
    got = complete(server, prompt=prompts, n=2, max_tokens=5, temperature=1.3, seed=9)
    assert [c["index"] for c in got["choices"]] == list(range(6))
    again = complete(server, prompt=prompts, n=2, max_tokens=5, temperature=1.3, seed=9)
    assert [c["text"] for c in got["choices"]] == [c["text"] for c in again["choices"]]
    alone = complete(server, prompt=prompts[1], n=2, max_tokens=5, temperature=1.3, seed=9)
    assert [c["text"] for c in alone["choices"]] == [c["text"] for c in got["choices"][2:4]]  # not its place
    greedy = complete(server, prompt=prompts, max_tokens=5, temperature=0)
    assert greedy["choices"][1]["text"] == raw_reference(encode("the plot shows"), 5)
    assert got["usage"]["prompt_tokens"] == sum(len(encode(p)) if isinstance(p, str) else len(p) for p in prompts)


def test_echo_scores_the_prompt_without_generating(server):
    ids = encode("a scatter plot of two variables")
    got = complete(server, prompt=ids, max_tokens=0, echo=True, logprobs=2)["choices"][0]
    lp, ref = got["logprobs"], log_softmax(ids)
    assert got["text"] == "a scatter plot of two variables" and got["finish_reason"] == "length"
    assert len(lp["tokens"]) == len(ids) and "".join(lp["tokens"]) == got["text"]
    assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None  # nothing predicts the first token
    assert lp["token_logprobs"][1:] == pytest.approx([ref[k - 1, ids[k]].item() for k in range(1, len(ids))], abs=1e-4)
    assert all(len(top) in (2, 3) for top in lp["top_logprobs"][1:])  # the 2 most likely, and the token itself
    assert lp["text_offset"] == [sum(len(t) for t in lp["tokens"][:k]) for k in range(len(ids))]


def test_logprobs_without_echo_and_streaming(server):
    whole = complete(server, prompt="x y z", max_tokens=6, temperature=0, logprobs=1)["choices"][0]
    assert len(whole["logprobs"]["tokens"]) == 6 and whole["logprobs"]["text_offset"][0] == 0
    for echo in (False, True):
        body = {"model": MODEL, "prompt": "x y z", "max_tokens": 6, "temperature": 0, "logprobs": 1, "echo": echo}
        status, events = _stream(server, body)
        assert status == 200 and events[-1] == "[DONE]"
        chunks = [json.loads(e)["choices"][0] for e in events[:-1]]
        text = "".join(c["text"] for c in chunks)
        tokens = [t for c in chunks if c["logprobs"] for t in c["logprobs"]["tokens"]]
        assert text == ("x y z" if echo else "") + whole["text"] and chunks[-1]["finish_reason"] == "length"
        assert tokens[len(tokens) - 6 :] == whole["logprobs"]["tokens"]
        assert len(tokens) == 6 + (len(encode("x y z")) if echo else 0)


def _stream(base: str, body: dict) -> tuple[int, list[str]]:
    from serve_testkit import raw_request

    status, _, text = raw_request(
        base,
        "POST",
        "/v1/completions",
        json.dumps({**body, "stream": True}).encode(),
        {"Content-Type": "application/json"},
    )
    return status, [line.removeprefix("data: ") for line in text.split("\n\n") if line.startswith("data: ")]


def test_stop_strings_and_text_kept_as_generated(server):
    full = complete(server, prompt="the plot", max_tokens=12, temperature=0)["choices"][0]["text"]
    stop = next(full[i : i + 2] for i in range(2, len(full) - 2) if full[i : i + 2].strip())
    cut = complete(server, prompt="the plot", max_tokens=12, temperature=0, stop=[stop] + [f"zz{i}" for i in range(8)])
    assert cut["choices"][0] == {**cut["choices"][0], "text": full[: full.index(stop)], "finish_reason": "stop"}


BAD = {
    "empty prompt list": ({"prompt": []}, 400, "invalid_value"),
    "too many prompts": ({"prompt": ["a"] * 5}, 400, "invalid_value"),
    "token outside the vocabulary": ({"prompt": [1, 99999]}, 400, "invalid_value"),
    "negative token": ({"prompt": [1, -3]}, 400, "invalid_prompt"),
    "empty token list": ({"prompt": [[1], []]}, 400, "invalid_prompt"),
    "image placeholder": ({"prompt": "look <image>"}, 400, "invalid_value"),
    "ids mixed with text": ({"prompt": [1, "a"]}, 400, "invalid_prompt"),
    "not a prompt": ({"prompt": {"text": "a"}}, 400, "invalid_prompt"),
    "negative max_tokens": ({"prompt": "a", "max_tokens": -1}, 400, "greater_than_equal"),
    "logprobs too many": ({"prompt": "a", "logprobs": 21}, 400, "less_than_equal"),
    "over the context": ({"prompt": "a", "max_tokens": 5000}, 400, "context_length_exceeded"),
    "too many stops": ({"prompt": "a", "stop": [str(i) for i in range(17)]}, 400, "invalid_value"),
    "unknown field": ({"prompt": "a", "best_off": 2}, 400, "unknown_field"),
    "unknown model": ({"prompt": "a", "model": "gpt-3.5-turbo-instruct"}, 404, "model_not_found"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_completion_requests(server, name):
    extra, status, code = BAD[name]
    got, body = raw_post(server, "/v1/completions", json.dumps({"model": MODEL, **extra}).encode())
    assert (got, assert_error_shape(body)["code"]) == (status, code), body


def test_image_token_id_is_refused(server):
    image_id = tiny_model()[1].image_token_id
    got, body = raw_post(server, "/v1/completions", json.dumps({"model": MODEL, "prompt": [1, image_id]}).encode())
    assert got == 400 and "image token" in assert_error_shape(body)["message"]
