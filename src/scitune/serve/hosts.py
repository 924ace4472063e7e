"""The Host-header check against DNS rebinding: `HostPolicy` (which names are allowed) and `HostCheckMiddleware`.

A web page on another site can make a browser send requests to 127.0.0.1 under the attacker's own host name; such a
request carries that name in its Host header, which a server on loopback can refuse.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from scitune.serve.schema import ApiError

log = logging.getLogger(__name__)

LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")


def host_name(value: str) -> str:
    """The host of a Host header (or of an allowed-hosts entry): lower case, port and IPv6 brackets removed.

    ``"[::1]:8000"`` -> ``"::1"``, ``"LocalHost.:8000"`` -> ``"localhost"``, ``"0:0::1"`` -> ``"::1"``.
    """
    v = value.strip().lower()
    if v.startswith("["):  # [v6] or [v6]:port
        end = v.find("]")
        v = v[1:end] if end > 0 else v
    elif v.count(":") == 1:  # name:port or v4:port (a bare IPv6 address has several colons)
        v = v.partition(":")[0]
    v = v.rstrip(".")
    try:
        return ipaddress.ip_address(v).compressed  # one spelling per address
    except ValueError:
        return v


def is_wildcard(host: str) -> bool:
    """True for bind addresses that listen on every interface (0.0.0.0, ::, or empty)."""
    if host.strip() in ("", "*"):
        return True
    try:
        return ipaddress.ip_address(host_name(host)).is_unspecified
    except ValueError:
        return False


class HostPolicy:
    """Which Host headers are accepted.

    Args:
        allowed: host names ('*' = any; '*.example.org' = any subdomain of example.org); a port is ignored.
    """

    def __init__(self, allowed: Iterable[str]):
        names = [a.strip().lower() for a in allowed]
        self.any = "*" in names
        self.suffixes = tuple(n[1:].rstrip(".") for n in names if n.startswith("*."))  # ".example.org"
        self.names = frozenset(host_name(n) for n in names if not n.startswith("*"))

    @classmethod
    def for_server(cls, bind_host: str, allowed_hosts: list[str]) -> HostPolicy:
        """``allowed_hosts``, or by default the bound host and the loopback names (anything for a wildcard bind)."""
        if allowed_hosts:
            return cls(allowed_hosts)
        if is_wildcard(bind_host):
            log.warning(
                "--host %s listens on every interface and --allowed_hosts is not set: any Host header is accepted "
                "(no DNS-rebinding check); set --allowed_hosts to the names clients use",
                bind_host or "''",
            )
            return cls(["*"])
        return cls([bind_host, *LOCAL_NAMES])

    def allows(self, host_header: str | None) -> bool:
        """True if a request with this Host header may be served (no header: not a browser, so allowed)."""
        if self.any or host_header is None:
            return True
        name = host_name(host_header)
        return name in self.names or name.endswith(self.suffixes)


class HostCheckMiddleware:
    """Refuses HTTP requests (400 ``invalid_host``, OpenAI's error shape) whose Host header the policy rejects.

    Args:
        app: the ASGI app to protect (every route, the page and /health included).
        policy: the accepted hosts.
    """

    def __init__(self, app: ASGIApp, policy: HostPolicy):
        self.app, self.policy = app, policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            host = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"host"), None)
            if not self.policy.allows(host):
                if scope["type"] == "websocket":
                    await send({"type": "websocket.close", "code": 1008})
                    return
                err = ApiError(
                    400,
                    f"Host {host!r} is not allowed on this server (start it with --allowed_hosts to add it)",
                    "invalid_host",
                    "Host",
                )
                await JSONResponse(err.body(), status_code=400)(scope, receive, send)
                return
        await self.app(scope, receive, send)
