"""The server cannot be stalled: huge text, slow sockets, slow bodies, full queues, foreign hosts, pixel floods.

Every server here runs on 127.0.0.1 in a thread and is driven through real sockets.
"""

from __future__ import annotations

import http.client
import io
import json
import socket
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

import pytest
import torch
from PIL import Image
from serve_testkit import (
    MODEL,
    address,
    assert_error_shape,
    chat_body,
    data_url,
    free_port,
    png_bytes,
    png_header,
    raw_request,
    running_server,
    tiny_model,
)

pytest.importorskip("fastapi", reason="needs the serve extras: pip install -e .[serve]")

from scitune.cli.serve import main  # noqa: E402
from scitune.serve.config import ServeConfig  # noqa: E402

CHAT = "/v1/chat/completions"
JSON = {"Content-Type": "application/json"}
SLOW_HEAD = b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"  # a head that never ends


def wait_until(check: Callable[[], bool], timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(step)
    return True


def is_closed(sock: socket.socket) -> bool:
    """True once the server has closed ``sock`` (end of stream or reset); never blocks."""
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except (BlockingIOError, TimeoutError):  # nothing to read yet (TimeoutError: a socket with a timeout set)
        return False
    except OSError:
        return True


def read_all(sock: socket.socket, timeout: float = 5.0) -> bytes:
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return data


def read_response(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """One whole response (head and Content-Length body) from a connection that stays open."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data and (chunk := sock.recv(65536)):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(next((ln.split(b":")[1] for ln in head.lower().split(b"\r\n") if ln.startswith(b"content-length")), 0))
    while len(body) < length and (chunk := sock.recv(65536)):
        body += chunk
    return head + b"\r\n\r\n" + body


def post_chat(base: str, body: bytes | None = None, **headers: str) -> tuple[int, dict[str, str], Any]:
    """POST a chat request (a short one by default); returns (status, response headers, parsed body)."""
    return raw_request(base, "POST", CHAT, body or chat_body(), {**JSON, **headers})


def test_huge_text_is_refused_before_tokenizing_and_stalls_nobody(monkeypatch):
    from scitune.processor import Processor

    tokenized: list[int] = []  # characters of each prompt that reached the tokenizer
    real = Processor.encode
    monkeypatch.setattr(
        Processor, "encode", lambda self, m, *a, **k: tokenized.append(len(m[0].content)) or real(self, m, *a, **k)
    )
    big = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hello " * (10 * 2**20 // 6)}]})
    assert 10 * 2**20 <= len(big) < ServeConfig().max_body_bytes
    with running_server() as (base, _):
        alone = []
        for _ in range(3):
            started = time.monotonic()
            assert post_chat(base)[0] == 200
            alone.append(time.monotonic() - started)
        sent, result = threading.Event(), {}

        def send_big() -> None:
            conn = http.client.HTTPConnection(*address(base), timeout=60)
            conn.request("POST", CHAT, body=big.encode(), headers=JSON)
            sent.set()  # the server has the body: it is parsing and checking it now
            resp = conn.getresponse()
            result.update(status=resp.status, body=json.loads(resp.read()))
            conn.close()

        thread = threading.Thread(target=send_big)
        thread.start()
        assert sent.wait(30)
        started = time.monotonic()
        status = post_chat(base)[0]
        latency = time.monotonic() - started
        thread.join(60)
    assert status == 200 and latency < min(alone) + 1.0, (latency, alone)
    assert result["status"] == 400
    err = assert_error_shape(result["body"])
    assert (err["code"], err["param"]) == ("context_length_exceeded", "messages")
    assert max(tokenized) < 100, "the huge text must be refused before it is tokenized"


def test_text_limit_is_context_times_longest_token_or_the_flag():
    from scitune.serve.prepare import RequestPreparer
    from scitune.serve.schema import ApiError, ChatCompletionRequest

    model, processor = tiny_model()
    longest = max(len(t) for t in processor.tokenizer.get_vocab())
    preparer = RequestPreparer(model, processor, ServeConfig(checkpoint="x"), MODEL)
    assert preparer.max_text_chars == model.context_length * longest
    preparer = RequestPreparer(model, processor, ServeConfig(checkpoint="x", max_text_chars=50), MODEL)

    def request(*texts: str) -> ChatCompletionRequest:
        content = [{"type": "text", "text": t} for t in texts]
        return ChatCompletionRequest.model_validate(
            {"model": MODEL, "messages": [{"role": "user", "content": content}]}
        )

    assert preparer.prepare(request("a" * 30, "b" * 20)).prompt_tokens > 0  # 50 characters in all: allowed
    with pytest.raises(ApiError) as e:
        preparer.prepare(request("a" * 30, "b" * 21))
    assert (e.value.status, e.value.code, e.value.param) == (400, "context_length_exceeded", "messages")


def test_each_thread_tokenizes_with_its_own_copy():
    from scitune.serve.prepare import ThreadCopies

    source = tiny_model().processor.tokenizer
    tokenizers = ThreadCopies(source)
    text = "the figure shows a plot of loss against steps " * 200
    expected = [source(text, truncation=True, max_length=40 + i)["input_ids"] for i in range(3)]
    start, got, copies = threading.Barrier(3), {}, {}

    def work(i: int) -> None:
        tok = tokenizers.get()
        start.wait()
        for _ in range(20):  # at once, with different truncation settings: one shared object would clash
            got[i] = tok(text, truncation=True, max_length=40 + i)["input_ids"]
        copies[i] = (tok, tok is tokenizers.get())

    threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert [got[i] for i in range(3)] == expected
    assert all(same for _, same in copies.values())
    assert len({id(tok) for tok, _ in copies.values()} | {id(source)}) == 4


def test_slow_sockets_neither_lock_out_clients_nor_stay_open():
    timeout = 3.0
    with running_server(max_connections=64, header_timeout_s=timeout) as (base, app):
        guard = app.state.connections
        slow = []
        try:
            for _ in range(300):
                sock = socket.create_connection(address(base), timeout=5)
                try:
                    sock.sendall(SLOW_HEAD)
                except OSError:
                    pass  # already closed to make room for a newer one
                sock.setblocking(False)
                slow.append(sock)
            started = time.monotonic()
            status, _, body = post_chat(base)
            took = time.monotonic() - started
            open_meanwhile = sum(not is_closed(s) for s in slow)
            assert status == 200 and body["choices"], body
            assert took < 3.0, took
            assert open_meanwhile >= 32, open_meanwhile  # the newest slow sockets were still open meanwhile
            assert guard.evicted >= 300 - 64
            assert wait_until(lambda: all(is_closed(s) for s in slow), timeout + 5), guard.as_dict()
            assert guard.head_timeouts >= open_meanwhile
            assert wait_until(lambda: guard.as_dict()["open"] == 0, 5), guard.as_dict()
            assert post_chat(base)[0] == 200
        finally:
            for sock in slow:
                sock.close()


def test_connection_over_the_limit_gets_a_503_when_all_are_busy():
    head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    with running_server(max_connections=2) as (base, app):
        guard = app.state.connections
        busy = [socket.create_connection(address(base), timeout=5) for _ in range(2)]
        try:
            for sock in busy:  # whole heads, bodies still to come: busy, not idle
                sock.sendall(head + b"Content-Length: 100\r\n\r\n{")
            assert wait_until(lambda: guard.as_dict()["open"] == 2 and not guard.waiting, 5), guard.as_dict()
            with socket.create_connection(address(base), timeout=5) as third:
                answer = read_all(third)
            assert answer.startswith(b"HTTP/1.1 503 ") and b"\r\nRetry-After: 1\r\n" in answer, answer
            err = assert_error_shape(json.loads(answer.partition(b"\r\n\r\n")[2]))
            assert err["code"] == "server_overloaded" and guard.refused == 1
        finally:
            for sock in busy:
                sock.close()
        assert wait_until(lambda: guard.as_dict()["open"] == 0, 5), guard.as_dict()
        assert post_chat(base)[0] == 200


def test_body_slower_than_the_timeout_gets_a_408_and_others_are_served():
    with running_server(body_timeout_s=1.0) as (base, _):
        sock = socket.create_connection(address(base), timeout=5)
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n")
        sock.sendall(b'Content-Length: 400\r\n\r\n{"model": ')
        sock.settimeout(0.2)
        started, answer, others = time.monotonic(), b"", []
        with sock:
            while time.monotonic() - started < 6:
                try:
                    sock.sendall(b" ")  # one byte every 0.2 s: 400 bytes would take 80 s
                    chunk = sock.recv(65536)
                except TimeoutError:
                    if not others:
                        others.append(post_chat(base)[0])  # served while the trickle goes on
                    continue
                except OSError:
                    break  # closed by the server
                answer += chunk
                if not chunk or b"\r\n\r\n" in answer:
                    break
        took = time.monotonic() - started
    assert others == [200]
    assert 0.9 < took < 5, took
    if answer:  # the 408 (unless the close overtook it)
        assert answer.startswith(b"HTTP/1.1 408 "), answer
        assert b"connection: close" in answer.lower()


def test_refusal_before_the_body_waits_for_it_or_closes_the_connection():
    """A 415 comes after the body is drained (the connection stays usable), or with a close when the body is late."""
    head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/plain\r\n"
    with running_server(body_timeout_s=1.0) as (base, _):
        with socket.create_connection(address(base), timeout=5) as sock:
            sock.sendall(head + b"Content-Length: 100000\r\n\r\n" + b"x" * 100_000)
            answer = read_response(sock)
            assert answer.startswith(b"HTTP/1.1 415 ") and b"invalid_content_type" in answer, answer
            assert b"connection: close" not in answer.lower()
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")  # the same connection serves on
            assert read_response(sock).startswith(b"HTTP/1.1 200 ")
        started = time.monotonic()
        with socket.create_connection(address(base), timeout=5) as sock:
            sock.sendall(head + b"Content-Length: 100000\r\n\r\nsome of it")
            answer = read_all(sock)  # returns at the server's close (or after 5 s)
        assert answer.startswith(b"HTTP/1.1 415 ") and b"connection: close" in answer.lower(), answer
        assert 0.9 < time.monotonic() - started < 4


def test_blank_lines_in_a_dropped_body_do_not_pass_for_a_request_head():
    """Below any app: uvicorn drops the rest of a body answered early; blank lines in it keep no connection open."""
    import uvicorn

    from scitune.serve.connections import guarded_h11

    async def early(scope, receive, send):  # answers at once, reads nothing
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
            await send({"type": "http.response.body", "body": b"ok"})

    protocol = guarded_h11(8, header_timeout_s=1.0)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(early, port=port, log_level="warning", http=protocol, lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        assert wait_until(lambda: server.started, 20)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n\r\n")
            assert read_response(sock).startswith(b"HTTP/1.1 200 ")
            started = time.monotonic()
            while time.monotonic() - started < 4:
                try:
                    sock.sendall(b"x\r\n\r\n")  # body bytes that look like the end of a head
                except OSError:
                    break
                time.sleep(0.1)
            took = time.monotonic() - started
            assert is_closed(sock) or read_all(sock, timeout=2) == b""
        assert took < 3, took  # closed at the head deadline, 1 s after the answer
        assert protocol.guard.head_timeouts == 1
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def test_foreign_host_header_is_refused():
    with running_server() as (base, _):
        port = address(base)[1]
        for method, path in (("GET", "/health"), ("GET", "/"), ("GET", "/v1/models"), ("POST", CHAT)):
            body = chat_body() if method == "POST" else None
            status, _, got = raw_request(base, method, path, body, {**JSON, "Host": f"evil.example:{port}"})
            err = assert_error_shape(got)
            assert (status, err["code"]) == (400, "invalid_host") and "evil.example" in err["message"]
        for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", "LOCALHOST"):
            assert raw_request(base, "GET", "/health", headers={"Host": host})[0] == 200, host
        assert post_chat(base, Host=f"localhost:{port}")[0] == 200
    with running_server(allowed_hosts=["*"]) as (base, _):
        assert post_chat(base, Host="evil.example")[0] == 200
    with running_server(allowed_hosts=["*.example.org"]) as (base, _):
        assert raw_request(base, "GET", "/health", headers={"Host": "api.example.org:80"})[0] == 200
        assert raw_request(base, "GET", "/health", headers={"Host": "127.0.0.1"})[0] == 400


def test_host_policy(caplog):
    from scitune.serve.hosts import HostPolicy, host_name

    assert host_name("[::1]:8000") == "::1" and host_name("0:0::1") == "::1"
    assert host_name("LocalHost.:80") == "localhost" and host_name("10.0.0.1:80") == "10.0.0.1"
    local = HostPolicy.for_server("127.0.0.1", [])
    assert local.allows("127.0.0.1:1") and local.allows("[0::1]") and local.allows(None)
    assert not local.allows("127.0.0.1.evil.example") and not local.allows("evil.example:80")
    named = HostPolicy.for_server("0.0.0.0", ["models.lan"])
    assert named.allows("models.lan:8000") and not named.allows("localhost")
    with caplog.at_level("WARNING", logger="scitune.serve.hosts"):
        assert HostPolicy.for_server("::", []).allows("anything.example")
    assert "any Host header is accepted" in caplog.text


def test_full_queue_gets_a_503_with_retry_after():
    with running_server(max_queue=1, max_batch_size=1) as (base, app):
        batcher, release, statuses = app.state.batcher, threading.Event(), []
        engine, step = batcher.engine, batcher.engine.step
        engine.step = lambda: (step(), release.wait(30))[0]  # hold the generation thread after each step
        waiting = [threading.Thread(target=lambda: statuses.append(post_chat(base)[0])) for _ in range(2)]
        try:
            waiting[0].start()
            assert wait_until(lambda: engine.stats.prefills == 1, 10)  # admitted and generating (held)
            waiting[1].start()
            assert wait_until(lambda: batcher.queued == 1, 10)  # queued behind it: the queue is full
            status, headers, body = post_chat(base)
        finally:
            release.set()
            for t in waiting:
                t.join(30)
        err = assert_error_shape(body)
        assert status == 503 and headers.get("retry-after") == "1", headers
        assert (err["code"], err["type"]) == ("server_overloaded", "server_error")
        assert statuses == [200, 200]
        assert post_chat(base)[0] == 200


def test_request_pixels_are_counted_before_decoding():
    huge = data_url(png_header(2100, 2100))  # 4.4 Mpx each (under --max_image_pixels); four are 17.6 Mpx

    def images(n: int) -> bytes:
        content = [{"type": "image_url", "image_url": {"url": huge}}] * n + [{"type": "text", "text": "?"}]
        return json.dumps(
            {"model": MODEL, "messages": [{"role": "user", "content": content}], "max_tokens": 2}
        ).encode()

    with running_server(max_images=4) as (base, _):
        status, _, body = post_chat(base, images(4))
        err = assert_error_shape(body)
        assert (status, err["code"], err["param"]) == (400, "too_many_pixels", "messages"), err
        status, _, body = post_chat(base, images(1))  # within the total: decoded, and only then found truncated
        assert (status, assert_error_shape(body)["code"]) == (400, "invalid_image")


def test_decoded_images_are_dropped_once_the_pixel_tensor_exists(monkeypatch):
    import scitune.serve.prepare as prepare
    from scitune.serve.schema import ChatCompletionRequest

    decoded: list[weakref.ref] = []
    real = prepare.load_rgb
    monkeypatch.setattr(prepare, "load_rgb", lambda im, p=None: decoded.append(weakref.ref(out := real(im, p))) or out)
    pngs = [png_bytes((64, 48)), png_bytes((40, 40), color=(10, 200, 10))]
    parts = [{"type": "image_url", "image_url": {"url": data_url(png)}} for png in pngs]
    req = ChatCompletionRequest.model_validate(
        {"model": MODEL, "messages": [{"role": "user", "content": [*parts, {"type": "text", "text": "?"}]}]}
    )
    prep = prepare.RequestPreparer(*tiny_model(), ServeConfig(checkpoint="x"), MODEL).prepare(req)
    assert len(decoded) == 2 and all(ref() is None for ref in decoded), "the queued job must not keep PIL images"
    together = tiny_model().processor.images([Image.open(io.BytesIO(png)).convert("RGB") for png in pngs])
    assert torch.equal(prep.job.pixel_values, together["pixel_values"])  # image by image = all at once


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("max_text_chars", -1),
        ("header_timeout_s", 0),
        ("body_timeout_s", 0),
        ("max_connections", 0),
        ("max_queue", 0),
        ("max_request_pixels", 0),
        ("allowed_hosts", ["evil.example/path"]),
    ],
)
def test_new_limits_are_range_checked(flag, value):
    with pytest.raises(ValueError, match=f"--{flag}"):
        ServeConfig(checkpoint="x", **{flag: value})


def test_help_lists_the_limits(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for flag in ("--max_text_chars", "--header_timeout_s", "--body_timeout_s", "--max_connections", "--max_queue"):
        assert flag in out
    assert "--allowed_hosts" in out and "--max_request_pixels" in out


def test_allowed_hosts_parse_from_the_command_line():
    from scitune.cli.common import parser

    p = parser("serve", "")
    p.add_class_arguments(ServeConfig)
    assert p.parse_args(["--allowed_hosts", "[models.lan, 10.0.0.5]"])["allowed_hosts"] == ["models.lan", "10.0.0.5"]
    assert p.parse_args(["--allowed_hosts+", "*"])["allowed_hosts"] == ["*"]
    assert p.parse_args([])["allowed_hosts"] == []
