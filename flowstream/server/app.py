"""`create_app`: the Litestar application, its lifespan and its OpenAPI document.

The lifespan owns the server's resources in order: the SQLite store, then the
`RunManager`'s task group, in which every run executes. Leaving it stops the
runs (drain, then cancel after the drain timeout), records them, and closes
the store; nothing outlives it, and no task is started outside it.
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from litestar import Litestar, Router
from litestar.datastructures import State
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme

from .. import __version__
from ..engine import default_registry
from .auth import auth_guard, load_token
from .config import ServerConfig
from .context import ServerContext
from .datadir import DataDir
from .hosts import HostCheck
from .metrics import Metrics
from .openapi import DocumentPlugin
from .problems import exception_handlers, schema_not_found
from .routes import describe_node_types, route_handlers
from .runs import RunManager
from .store import Store
from .ws import run_events

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

__all__ = ["create_app"]

logger = logging.getLogger("flowstream.server")


def create_app(config: ServerConfig | None = None, **overrides: Any) -> Litestar:
    """Return the flowstream server as an ASGI application.

    Args:
        config: The server's settings; the defaults if None.
        **overrides: Fields of `ServerConfig` to change (``db=...``).

    Returns:
        The application. Its lifespan opens the store and the runs' task
        group; serve it with any ASGI server (``flowstream serve`` uses
        uvicorn), or enter ``app.lifespan()`` to drive it in-process.

    Raises:
        OSError: The token file cannot be read or written.
        ValueError: A setting is out of range, or the token is empty.
    """
    if config is None:
        config = ServerConfig(**overrides)
    elif overrides:
        config = replace(config, **overrides)
    token, generated = load_token(config)
    if generated:
        logger.warning("generated an API token; it is in %s", config.token_path)
    registry = config.registry if config.registry is not None else default_registry()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        DataDir.of(config).create()
        store = Store(config.db)
        try:
            runs = RunManager(config, store, registry, metrics)
            ctx = ServerContext(
                config=config,
                token=token,
                store=store,
                registry=registry,
                metrics=metrics,
                runs=runs,
                node_types=describe_node_types(registry, config),
            )
            app.state.flowstream = ctx
            async with runs.running():
                yield
        finally:
            store.close()

    openapi = OpenAPIConfig(
        title="flowstream",
        version=__version__,
        description=(
            "The flowstream server: store workflows, run them, watch their "
            "events and metrics. Mutating endpoints need "
            "'Authorization: Bearer <token>'; every endpoint does when the "
            "server listens beyond loopback."
        ),
        render_plugins=[DocumentPlugin()],
        openapi_router=Router(
            "/schema",
            route_handlers=[],
            include_in_schema=False,
            dto=None,
            return_dto=None,
            after_request=schema_not_found,
        ),
        components=Components(
            security_schemes={
                "bearer": SecurityScheme(type="http", scheme="bearer"),
            }
        ),
        security=None if config.loopback else [{"bearer": []}],
    )
    return Litestar(
        route_handlers=[*route_handlers(), run_events],
        lifespan=[lifespan],
        guards=[auth_guard],
        middleware=[HostCheck(config).middleware],
        exception_handlers=exception_handlers(),
        openapi_config=openapi,
        request_max_body_size=config.max_body_bytes,
        state=State({}),
        debug=False,
        # The command line configures logging (flowstream.server.logs).
        logging_config=None,
    )
