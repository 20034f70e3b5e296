"""``flowstream serve``: run the server with uvicorn until SIGINT/SIGTERM.

The first signal shuts down gracefully: uvicorn stops accepting, the lifespan
stops every run (drain, then cancel after the drain timeout) and records it.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from dataclasses import replace
from typing import TYPE_CHECKING, TextIO

import uvicorn

from ..core.cel import set_default_max_cost
from .app import create_app
from .auth import load_token
from .logs import configure_logging
from .store import Store

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from .config import ServerConfig

__all__ = ["serve"]

logger = logging.getLogger("flowstream.server")


class _Server(uvicorn.Server):
    # uvicorn re-raises the signal that stopped it once it has shut down, so
    # the process dies of it; after a graceful shutdown we exit 0 instead, as
    # `flowstream run` does after a drain.
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            yield
            captured = getattr(self, "_captured_signals", None)
            if isinstance(captured, list):
                captured.clear()


def _check_database(path: str | Path) -> None:
    # Opened once here so that a bad file is a message, not a failed startup.
    if str(path) == ":memory:":
        return
    try:
        Store(path).close()
    except sqlite3.DatabaseError as exc:
        msg = f"--db {path}: not a usable flowstream database ({exc})"
        raise ValueError(msg) from None


def serve(config: ServerConfig, *, port: int, log_format: str, out: TextIO) -> None:
    """Run the server in this thread until it is told to stop.

    A token generated now is printed once on ``out``; afterwards it is only
    in the token file.

    Raises:
        OSError: The token file cannot be written.
        ValueError: A setting is out of range, the token is empty, or the
            database is not a SQLite file (checked before serving).
    """
    configure_logging(log_format)
    set_default_max_cost(config.max_cel_cost)  # the runtime budget of every expression
    token, generated = load_token(config)
    config = replace(config, token=token)
    _check_database(config.db)
    app = create_app(config)
    host = f"[{config.host}]" if ":" in config.host else config.host
    url = f"http://{host}:{port}/"
    print(
        f"flowstream serve: {url} (database {config.db}, "
        f"data directory {config.data_path})",
        file=out,
    )
    if generated:
        print(
            f"API token (printed only this once; kept in {config.token_path}, "
            f"mode 0600):\n  {token}\nOpen the UI with it: {url}#token={token}",
            file=out,
        )
    elif not config.loopback:
        print(f"every endpoint needs the token (in {config.token_path})", file=out)
    out.flush()
    server = _Server(
        uvicorn.Config(
            app,
            host=config.host,
            port=port,
            log_config=None,  # our handlers, text or JSON
            access_log=False,
            lifespan="on",
            # Not uvloop: runs' sockets are checked by an audit hook that
            # sees asyncio's own (`flowstream.runtime.netpolicy`).
            loop="asyncio",
            timeout_graceful_shutdown=int(config.drain_timeout) + 5,
        )
    )
    server.run()
