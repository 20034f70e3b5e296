"""`ServerContext`: what the HTTP and WebSocket handlers of one app share.

The app (`flowstream.server.app`) makes one and keeps it in
``app.state.flowstream``; a handler reaches it with `server(request)`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from litestar.connection import ASGIConnection

    from ..runtime.registry import NodeRegistry
    from .config import ServerConfig
    from .metrics import Metrics
    from .runs import RunManager
    from .schemas import NodeType
    from .store import Store

__all__ = ["ServerContext", "server"]


@dataclass(eq=False)
class ServerContext:
    """What the handlers share: one per app, in ``app.state.flowstream``."""

    config: ServerConfig
    token: str
    store: Store
    registry: NodeRegistry
    metrics: Metrics
    runs: RunManager
    node_types: list[NodeType]


def server(connection: ASGIConnection[Any, Any, Any, Any]) -> ServerContext:
    """The server context of a request or WebSocket."""
    return cast("ServerContext", connection.app.state.flowstream)
