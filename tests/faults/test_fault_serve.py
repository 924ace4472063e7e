"""Malformed requests to ``scitune serve`` over a real socket: each gets a 4xx in OpenAI's error shape, and the
server goes on serving (the next well-formed request succeeds)."""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit" / "serve"))
from serve_testkit import MODEL, chat_body, png_bytes, png_header, raw_request, running_server  # noqa: E402

pytestmark = pytest.mark.faults

JSON = {"Content-Type": "application/json"}


def _chat(**kw) -> bytes:
    return json.dumps({"model": MODEL, "max_tokens": 2, **kw}).encode()


def _image(data: bytes, mime: str = "image/png") -> list[dict]:
    url = f"data:{mime};base64," + base64.b64encode(data).decode()
    return [
        {"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {"url": url}}]}
    ]


REQUESTS = {  # name -> (body, headers, expected status)
    "malformed-json": (b'{"model": "tiny", "messages": [', JSON, 400),
    "not-an-object": (b"[1, 2, 3]", JSON, 400),
    "no-messages": (_chat(), JSON, 400),
    "empty-messages": (_chat(messages=[]), JSON, 400),
    "wrong-type": (_chat(messages="hello"), JSON, 400),
    "unknown-field": (_chat(messages=[{"role": "user", "content": "hi"}], foo=1), JSON, 400),
    "unknown-model": (
        json.dumps({"model": "gpt-9", "messages": [{"role": "user", "content": "hi"}]}).encode(),
        JSON,
        404,
    ),
    "n-too-large": (_chat(messages=[{"role": "user", "content": "hi"}], n=1000), JSON, 400),
    "negative-max-tokens": (_chat(messages=[{"role": "user", "content": "hi"}], max_tokens=-5), JSON, 400),
    "last-not-user": (_chat(messages=[{"role": "assistant", "content": "hi"}]), JSON, 400),
    "image-token-in-text": (_chat(messages=[{"role": "user", "content": "<image> hi"}]), JSON, 400),
    "http-image-url": (
        _chat(
            messages=[
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://example.org/x.png"}}]}
            ]
        ),
        JSON,
        400,
    ),
    "local-path-outside": (
        _chat(
            messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}]}]
        ),
        JSON,
        403,
    ),
    "not-base64": (
        _chat(
            messages=_image(b"")[:0]
            + [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@@"}}]}]
        ),
        JSON,
        400,
    ),
    "truncated-png": (_chat(messages=_image(png_bytes()[:60])), JSON, 400),
    "text-as-image": (_chat(messages=_image(b"hello world")), JSON, 400),
    "huge-image-header": (_chat(messages=_image(png_header(30000, 30000))), JSON, 400),
    "huge-text": (chat_body("word " * 400_000), JSON, 400),
    "wrong-content-type": (chat_body(), {"Content-Type": "text/plain"}, 415),
    "foreign-host": (chat_body(), {**JSON, "Host": "evil.example"}, 400),
}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("served-images")  # local paths allowed under it, and only there
    with running_server(image_root=str(root)) as (base, _):
        yield base


@pytest.mark.parametrize("name", sorted(REQUESTS))
def test_malformed_request_gets_a_4xx_and_the_server_goes_on(name, server):
    body, headers, status = REQUESTS[name]
    got, _, reply = raw_request(server, "POST", "/v1/chat/completions", body, headers)
    assert got == status, (name, got, reply)
    assert isinstance(reply, dict) and set(reply["error"]) >= {"message", "type", "code"}, reply
    ok, _, answer = raw_request(server, "POST", "/v1/chat/completions", chat_body(), JSON)
    assert ok == 200 and answer["choices"][0]["message"]["content"] is not None
