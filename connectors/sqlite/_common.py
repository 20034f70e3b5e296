"""What ``sqlite.sink`` and ``sqlite.source`` share: connecting and checks.

Each node runs its sqlite3 calls on a `flowstream.SQLiteWorker` of its own
(its one connection and the one thread that makes and uses it). Here:
`_connect` opens a connection (read-only for sources) with a busy timeout;
`quote` quotes an identifier; and the config checks both nodes run.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path


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
