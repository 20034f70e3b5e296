"""The ``sqlite.source`` node: the rows of a query, polled again with ``follow``.

Its config, `_Reader` (runs the query and fetches rows in the connection's
thread), `SqliteSource` and the `sqlite_source` spec.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import msgspec

from flowstream import FilePath, SQLiteWorker, node

from ._common import _check_busy, _check_path, _connect

if TYPE_CHECKING:
    import sqlite3
    from collections.abc import AsyncIterator

    from flowstream import NodeContext

__all__ = ["SqliteSource", "SqliteSourceConfig", "sqlite_source"]

MIN_ROWID = -(2**63)
"""``:last_rowid`` before the first row: below every rowid."""


class SqliteSourceConfig(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True
):
    """Config of ``sqlite.source``.

    Attributes:
        path: The database file (opened read-only; it must exist).
        query: A ``SELECT``; ``:last_rowid`` in it is bound to the highest
            rowid emitted so far (for incremental reads).
        params: Other named parameters of the query.
        rowid_column: The result column holding each row's rowid (select it,
            e.g. ``SELECT rowid AS rowid, * FROM t``).
        follow: Run the query again every ``poll_interval_ms`` for rows past
            ``:last_rowid`` (stream mode); needs ``:last_rowid``.
        poll_interval_ms: How often a followed query runs.
        batch_size: Rows fetched (and emitted) at a time.
        busy_timeout_ms: How long to wait on a lock.
    """

    path: FilePath
    query: str
    params: dict[str, Any] = msgspec.field(default_factory=dict)
    rowid_column: str = "rowid"
    follow: bool = False
    poll_interval_ms: float = 1000.0
    batch_size: int = 1024
    busy_timeout_ms: int = 5000

    def __post_init__(self) -> None:
        _check_path(self.path)
        _check_busy(self.busy_timeout_ms)
        if not self.query.strip():
            msg = "query must not be empty"
            raise ValueError(msg)
        if self.follow and not self.incremental:
            msg = (
                "follow needs ':last_rowid' in the query, e.g. SELECT rowid AS "
                "rowid, * FROM t WHERE rowid > :last_rowid ORDER BY rowid"
            )
            raise ValueError(msg)
        if "last_rowid" in self.params:
            msg = "params must not set 'last_rowid': the source binds it"
            raise ValueError(msg)
        if not self.poll_interval_ms > 0:
            msg = f"poll_interval_ms must be > 0, got {self.poll_interval_ms}"
            raise ValueError(msg)
        if self.batch_size < 1:
            msg = f"batch_size must be >= 1, got {self.batch_size}"
            raise ValueError(msg)

    @property
    def incremental(self) -> bool:
        """The query reads on from ``:last_rowid``."""
        return ":last_rowid" in self.query


class _Reader:
    """Runs a query and fetches its rows; used only in the connection's thread."""

    def __init__(self, conn: sqlite3.Connection, config: SqliteSourceConfig) -> None:
        self.conn = conn
        self.config = config
        self._cursor: sqlite3.Cursor | None = None
        self._names: list[str] = []

    def start(self, last_rowid: int) -> None:
        params = dict(self.config.params)
        if self.config.incremental:
            params["last_rowid"] = last_rowid
        self.close_cursor()
        self._cursor = self.conn.execute(self.config.query, params)
        self._names = [d[0] for d in self._cursor.description or ()]

    def fetch(self) -> list[dict[str, Any]]:
        assert self._cursor is not None
        names = self._names
        rows = self._cursor.fetchmany(self.config.batch_size)
        if not rows:
            self.close_cursor()
        return [dict(zip(names, row, strict=True)) for row in rows]

    def close_cursor(self) -> None:
        if self._cursor is not None:
            cursor, self._cursor = self._cursor, None
            cursor.close()


class SqliteSource:
    """Emit the rows of an SQLite query as dicts; with ``follow``, new rows too.

    The query runs once (DAG mode), or with ``follow`` again every
    ``poll_interval_ms`` for the rows past the highest rowid emitted so far
    (``:last_rowid``): a stream-mode tail of a table that grows. Rows are
    fetched ``batch_size`` at a time, each batch emitted as it is read.
    Columns stored as JSON text come back as text.

    State: ``last_rowid`` (the highest value of ``rowid_column`` emitted),
    ``rows`` emitted. A run whose state holds ``last_rowid`` (restored from a
    checkpoint) reads on from there. Delivery: at-least-once once the state
    is checkpointed.

    Example:
        ``{id: new_orders, type: sqlite.source, config: {path: shop.db,
        follow: true, query: "SELECT rowid AS rowid, * FROM orders WHERE
        rowid > :last_rowid ORDER BY rowid"}}`` emits every order, then each
        new one as it is committed.
    """

    def __init__(self, config: SqliteSourceConfig) -> None:
        self.config = config
        self._worker: SQLiteWorker | None = None
        self._reader: _Reader | None = None

    async def __aenter__(self) -> SqliteSource:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def initialize(self, ctx: NodeContext) -> None:
        """Open the database read-only in the node's thread."""
        cfg = self.config
        self._worker = SQLiteWorker(f"flowstream-sqlite-{ctx.node_id}")

        def open_reader() -> _Reader:
            conn = _connect(
                cfg.path, busy_timeout_ms=cfg.busy_timeout_ms, read_only=True
            )
            return _Reader(conn, cfg)

        self._reader = await self._worker.run(open_reader)
        self._worker.conn = self._reader.conn
        if "rows" not in ctx.state:
            ctx.state["rows"] = 0

    async def execute(self, *, ctx: NodeContext) -> AsyncIterator[list[dict[str, Any]]]:
        """Emit the query's rows batch by batch; with ``follow``, poll again."""
        cfg = self.config
        worker, reader = self._worker, self._reader
        assert worker is not None, "initialize was not called"
        assert reader is not None
        column = cfg.rowid_column
        while True:
            await worker.run(reader.start, ctx.state.get("last_rowid", MIN_ROWID))
            while rows := await worker.run(reader.fetch):
                if column in rows[0]:
                    last = max(row[column] for row in rows)
                    ctx.state["last_rowid"] = max(
                        last, ctx.state.get("last_rowid", MIN_ROWID)
                    )
                elif cfg.incremental:
                    msg = (
                        f"the query uses :last_rowid but its rows have no "
                        f"{column!r} column; select it, e.g. SELECT rowid AS "
                        f"{column}, * FROM t WHERE rowid > :last_rowid"
                    )
                    raise ValueError(msg)
                ctx.state["rows"] += len(rows)
                yield rows
            if not cfg.follow:
                return
            await asyncio.sleep(cfg.poll_interval_ms / 1000.0)

    async def shutdown(self) -> None:
        """Close the cursor and the connection."""
        await self.aclose()

    async def aclose(self) -> None:
        """Close the cursor, the connection and its thread; idempotent."""
        if self._worker is not None:
            worker, self._worker = self._worker, None
            self._reader = None
            await worker.aclose()


sqlite_source = node("sqlite.source", config=SqliteSourceConfig, batched=True)(
    SqliteSource
)
