"""Helpers for the serve tests: a tiny checkpoint, a server in a thread on a free loopback port, raw HTTP calls."""

from __future__ import annotations

import atexit
import base64
import functools
import http.client
import io
import json
import shutil
import socket
import struct
import tempfile
import threading
import time
import zlib
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from PIL import Image

MODEL = "tiny"


@functools.cache
def tiny_checkpoint() -> Path:
    """A tiny random VLM written as a real checkpoint (once per test process)."""
    from scitune.loader import save_checkpoint, tiny_vlm

    root = Path(tempfile.mkdtemp(prefix="scitune-serve-"))
    atexit.register(shutil.rmtree, root, True)
    return save_checkpoint(*tiny_vlm(seed=0), root / MODEL)


@functools.cache
def tiny_model():
    """The tiny checkpoint's model and processor loaded back through `scitune.loader.load` (shared by the servers
    of one process)."""
    from scitune.loader import load

    return load(tiny_checkpoint())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_server(**overrides):
    """Serve the tiny model on 127.0.0.1 in a thread; yields ``(base_url, app)``."""

    from scitune.serve.app import create_app, make_server
    from scitune.serve.config import ServeConfig

    cfg = replace(ServeConfig(checkpoint=str(tiny_checkpoint()), log_level="warning"), **overrides)
    cfg.port = free_port()
    app = create_app(*tiny_model(), cfg)
    server = make_server(app, cfg)
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("test server did not start")
            time.sleep(0.02)
        yield f"http://127.0.0.1:{cfg.port}", app
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def address(base: str) -> tuple[str, int]:
    """``("127.0.0.1", port)`` of a ``http://127.0.0.1:port`` base URL."""
    host, port = base.removeprefix("http://").split(":")
    return host, int(port)


def raw_request(
    base: str, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None, timeout=30
) -> tuple[int, dict[str, str], dict | str]:
    """One request on a fresh connection, headers as given (a ``Host`` here replaces the automatic one).

    Returns (status, response headers with lower-case names, JSON body parsed or text).
    """
    conn = http.client.HTTPConnection(*address(base), timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        text = resp.read().decode()
        got = {k.lower(): v for k, v in resp.getheaders()}
        return (
            resp.status,
            got,
            json.loads(text) if got.get("content-type", "").startswith("application/json") else text,
        )
    finally:
        conn.close()


def chat_body(text: str = "hi", **kw) -> bytes:
    """A short greedy chat request for the tiny model."""
    return json.dumps({"model": MODEL, "messages": [{"role": "user", "content": text}], "max_tokens": 2, **kw}).encode()


def png_header(width: int, height: int) -> bytes:
    """A PNG claiming ``width`` x ``height`` with a few bytes of pixel data: it opens, but cannot decode."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))


def client(base: str, api_key: str = "unused", **kw):
    from openai import OpenAI

    return OpenAI(base_url=base + "/v1", api_key=api_key, max_retries=0, timeout=kw.pop("timeout", 30), **kw)


def png_bytes(size: tuple[int, int] = (40, 40), color=(200, 30, 30), noise: bool = False) -> bytes:
    if noise:
        import numpy as np

        arr = np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        im = Image.fromarray(arr)
    else:
        im = Image.new("RGB", size, color)
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


def image_message(url: str, text: str = "What is shown?") -> list[dict]:
    return [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": text}]}
    ]


def raw_post(base: str, path: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, dict]:
    """POST ``body`` as is (no client-side checks); returns (status, parsed JSON body)."""
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json", **(headers or {})})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"{}")
    finally:
        conn.close()


def raw_get(base: str, path: str) -> tuple[int, dict | str]:
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        text = resp.read().decode()
        ctype = resp.getheader("content-type", "")
        return resp.status, json.loads(text) if ctype.startswith("application/json") else text
    finally:
        conn.close()


def assert_error_shape(body: dict) -> dict:
    """The body is OpenAI's error shape; returns the inner error."""
    assert set(body) == {"error"}, body
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"}, err
    assert isinstance(err["message"], str) and err["message"]
    return err
