"""Connection guards below the app: a deadline for each request head, and a cap on open connections.

`guarded_h11` returns a subclass of uvicorn's h11 protocol to pass as ``uvicorn.Config(http=...)``. It overrides only
``connection_made``, ``data_received``, ``connection_lost`` and ``on_response_complete`` (uvicorn >= 0.27 has them
all) and finds the end of a request head itself, so it leans on as little of uvicorn's internals as possible.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from dataclasses import dataclass, field
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from scitune.serve.schema import ApiError

log = logging.getLogger(__name__)

HEAD_END = re.compile(rb"\n\r?\n")
"""The blank line that ends a request head (h11 accepts bare-LF line ends too, so a lone CRLF+CRLF is not enough)."""


def _refusal() -> bytes:
    body = ApiError(
        503, "the server has too many open connections; try again shortly", "server_overloaded", type="server_error"
    ).body()
    data = json.dumps(body).encode()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
    )
    return head.encode() + data


REFUSAL = _refusal()
"""What a connection over the limit gets when no other connection can make room: a whole 503 response."""


@dataclass
class ConnectionGuard:
    """The open connections of one server, and the ones among them waiting for a request head (oldest first)."""

    max_connections: int
    header_timeout_s: float
    open: set = field(default_factory=set)
    waiting: dict = field(default_factory=dict)
    """Connections waiting for a request head, in the order they started waiting (a dict keeps insertion order)."""
    evicted: int = 0
    """Connections closed to make room for a new one."""
    refused: int = 0
    """New connections answered with a 503 because every open one was busy."""
    head_timeouts: int = 0
    """Connections closed for not sending a request head within the header timeout."""

    def as_dict(self) -> dict[str, int]:
        return {
            "open": len(self.open),
            "waiting_for_head": len(self.waiting),
            "evicted": self.evicted,
            "refused": self.refused,
            "head_timeouts": self.head_timeouts,
        }


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a request-head deadline and a connection cap (see `guarded_h11`)."""

    guard: ConnectionGuard

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._link = transport
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_due = 0.0  # loop time by which the awaited head must be complete
        self._tail = b""  # the last bytes seen while waiting for a head: its end may straddle two reads
        self._admitted = self._make_room()
        if self._admitted:
            self.guard.open.add(self)
            self._await_head()
        elif transport.can_write_eof():
            # send the 503 and a FIN, and keep discarding what the client sends for a moment: closing a socket
            # with unread data resets it, and the reset can destroy the 503 before the client reads it
            transport.write(REFUSAL)
            transport.write_eof()
            asyncio.get_running_loop().call_later(1.0, transport.close)
        else:
            transport.write(REFUSAL)
            transport.close()

    def data_received(self, data: bytes) -> None:
        if not self._admitted:
            return
        head = False
        if self._head_timer is not None:
            seen = self._tail + data
            head = HEAD_END.search(seen) is not None
            if head:
                self._head_done()
            else:
                self._tail = seen[-2:]
        super().data_received(data)
        if head and self._running() is False and not self._link.is_closing():
            # the blank line started no request: it was in the rest of a body that uvicorn drops after an early
            # answer. Still waiting, with the same deadline (so blank lines cannot extend it)
            self._await_head(self._head_due)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # the next request has the same deadline for its head, unless uvicorn already started one that was sent
        # along with the last (pipelining), which never passes through data_received
        if not self._link.is_closing() and not self._running():
            self._await_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._head_done()
        self.guard.open.discard(self)
        super().connection_lost(exc)

    def _make_room(self) -> bool:
        """True if this connection may stay: under the limit, or after closing the oldest idle one."""
        guard = self.guard
        while len(guard.open) >= guard.max_connections:
            oldest = next(iter(guard.waiting), None)
            if oldest is None:
                guard.refused += 1
                if guard.refused % 100 == 1:  # the first, then every 100th: a flood must not flood the log too
                    log.warning("refused connection(s): all %d open connections are busy", len(guard.open))
                return False
            oldest._head_done()
            if oldest._running():  # it is serving a request after all: not a candidate
                continue
            guard.evicted += 1
            guard.open.discard(oldest)
            oldest._link.close()
        return True

    def _await_head(self, due: float | None = None) -> None:
        """Wait for a request head until loop time ``due`` (default: the header timeout from now)."""
        self._head_done()
        self._tail = b""
        loop = asyncio.get_running_loop()
        self._head_due = loop.time() + self.guard.header_timeout_s if due is None else due
        self.guard.waiting[self] = None
        self._head_timer = loop.call_at(self._head_due, self._head_late)

    def _head_done(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        self.guard.waiting.pop(self, None)

    def _head_late(self) -> None:
        self._head_timer = None
        self._head_done()
        if self._running() or self._link.is_closing():
            return
        self.guard.head_timeouts += 1
        self._link.close()

    def _running(self) -> bool | None:
        """Whether uvicorn runs a request on this connection; None if this uvicorn does not say.

        Read defensively from uvicorn's own ``cycle`` attribute (the current request-response cycle). Without it the
        guard trusts the blank line alone: pipelined requests and bodies drained after an early answer are then
        judged less well, and everything else works the same.
        """
        if not hasattr(self, "cycle"):
            return None
        cycle: Any = self.cycle
        return cycle is not None and not getattr(cycle, "response_complete", True)


def guarded_h11(max_connections: int, header_timeout_s: float) -> type[GuardedH11Protocol]:
    """A protocol class for one server: at most ``max_connections`` open, heads due within ``header_timeout_s``.

    At the limit a new connection closes the connection that has waited longest for its request head (idle
    keep-alive or slowloris); when every connection is busy with a request, the new one gets a 503 and is closed.
    The class's ``guard`` holds the counts.
    """
    guard = ConnectionGuard(max_connections, header_timeout_s)
    return type("GuardedH11Protocol", (GuardedH11Protocol,), {"guard": guard})
