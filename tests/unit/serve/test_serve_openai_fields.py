"""Chat completions with the OpenAI fields harnesses send: seed, top_k, stop, n and logprobs honoured; fields scitune
cannot honour accepted, ignored and named in the ``X-Scitune-Ignored`` header; malformed values still refused; the
served model's name."""

from __future__ import annotations

import json

import pytest
from serve_testkit import MODEL, assert_error_shape, client, raw_post, raw_request, running_server

pytest.importorskip("fastapi", reason="needs the serve extras: pip install -e .[serve]")
openai = pytest.importorskip("openai", reason="needs the serve extras: pip install -e .[serve]")

HI = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def server():
    with running_server(max_wait_ms=20) as (base, app):
        yield base


@pytest.fixture(scope="module")
def api(server):
    return client(server)


def ask(api, messages=HI, **kw):
    kw.setdefault("max_tokens", 8)
    kw.setdefault("temperature", 0)
    if "top_k" in kw:  # not an OpenAI field: the official client sends it as an extra (as for vLLM)
        kw["extra_body"] = {"top_k": kw.pop("top_k")}
    return api.chat.completions.create(model=MODEL, messages=messages, **kw)


def post(base: str, body: dict, path: str = "/v1/chat/completions") -> tuple[int, dict, dict]:
    status, headers, got = raw_request(
        base, "POST", path, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    return status, headers, got


def test_seed_top_k_and_n(api):
    greedy = ask(api).choices[0].message.content
    assert ask(api, temperature=1.5, top_k=1, seed=3).choices[0].message.content == greedy  # top-k 1 = greedy
    a = ask(api, temperature=1.2, top_k=20, seed=11, n=3)
    b = ask(api, temperature=1.2, top_k=20, seed=11, n=3)
    assert [c.message.content for c in a.choices] == [c.message.content for c in b.choices]
    assert len({c.message.content for c in a.choices}) > 1  # choice i draws with seed + i
    huge = ask(api, temperature=1.0, seed=2**64 - 1, n=2)  # OpenAI's seeds are any int64 or uint64; seed + i wraps
    assert len(huge.choices) == 2


def test_stop_string_or_list_up_to_four(api, server):
    full = ask(api, max_tokens=12).choices[0].message.content
    stop = next(full[i : i + 2] for i in range(2, len(full) - 2) if full[i : i + 2].strip())
    for given in (stop, [stop, "zzz", "yyy", "xxx"]):
        cut = ask(api, max_tokens=12, stop=given).choices[0]
        assert cut.finish_reason == "stop" and cut.message.content == full[: full.index(stop)].strip()
    status, _, body = post(server, {"model": MODEL, "messages": HI, "stop": list("abcde")})
    assert (status, assert_error_shape(body)["code"]) == (400, "invalid_value")


def test_logprobs_whole_and_streamed(api):
    r = ask(api, logprobs=True, top_logprobs=3, max_tokens=6)
    content = r.choices[0].logprobs.content
    assert 0 < len(content) <= r.usage.completion_tokens
    for t in content:
        assert len(t.top_logprobs) == 3 and t.top_logprobs[0].logprob == t.logprob  # greedy: the most likely
        assert t.bytes == list(t.token.encode()) and t.logprob <= 0
    assert ask(api, max_tokens=6).choices[0].logprobs is None  # not asked, not computed
    chunks = list(ask(api, logprobs=True, top_logprobs=3, max_tokens=6, stream=True))
    streamed = [t for c in chunks if c.choices and c.choices[0].logprobs for t in c.choices[0].logprobs.content]
    assert [(t.token, t.logprob) for t in streamed] == [(t.token, t.logprob) for t in content]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == r.choices[0].message.content
    only = ask(api, logprobs=True, max_tokens=3).choices[0].logprobs.content
    assert only and all(t.top_logprobs == [] for t in only)


IGNORED = {
    "logit_bias": {"50": 10},
    "response_format": {"type": "json_object"},
    "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
    "tool_choice": "required",
    "presence_penalty": 0.5,
    "frequency_penalty": -0.3,
    "user": "someone",
    "store": True,
    "metadata": {"run": "1"},
    "service_tier": "flex",
    "modalities": ["text"],
    "reasoning_effort": "low",
    "repetition_penalty": 1.2,
    "min_p": 0.1,
}

DEFAULTS = {  # what clients send by default: accepted and not reported
    "logit_bias": {},
    "response_format": {"type": "text"},
    "tool_choice": "auto",
    "presence_penalty": 0,
    "frequency_penalty": 0.0,
    "parallel_tool_calls": True,
    "stream_options": {"include_usage": False, "include_obfuscation": True},
    "service_tier": "auto",
    "logprobs": False,
    "repetition_penalty": 1.0,
}


def test_fields_scitune_cannot_honour_are_ignored_and_named(server, api):
    body = {"model": MODEL, "messages": HI, "max_tokens": 4, "temperature": 0}
    status, headers, plain = post(server, body)
    assert status == 200 and "x-scitune-ignored" not in headers
    status, headers, got = post(server, {**body, **IGNORED})
    assert status == 200, got
    assert set(headers["x-scitune-ignored"].split(", ")) == set(IGNORED)
    assert got["choices"][0]["message"]["content"] == plain["choices"][0]["message"]["content"]  # nothing changed
    status, headers, _ = post(server, {**body, **DEFAULTS})
    assert status == 200 and "x-scitune-ignored" not in headers
    # streamed answers carry the header too, and the official client is content with it
    raw = api.chat.completions.with_raw_response.create(
        model=MODEL, messages=HI, max_tokens=2, logit_bias={"5": 1}, stream=True
    )
    assert raw.headers["x-scitune-ignored"] == "logit_bias"
    assert list(raw.parse())


MALFORMED = {
    # still refused: wrong types and values out of range, even of fields that are then ignored
    "seed as text": ({"seed": "5"}, "int_type"),
    "seed too large": ({"seed": 2**64}, "less_than_equal"),
    "top_k below -1": ({"top_k": -2}, "greater_than_equal"),
    "top_logprobs 21": ({"logprobs": True, "top_logprobs": 21}, "less_than_equal"),
    "top_logprobs without logprobs": ({"top_logprobs": 2}, "invalid_value"),
    "logit_bias out of range": ({"logit_bias": {"5": 500}}, "less_than_equal"),
    "penalty out of range": ({"presence_penalty": 5}, "less_than_equal"),
    "response_format unknown": ({"response_format": {"type": "xml"}}, "literal_error"),
    "tools not a list": ({"tools": "f"}, "list_type"),
    "typo": ({"temprature": 0.5}, "unknown_field"),
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_values_are_still_refused(server, name):
    extra, code = MALFORMED[name]
    status, body = raw_post(
        server, "/v1/chat/completions", json.dumps({"model": MODEL, "messages": HI, **extra}).encode()
    )
    assert (status, assert_error_shape(body)["code"]) == (400, code), body


def test_served_model_name_and_its_default():
    from scitune.serve.config import ServeConfig, default_model_name

    assert default_model_name("runs/tiny-align/final") == "tiny-align"
    assert default_model_name("runs/tiny-align/final/") == "tiny-align"
    assert default_model_name("runs/tiny-align/checkpoints/step-000100") == "tiny-align-step-000100"
    assert default_model_name("/ckpts/my-model") == "my-model"
    assert ServeConfig(checkpoint="runs/x/final", model_name="old").served_name() == "old"  # the old flag still works
    with pytest.raises(ValueError, match="--served_model_name"):
        ServeConfig(checkpoint="x", model_name="a", served_model_name="b")
    with running_server(served_model_name="sci-7b") as (base, _):
        api = client(base)
        assert [m.id for m in api.models.list().data] == ["sci-7b"]
        r = api.chat.completions.create(model="sci-7b", messages=HI, max_tokens=2)
        assert r.model == "sci-7b"
        with pytest.raises(openai.NotFoundError) as e:
            api.chat.completions.create(model=MODEL, messages=HI, max_tokens=2)
        assert e.value.code == "model_not_found" and "sci-7b" in e.value.message
        with pytest.raises(openai.NotFoundError):
            api.completions.create(model="final", prompt="hi", max_tokens=2)
