"""The OpenAI-compatible API against a tiny checkpoint, through the official `openai` client and raw HTTP."""

from __future__ import annotations

import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from serve_testkit import (
    MODEL,
    assert_error_shape,
    client,
    data_url,
    image_message,
    png_bytes,
    raw_get,
    raw_post,
    running_server,
    tiny_model,
)

pytest.importorskip("fastapi", reason="needs the serve extras: pip install -e .[serve]")
openai = pytest.importorskip("openai", reason="needs the serve extras: pip install -e .[serve]")

LIMITS = dict(
    max_image_bytes=300_000, max_image_pixels=512 * 512, max_images=2, max_body_bytes=1_500_000, max_wait_ms=50
)


@pytest.fixture(scope="module")
def image_root(tmp_path_factory):
    base = tmp_path_factory.mktemp("images")
    root = base / "root"
    (root / "sub").mkdir(parents=True)
    (root / "fig.png").write_bytes(png_bytes(color=(20, 200, 20)))
    (root / "sub" / "fig2.png").write_bytes(png_bytes(color=(20, 20, 200)))
    (base / "outside.png").write_bytes(png_bytes(color=(9, 9, 9)))  # a valid image, just not under the root
    os.symlink(base / "outside.png", root / "link_out.png")
    os.symlink("/etc/passwd", root / "passwd")
    return root


@pytest.fixture(scope="module")
def server(image_root):
    with running_server(image_root=str(image_root), **LIMITS) as (base, app):
        yield base, app


@pytest.fixture(scope="module")
def api(server):
    return client(server[0])


def reference(text: str, images=(), max_new_tokens: int = 12) -> str:
    """What offline generation (`Generator`) answers, greedy."""
    from scitune.config.schema import GenerationConfig
    from scitune.infer.generate import Generator, Prompt

    prompt = Prompt.single(text, list(images))
    return Generator(*tiny_model()).generate([prompt], GenerationConfig(max_new_tokens=max_new_tokens))[0]


def ask(api, messages, **kw):
    kw.setdefault("max_tokens", 12)
    kw.setdefault("temperature", 0)
    return api.chat.completions.create(model=MODEL, messages=messages, **kw)


def test_models_health_and_page(server, api):
    base, _ = server
    assert [m.id for m in api.models.list().data] == [MODEL]
    status, body = raw_get(base, "/health")
    assert status == 200 and body["status"] == "ok" and body["model"] == MODEL
    status, page = raw_get(base, "/")
    assert status == 200 and "/static/chat.js" in page
    assert raw_get(base, "/static/chat.js")[0] == 200


def test_plain_completion_equals_offline_generation(api):
    r = ask(api, [{"role": "user", "content": "What type of figure is this?"}])
    assert r.object == "chat.completion" and r.model == MODEL
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content == reference("What type of figure is this?")
    assert r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert 0 < r.usage.completion_tokens <= 12


