"""flowserver: the HTTP and WebSocket API, the web UI, metrics and traces.

``flowstream serve`` runs it; in Python, `create_app` returns the ASGI app::

    from flowstream.server import ServerConfig, create_app

    app = create_app(ServerConfig(db="flowstream.db", token="s3cret"))

Modules, one concept each:

    config    ServerConfig: where the database is, limits, what is allowed
    app       create_app: the Litestar application and its lifespan
    routes    the REST endpoints under /api, /metrics and the UI's page
    ws        WS /api/runs/{run_id}/events: a run's events, live
    runs      RunManager: runs in the server's task group, stop and cancel
    store     SQLite persistence of workflows and run records
    policy    what an untrusted workflow may use (callables, node types)
    auth      the bearer token: loading, generating, checking
    problems  RFC 9457 problem documents for every error
    schemas   the msgspec structs of request and response bodies
    metrics   Prometheus metrics fed by events and run statistics
    tracing   OpenTelemetry spans from events (a no-op when not configured)
    logs      stdlib logging: a JSON formatter, run and node ids on records

The server sits at the top of the layers: it may import core, runtime, nodes
and routed; nothing but the command line imports it. Importing this package
imports no web framework (`create_app` does), so the command line stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .config import ServerConfig as ServerConfig

if TYPE_CHECKING:
    from litestar import Litestar

__all__ = ["ServerConfig", "create_app"]


def create_app(config: ServerConfig | None = None, **kwargs: Any) -> Litestar:
    """Return the ASGI application; see `flowstream.server.app.create_app`."""
    from .app import create_app as create

    return create(config, **kwargs)
