"""What ``sqlite.sink`` and ``sqlite.source`` share: the worker and connecting.

`_Worker` is a node's one sqlite3 connection and the one thread that makes
and uses it; `_connect` opens a connection (read-only for sources) with a
busy timeout; `quote` quotes an identifier; and the config checks both nodes
run.
"""

from __future__ import annotations

import asyncio
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable

T = TypeVar("T")


def quote(name: str) -> str:
    """Quote an SQL identifier (any text is a safe table or column name)."""
    return '"' + name.replace('"', '""') + '"'


def _check_path(path: str) -> None:
    if not path.strip():
        msg = "path must not be empty"
        raise ValueError(msg)


def _check_busy(busy_timeout_ms: int) -> None:
    if busy_timeout_ms < 0:
        msg = f"busy_timeout_ms must be >= 0, got {busy_timeout_ms}"
        raise ValueError(msg)


class _Worker:
    """One sqlite3 connection and the one thread that makes and uses it."""

    def __init__(self, name: str) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self.conn: sqlite3.Connection | None = None

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` in the connection's thread, in call order."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, fn, *args)

    async def aclose(self) -> None:
        """Close the connection in its thread, then end the thread."""

        def close() -> None:
            if self.conn is not None:
                conn, self.conn = self.conn, None
                conn.close()

        try:
            await self.run(close)
        finally:
            # The thread exits once its queue is done. Not waited for: after an
            # aborted run it may still be finishing a long statement.
            self._pool.shutdown(wait=False)


def _connect(
    path: str, *, busy_timeout_ms: int, read_only: bool = False
) -> sqlite3.Connection:
    if read_only:
        uri = Path(path).absolute().as_uri() + "?mode=ro"
        conn = sqlite3.connect(uri, uri=True, isolation_level=None)
    else:
        conn = sqlite3.connect(path, isolation_level=None)
    try:
        # A node reads or writes its one file: a query may not ATTACH
        # another (on a server, one outside its data directory).
        conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    except BaseException:
        conn.close()
        raise
    return conn