def test_stream_gives_the_same_text_in_chunks(api):
    messages = [{"role": "user", "content": "Describe the plot."}]
    whole = ask(api, messages, max_tokens=20).choices[0].message.content
    chunks = list(ask(api, messages, max_tokens=20, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    pieces = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    assert "".join(pieces) == whole
    assert sum(1 for p in pieces if p) > 1, "the answer should arrive in several chunks"
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finals) == 1
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_image_as_data_url_and_as_path(api, image_root):
    from scitune.infer.generate import open_image

    expected = reference("What is shown?", [open_image(image_root / "fig.png")])
    by_data = ask(api, image_message(data_url((image_root / "fig.png").read_bytes())))
    by_path = ask(api, image_message("fig.png"))
    by_file_url = ask(api, image_message((image_root / "fig.png").as_uri()))
    assert by_data.choices[0].message.content == expected
    assert by_path.choices[0].message.content == expected
    assert by_file_url.choices[0].message.content == expected
    assert ask(api, image_message("sub/../sub/fig2.png")).usage.prompt_tokens == by_data.usage.prompt_tokens


def test_n_choices_and_sampling(api):
    greedy = ask(api, [{"role": "user", "content": "hello"}], n=2)
    assert [c.index for c in greedy.choices] == [0, 1]
    assert greedy.choices[0].message.content == greedy.choices[1].message.content == reference("hello")
    sampled = ask(api, [{"role": "user", "content": "hello"}], n=2, temperature=1.5, top_p=0.9, max_tokens=16)
    assert len(sampled.choices) == 2 and sampled.usage.completion_tokens > 0


def test_seeded_sampling_repeats_whatever_shares_the_batch(api):
    def seeded(seed: int, n: int = 2):
        r = ask(api, [{"role": "user", "content": "hello"}], n=n, temperature=1.5, max_tokens=16, seed=seed)
        return [c.message.content for c in r.choices]

    first = seeded(7)
    with ThreadPoolExecutor(4) as pool:  # the same request again, now sharing batches with other sampled requests
        again = pool.submit(seeded, 7)
        others = [pool.submit(seeded, s, 1) for s in (1, 2, 3)]
        assert again.result() == first and all(o.result() for o in others)
    assert first[0] != first[1]  # choice i draws with seed + i
    assert seeded(8)[0] == first[1]


def test_stop_and_length(api):
    full = ask(api, [{"role": "user", "content": "hello"}], max_tokens=12).choices[0].message.content
    stop = full[4:7]
    assert stop.strip(), full
    cut = ask(api, [{"role": "user", "content": "hello"}], max_tokens=12, stop=[stop]).choices[0]
    assert cut.finish_reason == "stop" and cut.message.content == full[: full.index(stop)].strip()
    short = ask(api, [{"role": "user", "content": "hello"}], max_tokens=3)
    assert short.choices[0].finish_reason == "length" and short.usage.completion_tokens == 3


def _too_many_images(base):
    msg = image_message(data_url(png_bytes()))
    msg[0]["content"] = msg[0]["content"][:1] * 3 + msg[0]["content"][1:]
    return {"model": MODEL, "messages": msg}


def _chat(messages, **kw):
    return {"model": MODEL, "messages": messages, "max_tokens": 4, **kw}


BAD_REQUESTS = {
    # name: (body or callable, status, code)
    "unknown field": (_chat([{"role": "user", "content": "hi"}], frobnicate=1), 400, "unknown_field"),
    "wrong type": (_chat([{"role": "user", "content": "hi"}], max_tokens="5"), 400, "int_type"),
    "penalty out of range": (_chat([{"role": "user", "content": "hi"}], presence_penalty=2.5), 400, "less_than_equal"),
    "bad role": (_chat([{"role": "robot", "content": "hi"}]), 400, "literal_error"),
    "no messages": (_chat([]), 400, "too_short"),
    "unknown model": ({"model": "gpt-9", "messages": [{"role": "user", "content": "hi"}]}, 404, "model_not_found"),
    "ends with assistant": (_chat([{"role": "assistant", "content": "hi"}]), 400, "invalid_value"),
    "placeholder in text": (_chat([{"role": "user", "content": "look <image>"}]), 400, "invalid_value"),
    "too many tokens": (_chat([{"role": "user", "content": "hi"}], max_tokens=5000), 400, "context_length_exceeded"),
    "n too large": (_chat([{"role": "user", "content": "hi"}], n=50), 400, "invalid_value"),
    "http url": (_chat(image_message("https://example.com/a.png")), 400, "image_url_not_supported"),
    "corrupt image": (_chat(image_message(data_url(png_bytes()[:60]))), 400, "invalid_image"),
    "not an image": (_chat(image_message(data_url(b"hello world, not a png"))), 400, "invalid_image"),
    "bad base64": (_chat(image_message("data:image/png;base64,@@@@")), 400, "invalid_image"),
    "huge pixels": (_chat(image_message(data_url(png_bytes((3000, 3000))))), 400, "image_too_large"),
    "huge bytes": (_chat(image_message(data_url(png_bytes((400, 400), noise=True)))), 413, "image_too_large"),
    "too many images": (_too_many_images, 400, "too_many_images"),
    "dotdot path": (_chat(image_message("../../etc/passwd")), 403, "path_outside_image_root"),
    "absolute path": (_chat(image_message("/etc/passwd")), 403, "path_outside_image_root"),
    "file url outside": (_chat(image_message("file:///etc/passwd")), 403, "path_outside_image_root"),
    "symlink out (image)": (_chat(image_message("link_out.png")), 403, "path_outside_image_root"),
    "symlink out (passwd)": (_chat(image_message("passwd")), 403, "path_outside_image_root"),
    "missing file": (_chat(image_message("nope.png")), 400, "image_not_found"),
}


@pytest.mark.parametrize("name", list(BAD_REQUESTS))
def test_bad_requests_get_4xx_in_openai_shape(server, name):
    base, _ = server
    body, status, code = BAD_REQUESTS[name]
    body = body(base) if callable(body) else body
    got, resp = raw_post(base, "/v1/chat/completions", json.dumps(body).encode())
    err = assert_error_shape(resp)
    assert (got, err["code"]) == (status, code), err


def test_malformed_body_content_type_and_size(server, api):
    base, _ = server
    status, body = raw_post(base, "/v1/chat/completions", b'{"model": "tiny", "messages": [')
    assert status == 400 and assert_error_shape(body)["code"] == "invalid_json"
    status, body = raw_post(base, "/v1/chat/completions", b"hello", {"Content-Type": "text/plain"})
    assert status == 415 and assert_error_shape(body)["code"] == "invalid_content_type"
    big = json.dumps(_chat([{"role": "user", "content": "x" * 1_600_000}])).encode()
    status, body = raw_post(base, "/v1/chat/completions", big)
    assert status == 413 and assert_error_shape(body)["code"] == "request_too_large"
    status, body = raw_get(base, "/v1/nothing")
    assert status == 404 and assert_error_shape(body)["type"] == "not_found_error"
    # the official client turns these into typed errors, and the server keeps serving
    with pytest.raises(openai.BadRequestError) as e:
        ask(api, [{"role": "user", "content": "hi"}], max_tokens=5000)
    assert e.value.code == "context_length_exceeded"
    assert ask(api, [{"role": "user", "content": "still there?"}]).choices[0].message.content is not None
    # defaults that some clients always send are fine
    assert ask(
        api, [{"role": "user", "content": "hi"}], presence_penalty=0, frequency_penalty=0, logprobs=False
    ).choices


def test_api_key():
    with running_server(api_key="s3cret") as (base, _):
        with pytest.raises(openai.AuthenticationError):
            client(base).models.list()
        with pytest.raises(openai.AuthenticationError):
            client(base, api_key="wrong").chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "hi"}]
            )
        good = client(base, api_key="s3cret")
        assert good.models.list().data[0].id == MODEL
        assert ask(good, [{"role": "user", "content": "hi"}], max_tokens=2).usage.completion_tokens > 0
        assert raw_get(base, "/health")[0] == 200


