"""What ``ws.source`` and ``ws.sink`` share: the endpoint and its connections.

`_Endpoint` is the config both nodes extend (server or client, address,
encoding, timeouts), with its `Reconnect` policy (shared by every connector:
`connectors._reconnect`); the helpers bind a server and
publish its address, close it, build a client's connect options, wait out a
backoff and name a peer.
"""

from __future__ import annotations

import asyncio
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Literal

import msgspec
from websockets.asyncio.server import serve

from flowstream import ListenHost, OutboundUrl
from flowstream.errors import ConnectError

from .._reconnect import Reconnect
from .._records import Encoding

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

    from websockets.asyncio.connection import Connection
    from websockets.asyncio.server import Server, ServerConnection
    from websockets.http11 import Request, Response

    from flowstream import NodeContext


Mode = Literal["server", "client"]
Data = str | bytes


class _Endpoint(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Where a WebSocket connector listens or connects (shared config)."""

    mode: Mode
    """``server``: listen on host/port(/path); ``client``: connect to ``url``."""
    url: OutboundUrl | None = None
    host: ListenHost = "127.0.0.1"
    port: int = 0
    """0 binds a free port; the ``listening`` event tells which."""
    path: str | None = None
    """Accept only this request path (others get 404); None accepts any."""
    encoding: Encoding = "json"
    """``json``, ``msgpack``, ``raw``, or ``auto``: a text frame is JSON, a
    binary frame JSON if it starts with ``{``/``[``, else MessagePack."""
    compression: bool = False
    """Offer/accept permessage-deflate (costs CPU; off by default)."""
    ping_interval: float | None = 20.0
    """Seconds between keepalive pings; a peer silent for as long is dropped."""
    open_timeout: float = 10.0
    close_timeout: float = 3.0
    """Seconds a closing handshake may take (a server source's peers have as
    long to deliver what they sent before a stop; a server sink's subscribers
    to take their queues at end of input)."""
    reconnect: Reconnect = msgspec.field(default_factory=Reconnect)

    def __post_init__(self) -> None:
        if self.mode == "client":
            if not self.url or not self.url.startswith(("ws://", "wss://")):
                msg = (
                    f"mode 'client' needs a url 'ws://host:port/path', got {self.url!r}"
                )
                raise ValueError(msg)
        elif self.url is not None:
            msg = "url is for mode 'client'; a server takes host, port and path"
            raise ValueError(msg)
        if not 0 <= self.port <= 65535:
            msg = f"port must be between 0 and 65535, got {self.port}"
            raise ValueError(msg)
        if self.path is not None and not self.path.startswith("/"):
            msg = f"path must start with '/', got {self.path!r}"
            raise ValueError(msg)
        for name in ("open_timeout", "close_timeout", "ping_interval"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                msg = f"{name} must be > 0 seconds, got {value}"
                raise ValueError(msg)


def _at_least_one(**values: int) -> None:
    for name, value in values.items():
        if value < 1:
            msg = f"{name} must be >= 1, got {value}"
            raise ValueError(msg)


def _peer(ws: Connection) -> str:
    address = ws.remote_address
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}"
    return str(address)


def _only_path(path: str) -> Callable[[ServerConnection, Request], Response | None]:
    def check(connection: ServerConnection, request: Request) -> Response | None:
        if request.path.partition("?")[0] == path:
            return None
        return connection.respond(
            HTTPStatus.NOT_FOUND, f"no endpoint here; use {path}\n"
        )

    return check


async def _listen(
    config: _Endpoint,
    handler: Callable[[ServerConnection], Coroutine[Any, Any, None]],
    ctx: NodeContext,
    **limits: Any,
) -> Server:
    """Bind a server now and publish its address (``listening`` event and log)."""
    server = await serve(
        handler,
        config.host,
        config.port,
        process_request=_only_path(config.path) if config.path else None,
        compression="deflate" if config.compression else None,
        ping_interval=config.ping_interval,
        ping_timeout=config.ping_interval,
        open_timeout=config.open_timeout,
        close_timeout=config.close_timeout,
        **limits,
    )
    host, port = server.sockets[0].getsockname()[:2]
    netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    url = f"ws://{netloc}{config.path or '/'}"
    addresses = [list(s.getsockname()[:2]) for s in server.sockets]
    data = {"host": host, "port": port, "url": url, "addresses": addresses}
    ctx.event("listening", data)
    ctx.logger.info("listening on %s", url, extra={"host": host, "port": port})
    return server


async def _close_server(server: Server, seconds: float) -> None:
    server.close()
    try:
        async with asyncio.timeout(seconds):
            await server.wait_closed()
    except TimeoutError:
        server.logger.warning("connections still open %.1f s after close", seconds)


def _client_options(config: _Endpoint) -> dict[str, Any]:
    return {
        "compression": "deflate" if config.compression else None,
        "ping_interval": config.ping_interval,
        "ping_timeout": config.ping_interval,
        "open_timeout": config.open_timeout,
        "close_timeout": config.close_timeout,
    }


def _connect_failed(url: str, failures: int, exc: BaseException) -> ConnectError:
    msg = f"cannot connect to {url} ({failures} attempts): {exc}"
    return ConnectError(msg)
