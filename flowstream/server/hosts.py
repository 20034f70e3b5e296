"""The ``Host`` check: a loopback server answers only to its own names.

On loopback, reads need no token. A web page cannot read another origin's
answers, but with DNS rebinding its own name comes to resolve to 127.0.0.1
and its requests reach this server carrying ``Host: evil.example``. So a
server that listens on loopback answers only requests addressed to it:
``127.0.0.1`` (any 127/8 address), ``localhost``, ``[::1]``, the configured
host and the operator's ``allow_hosts``, on any port; anything else gets
421 Misdirected Request (a WebSocket handshake is refused with 403). A
server that listens beyond loopback needs the token everywhere, which a
rebinding page does not have; it checks ``Host`` only against
``allow_hosts``, when the operator gives some.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

import msgspec
from litestar.enums import ScopeType

from .problems import PROBLEM_JSON

if TYPE_CHECKING:
    from litestar.types import (
        ASGIApp,
        HTTPResponseBodyEvent,
        HTTPResponseStartEvent,
        Receive,
        Scope,
        Send,
        WebSocketCloseEvent,
    )

    from .config import ServerConfig

__all__ = ["HostCheck", "host_name"]


def host_name(header: str) -> str:
    """The name of a ``Host`` header: no port, no brackets, lower case."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    if header.count(":") == 1:
        header = header.partition(":")[0]
    return header.rstrip(".")


class HostCheck:
    """Which ``Host`` names a server answers to.

    Args:
        config: The server's settings (``host``, ``allow_hosts``).
    """

    def __init__(self, config: ServerConfig) -> None:
        self._extra = {host_name(h) for h in config.allow_hosts}
        self._any = not config.loopback and not self._extra
        self._names = {"localhost", "::1", host_name(config.host), *self._extra}

    def allows(self, header: str | None) -> bool:
        """Whether a request with this ``Host`` header is answered."""
        if self._any:
            return True
        if header is None:
            return False  # HTTP/1.1 requires it; only forged requests lack it
        name = host_name(header)
        if name in self._names:
            return True
        try:
            return ipaddress.ip_address(name).is_loopback
        except ValueError:
            return False

    def middleware(self, app: ASGIApp) -> ASGIApp:
        """Wrap an ASGI app so that misdirected requests never reach it."""

        async def check(scope: Scope, receive: Receive, send: Send) -> None:
            kind = scope["type"]
            if kind not in (ScopeType.HTTP, ScopeType.WEBSOCKET):
                await app(scope, receive, send)
                return
            header = None
            for key, value in scope["headers"]:
                if key == b"host":
                    header = value.decode("latin-1")
                    break
            if self.allows(header):
                await app(scope, receive, send)
                return
            if kind == ScopeType.WEBSOCKET:
                close: WebSocketCloseEvent = {
                    "type": "websocket.close",
                    "code": 1008,
                    "reason": "misdirected request",
                }
                await send(close)
                return
            await _misdirected(send, header)

        return check


async def _misdirected(send: Send, header: str | None) -> None:
    body = msgspec.json.encode(
        {
            "type": "about:blank",
            "title": "Misdirected request",
            "status": 421,
            "detail": (
                f"this server does not answer to Host {header!r:.100}; use "
                "127.0.0.1 or localhost, or start it with --allow-host NAME"
            ),
        }
    )
    start: HTTPResponseStartEvent = {
        "type": "http.response.start",
        "status": 421,
        "headers": [
            (b"content-type", PROBLEM_JSON.encode()),
            (b"content-length", str(len(body)).encode()),
        ],
    }
    await send(start)
    end: HTTPResponseBodyEvent = {
        "type": "http.response.body",
        "body": body,
        "more_body": False,
    }
    await send(end)