def test_timeout_is_a_408_and_stops_generation():
    with running_server(timeout_s=0.3) as (base, app):
        api = client(base)
        with pytest.raises(openai.APIStatusError) as e:
            ask(api, [{"role": "user", "content": "go on"}], max_tokens=900)
        assert e.value.status_code == 408
        with pytest.raises(openai.APIError, match="timeout"):
            list(ask(api, [{"role": "user", "content": "go on"}], max_tokens=900, stream=True))
        started = time.monotonic()
        assert ask(api, [{"role": "user", "content": "hi"}], max_tokens=2).choices
        # not queued behind 2 x 900 tokens (about 30 s here): the timed-out rows were stopped
        assert time.monotonic() - started < 10
    stats = app.state.batcher.stats
    assert stats.timed_out + stats.cancelled >= 2


def test_concurrent_requests_are_batched(server, api):
    base, app = server
    before = app.state.batcher.stats.as_dict()
    prompts = [f"question number {i}" for i in range(6)]
    with ThreadPoolExecutor(len(prompts)) as pool:
        answers = list(pool.map(lambda p: ask(api, [{"role": "user", "content": p}]), prompts))
    after = raw_get(base, "/health")[1]["batching"]
    assert after["requests"] - before["requests"] == len(prompts)
    assert after["admission"] == "continuous" and after["max_batch_rows"] > 1, after
    steps, rows = after["steps"] - before["steps"], after["row_steps"] - before["row_steps"]
    assert rows == sum(a.usage.completion_tokens - 1 for a in answers)  # the first token of each comes from its prefill
    assert rows / steps > 1, after  # several rows per decode step
    # batching (left padding, rows joining and leaving) does not change what each request gets
    for p, a in zip(prompts, answers):
        assert a.choices[0].message.content == reference(p)


def test_client_leaving_mid_stream_does_not_hurt_others(server):
    import http.client

    base, app = server
    cancelled = app.state.batcher.stats.cancelled
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    body = _chat([{"role": "user", "content": "tell me everything"}], max_tokens=900, stream=True, temperature=0)
    conn.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200 and resp.getheader("content-type").startswith("text/event-stream")
    while b'"content": ""' in (line := resp.readline()) or not line.strip():
        pass  # skip the role chunk (sent before generation starts) and blank separators
    assert line.startswith(b"data: ") and b'"content"' in line  # generated text is streaming
    other: dict = {}
    t = threading.Thread(target=lambda: other.update(r=ask(client(base), [{"role": "user", "content": "hi"}])))
    t.start()
    resp.close()
    conn.close()  # the client goes away mid-stream
    t.join(timeout=60)
    assert other["r"].choices[0].message.content is not None
    for _ in range(100):  # the abandoned row stops at its next token instead of running to 900 tokens
        if app.state.batcher.stats.cancelled > cancelled:
            break
        threading.Event().wait(0.05)
    assert app.state.batcher.stats.cancelled > cancelled
    assert raw_get(base, "/health")[0] == 200


def test_non_loopback_bind_warns(caplog):
    from scitune.serve.app import create_app, is_loopback, make_server
    from scitune.serve.config import ServeConfig

    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4")
    cfg = ServeConfig(checkpoint="x", host="0.0.0.0", port=1)
    with caplog.at_level("WARNING", logger="scitune.serve.app"):
        make_server(create_app(*tiny_model(), cfg), cfg)
    assert "reachable from the network" in caplog.text and "no --api_key" in caplog.text
