"""Request bodies: `read_body` (a size limit and a deadline) and `BodyDrainMiddleware` (what an early answer leaves).

Neither a slow body nor one the server refuses without reading may hold a connection for longer than
``--body_timeout_s``.
"""

from __future__ import annotations

import asyncio
import math

from starlette.requests import ClientDisconnect, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from scitune.serve.schema import ApiError


async def read_body(request: Request, limit: int, timeout_s: float = math.inf) -> bytes:
    """The body, refused with a 413 as soon as it passes ``limit`` bytes (announced or actual), or with a 408 if it
    has not all arrived within ``timeout_s`` seconds."""
    announced = request.headers.get("content-length", "")
    too_big = ApiError(413, f"request body is larger than the limit of {limit} bytes", "request_too_large")
    if announced.isdigit() and int(announced) > limit:
        raise too_big

    async def collect() -> bytes:
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_big
            chunks.append(chunk)
        return b"".join(chunks)

    try:
        return await asyncio.wait_for(collect(), None if math.isinf(timeout_s) else timeout_s)
    except asyncio.TimeoutError:
        msg = f"the request body did not arrive within {timeout_s:g} s (--body_timeout_s)"
        raise ApiError(408, msg, "body_timeout") from None
    except ClientDisconnect:  # the client left mid-body: nobody reads the answer, and it is no server error
        raise ApiError(499, "the client closed the connection before sending the whole body", "client_closed") from None


class BodyDrainMiddleware:
    """Before a response that starts while the request body is still arriving (a refusal: 413, 415, 401, a bad Host,
    ...), reads and drops the rest of the body, if the whole body is at most ``max_bytes`` and arrives within
    ``timeout_s`` of the request's start; otherwise the response says ``Connection: close`` and ends the connection.

    Draining lets a client that sends its whole body before reading see the answer: closing a socket with unread data
    resets it, which can destroy the response. Without the bound, the server would drop the rest of a body at the
    client's pace, with no request head to wait for and so no header timeout.

    Args:
        app: the ASGI app.
        max_bytes: the largest body (announced or received) that is drained.
        timeout_s: the request's body deadline (``--body_timeout_s``), counted from when the request began.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, timeout_s: float):
        self.app, self.max_bytes, self.timeout_s = app, max_bytes, timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        length = headers.get(b"content-length", b"").strip()
        unread = b"transfer-encoding" in headers or length not in (b"", b"0")
        received = 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s

        async def receive_tracked() -> Message:
            nonlocal unread, received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                unread = unread and message.get("more_body", False)
            return message

        async def drained() -> bool:
            if b"100-continue" in headers.get(b"expect", b"").lower():
                return False  # the client waits for a go-ahead before sending the body: do not ask for it
            if length.isdigit() and int(length) > self.max_bytes:
                return False
            while unread:
                left = deadline - loop.time()
                if left <= 0 or received > self.max_bytes:
                    return False
                try:
                    message = await asyncio.wait_for(receive_tracked(), left)
                except asyncio.TimeoutError:
                    return False
                if message["type"] == "http.disconnect":
                    return False
            return True

        async def send_after_body(message: Message) -> None:
            if message["type"] == "http.response.start" and unread and not await drained():
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"connection"]
                message = {**message, "headers": [*kept, (b"connection", b"close")]}
            await send(message)

        await self.app(scope, receive_tracked, send_after_body)
