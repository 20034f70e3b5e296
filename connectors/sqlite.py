"""SQLite connectors: ``sqlite.sink`` (insert or upsert) and ``sqlite.source``.

Threads: every node owns one connection and one dedicated worker thread
(`_Worker`). The connection is made in that thread and every sqlite3 call
runs there, so the event loop never blocks on SQLite and sqlite3's
``check_same_thread`` guard stays on. Calls are queued in order on that one
thread, so there is nothing else to serialise.

Transactions: ``sqlite.sink`` writes each batch in one ``BEGIN IMMEDIATE``
... ``COMMIT``. A record the database refuses (a constraint) is isolated with
a savepoint and dead-lettered; the rest of the batch commits. Any other
database error rolls the whole batch back and fails the node, so its retry
policy can replay the batch.

Connections use WAL journaling (readers never block the writer) and
``synchronous=NORMAL`` by default: a commit survives a crash of the process
but may be lost on power failure; ``synchronous: full`` makes every commit
durable.

Checkpoints: a batch is committed before the sink takes the next one, so
when a checkpoint barrier reaches it everything before the barrier is in the
table. A sink without a ``key`` then notes the table's highest rowid in its
state, and a restart deletes the rows above it (written by an epoch that
never committed, and about to be replayed) before writing anything.
"""

from __future__ import annotations

import asyncio
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import msgspec

from flowstream import node

from ._records import record_type

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from flowstream import NodeContext

__all__ = [
    "SqliteSink",
    "SqliteSinkConfig",
    "SqliteSource",
    "SqliteSourceConfig",
    "sqlite_sink",
    "sqlite_source",
]

T = TypeVar("T")

MIN_ROWID = -(2**63)
"""``:last_rowid`` before the first row: below every rowid."""

SQL_TYPES = {
    "str": "TEXT",
    "int": "INTEGER",
    "float": "REAL",
    "bool": "INTEGER",
    "bytes": "BLOB",
    "any": "",
    "list": "TEXT",
    "dict": "TEXT",
}
"""Column type for each schema type name (lists and dicts are JSON text)."""

_json = msgspec.json.Encoder()


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
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    except BaseException:
        conn.close()
        raise
    return conn


# --- sqlite.sink ------------------------------------------------------------------


class SqliteSinkConfig(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True
):
    """Config of ``sqlite.sink``.

    Attributes:
        path: The database file (created if missing).
        table: The table to write (created on the first record if missing).
        key: A field name, or several: the primary key. Records are then
            upserted (``ON CONFLICT DO UPDATE``): the latest values win.
        schema: Field name -> type name (see `connectors._records`): the
            new table's columns and types, and a check of each record.
        new_fields: A record field the table has no column for:
            ``add_column`` (``ALTER TABLE ADD COLUMN``) or ``dead_letter``.
        synchronous: ``normal`` (durable across process crashes) or
            ``full`` (across power loss too).
        busy_timeout_ms: How long to wait on another writer's lock.
    """

    path: str
    table: str
    key: str | list[str] | None = None
    schema: dict[str, str] | None = None
    new_fields: Literal["add_column", "dead_letter"] = "add_column"
    synchronous: Literal["normal", "full"] = "normal"
    busy_timeout_ms: int = 5000

    def __post_init__(self) -> None:
        _check_path(self.path)
        _check_busy(self.busy_timeout_ms)
        if not self.table.strip():
            msg = "table must not be empty"
            raise ValueError(msg)
        if self.table.lower().startswith("sqlite_"):
            msg = f"table {self.table!r}: names starting with 'sqlite_' are reserved"
            raise ValueError(msg)
        keys = self.key_fields
        if self.key is not None and (
            not keys or any(not k for k in keys) or len(set(keys)) != len(keys)
        ):
            msg = f"key must be a field name or distinct field names, got {self.key!r}"
            raise ValueError(msg)
        if self.schema is not None:
            record_type(self.schema)  # names an unknown type name
            missing = [k for k in keys if k not in self.schema]
            if missing:
                msg = f"key field {missing[0]!r} is not in the schema"
                raise ValueError(msg)

    @property
    def key_fields(self) -> tuple[str, ...]:
        """The key as a tuple of field names (empty: no key, plain inserts)."""
        if self.key is None:
            return ()
        return (self.key,) if isinstance(self.key, str) else tuple(self.key)


ROWID_NAMES = ("rowid", "_rowid_", "oid")
"""The names of a table's rowid, unless a column of that name hides one."""

_RECORD_ERRORS = (
    sqlite3.IntegrityError,
    sqlite3.DataError,
    sqlite3.InterfaceError,
    OverflowError,
)
"""Errors that blame one record (a constraint, a value too big), not the database."""


class _Refused(Exception):
    """A record this sink will not write; the message is the reason."""


def _value(value: Any) -> Any:
    """The SQLite form of a value: dicts and lists become JSON text."""
    kind = type(value)
    if value is None or kind is str or kind is float or kind is bytes:
        return value
    if kind is int:
        if not -(2**63) <= value < 2**63:
            msg = f"integer {value} is out of SQLite's 64-bit range"
            raise _Refused(msg)
        return value
    if kind is bool:
        return int(value)
    if kind is dict or kind is list or kind is tuple:
        try:
            return _json.encode(value).decode()
        except (TypeError, msgspec.EncodeError) as exc:
            msg = f"cannot store as JSON text: {exc}"
            raise _Refused(msg) from None
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    msg = f"unsupported value type {kind.__name__}"
    raise _Refused(msg)


def _column_type(value: Any) -> str:
    kind = type(value)
    if kind is bool or kind is int:
        return "INTEGER"
    if kind is float:
        return "REAL"
    if kind is bytes or kind is bytearray or kind is memoryview:
        return "BLOB"
    if value is None:
        return ""
    return "TEXT"


class _TableWriter:
    """Writes batches into one table; used only in the connection's thread."""

    def __init__(self, conn: sqlite3.Connection, config: SqliteSinkConfig) -> None:
        self.conn = conn
        self.config = config
        self.table = quote(config.table)
        self.key = config.key_fields
        self._schema_type: Any = record_type(config.schema) if config.schema else None
        self._statements: dict[tuple[str, ...], str] = {}
        self.columns = self._load_columns()
        if self.columns and self.key:
            self._check_key()

    def _load_columns(self) -> dict[str, str]:
        # SQLite column names are case-insensitive: keyed by lower case.
        rows = self.conn.execute(f"PRAGMA table_info({self.table})").fetchall()
        return {row[1].lower(): row[2] for row in rows}

    def _check_key(self) -> None:
        """An existing table needs a unique index on the key for upserts."""
        missing = [k for k in self.key if k.lower() not in self.columns]
        if missing:
            msg = (
                f"table {self.config.table!r} has no column {missing[0]!r} "
                f"for its key {list(self.key)}"
            )
            raise ValueError(msg)
        if self._has_unique_key():
            return
        index = quote(f"{self.config.table}__key")
        cols = ", ".join(map(quote, self.key))
        try:
            self.conn.execute(
                f"CREATE UNIQUE INDEX IF NOT EXISTS {index} ON {self.table} ({cols})"
            )
        except sqlite3.IntegrityError as exc:
            msg = (
                f"table {self.config.table!r} holds rows with the same key "
                f"{list(self.key)}, so it cannot be upserted by that key: {exc}"
            )
            raise ValueError(msg) from None

    # --- checkpoints (tables written without a key) ----------------------------------

    def _rowid_name(self) -> str:
        """A name that reads the table's rowid (which appends keep increasing).

        Raises:
            ValueError: The table has no rowid (``WITHOUT ROWID``), or columns
                hide all of its names.
        """
        name = next((n for n in ROWID_NAMES if n not in self.columns), None)
        if name is not None:
            try:
                self.conn.execute(f"SELECT {name} FROM {self.table} LIMIT 0")
            except sqlite3.OperationalError:
                name = None  # "no such column": a WITHOUT ROWID table
        if name is None:
            msg = (
                f"table {self.config.table!r} has no rowid to roll back to at a "
                f"checkpoint (a WITHOUT ROWID table, or columns named "
                f"{', '.join(ROWID_NAMES)}); give the sink a key, its primary "
                f"key, so that replayed records are upserted"
            )
            raise ValueError(msg)
        return name

    def check_rowid(self) -> None:
        """Refuse now a table that `last_rowid` could not read."""
        if self.columns:
            self._rowid_name()

    def last_rowid(self) -> int:
        """The table's highest rowid (0 when it is empty or not created yet)."""
        if not self.columns:
            return 0
        name = self._rowid_name()
        row = self.conn.execute(f"SELECT max({name}) FROM {self.table}").fetchone()
        return 0 if row[0] is None else int(row[0])

    def roll_back_to(self, rowid: int) -> int:
        """Delete the rows above ``rowid``, in one transaction.

        Returns:
            How many rows were deleted.
        """
        if not self.columns:
            return 0  # the table was never created: nothing to delete
        name = self._rowid_name()
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            cursor = conn.execute(
                f"DELETE FROM {self.table} WHERE {name} > ?", (rowid,)
            )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return cursor.rowcount

    def _has_unique_key(self) -> bool:
        key = {k.lower() for k in self.key}
        info = self.conn.execute(f"PRAGMA table_info({self.table})").fetchall()
        if {row[1].lower() for row in info if row[5]} == key:
            return True
        indexes = self.conn.execute(f"PRAGMA index_list({self.table})").fetchall()
        for _seq, name, unique, _origin, partial in indexes:
            if unique and not partial:
                cols = self.conn.execute(f"PRAGMA index_info({quote(name)})")
                if {row[2].lower() for row in cols} == key:
                    return True
        return False

    # --- one batch, one transaction -------------------------------------------------

    def write(self, batch: list[Any]) -> tuple[int, list[tuple[Any, str]]]:
        """Write a batch in one transaction.

        Returns:
            How many records were written, and each refused record with the
            reason.

        Raises:
            sqlite3.Error: The database failed (locked, full, read-only); the
                batch was rolled back.
        """
        refused: list[tuple[Any, str]] = []
        rows: list[tuple[tuple[str, ...], list[Any], Any]] = []
        for item in batch:
            try:
                fields, values = self._prepare(item)
            except _Refused as exc:
                refused.append((item, str(exc)))
                continue
            rows.append((fields, values, item))
        if not rows:
            return 0, refused
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            written = self._write_rows(rows, refused)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            # DDL was rolled back too: forget columns and statements.
            self.columns = self._load_columns()
            self._statements.clear()
            raise
        return written, refused

    def _prepare(self, item: Any) -> tuple[tuple[str, ...], list[Any]]:
        if type(item) is not dict:
            msg = f"expected a record (a mapping of fields), got {type(item).__name__}"
            raise _Refused(msg)
        if self._schema_type is not None:
            try:
                msgspec.convert(item, self._schema_type)
            except msgspec.ValidationError as exc:
                msg = f"schema violation: {exc}"
                raise _Refused(msg) from None
        for k in self.key:
            if item.get(k) is None:
                msg = f"key field {k!r} is missing or null"
                raise _Refused(msg)
        fields: list[str] = []
        values: list[Any] = []
        for name, value in item.items():
            if type(name) is not str:
                msg = f"field names must be text, got {name!r}"
                raise _Refused(msg)
            fields.append(name)
            values.append(_value(value))
        if len({f.lower() for f in fields}) != len(fields):
            msg = "field names differ only in case (SQLite columns do not)"
            raise _Refused(msg)
        return tuple(fields), values

    def _write_rows(
        self,
        rows: list[tuple[tuple[str, ...], list[Any], Any]],
        refused: list[tuple[Any, str]],
    ) -> int:
        written = 0
        # Consecutive records with the same fields share one executemany; runs
        # keep the batch's order, so that the latest record of a key wins.
        i = 0
        while i < len(rows):
            fields = rows[i][0]
            j = i
            while j < len(rows) and rows[j][0] == fields:
                j += 1
            run = rows[i:j]
            i = j
            usable = self._columns_for(run, refused)
            if not usable:
                continue
            sql = self._statement(fields)
            self.conn.execute("SAVEPOINT batch_run")
            try:
                self.conn.executemany(sql, [values for _, values, _ in usable])
                self.conn.execute("RELEASE batch_run")
                written += len(usable)
            except _RECORD_ERRORS:
                self.conn.execute("ROLLBACK TO batch_run")
                self.conn.execute("RELEASE batch_run")
                written += self._one_by_one(sql, usable, refused)
        return written

    def _one_by_one(
        self,
        sql: str,
        run: list[tuple[tuple[str, ...], list[Any], Any]],
        refused: list[tuple[Any, str]],
    ) -> int:
        written = 0
        for _, values, item in run:
            self.conn.execute("SAVEPOINT one_record")
            try:
                self.conn.execute(sql, values)
            except _RECORD_ERRORS as exc:
                self.conn.execute("ROLLBACK TO one_record")
                refused.append((item, f"refused by the database: {exc}"))
            else:
                written += 1
            self.conn.execute("RELEASE one_record")
        return written

    def _columns_for(
        self,
        run: list[tuple[tuple[str, ...], list[Any], Any]],
        refused: list[tuple[Any, str]],
    ) -> list[tuple[tuple[str, ...], list[Any], Any]]:
        """Create the table or add columns for a run of records, as configured."""
        fields, values, _ = run[0]
        if not self.columns:
            self._create(fields, values)
        new = [f for f in fields if f.lower() not in self.columns]
        if not new:
            return run
        if self.config.new_fields == "dead_letter":
            names = ", ".join(new)
            reason = f"fields not in table {self.config.table!r}: {names}"
            refused.extend((item, reason) for _, _, item in run)
            return []
        for name in new:
            value = values[fields.index(name)]
            decl = f"{quote(name)} {_column_type(value)}".rstrip()
            self.conn.execute(f"ALTER TABLE {self.table} ADD COLUMN {decl}")
            self.columns[name.lower()] = _column_type(value)
        self._statements.clear()
        return run

    def _create(self, fields: tuple[str, ...], values: list[Any]) -> None:
        schema = self.config.schema
        if schema is not None:
            columns = {name: SQL_TYPES[t.rstrip("?")] for name, t in schema.items()}
            for name, value in zip(fields, values, strict=True):
                columns.setdefault(name, _column_type(value))
        else:
            columns = {
                name: _column_type(value)
                for name, value in zip(fields, values, strict=True)
            }
        decls = [f"{quote(name)} {kind}".rstrip() for name, kind in columns.items()]
        if self.key:
            decls.append(f"PRIMARY KEY ({', '.join(map(quote, self.key))})")
        self.conn.execute(
            f"CREATE TABLE IF NOT EXISTS {self.table} ({', '.join(decls)})"
        )
        self.columns = self._load_columns()

    def _statement(self, fields: tuple[str, ...]) -> str:
        sql = self._statements.get(fields)
        if sql is None:
            cols = ", ".join(map(quote, fields))
            marks = ", ".join("?" * len(fields))
            sql = f"INSERT INTO {self.table} ({cols}) VALUES ({marks})"
            if self.key:
                target = ", ".join(map(quote, self.key))
                updates = [
                    f"{quote(f)} = excluded.{quote(f)}"
                    for f in fields
                    if f not in self.key
                ]
                action = (
                    f"DO UPDATE SET {', '.join(updates)}" if updates else "DO NOTHING"
                )
                sql += f" ON CONFLICT ({target}) {action}"
            self._statements[fields] = sql
        return sql


def open_writer(config: SqliteSinkConfig) -> _TableWriter:
    """Connect (WAL, configured synchronous) and prepare the table's writer.

    Runs in the connection's thread.
    """
    conn = _connect(config.path, busy_timeout_ms=config.busy_timeout_ms)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {config.synchronous.upper()}")
        return _TableWriter(conn, config)
    except BaseException:
        conn.close()
        raise


class SqliteSink:
    """Write records into an SQLite table, one transaction per batch.

    The table is created from the ``schema``, or else from the first record
    (column types from its values). A field the table has no column for is
    added as a column (``new_fields: add_column``, the default) or sends the
    record to the ``error`` port (``dead_letter``). Fields match columns
    whatever their case, as SQLite's names do. Dicts and lists are stored as
    JSON text, booleans as 0/1.

    With a ``key`` each record is upserted: a record whose key exists
    replaces the values of the fields it carries. An existing table without
    a unique index on the key gets one. A record that is not a mapping,
    lacks its key, breaks the schema, holds a value SQLite cannot store, or
    is refused by a constraint goes to the ``error`` port; the rest of its
    batch commits. A database failure rolls the batch back and fails the
    node (its retry policy may replay the batch).

    Stream-safe. Delivery: exactly-once effects under stream checkpoints,
    across crashes and ``kill -9`` (across power loss too with ``synchronous:
    full``). Each batch is committed before the next is taken, so a barrier
    finds everything before it in the table. With a ``key``, replayed records
    rewrite the same rows (idempotent upserts, exactly-once even without
    checkpoints). Without one, the sink keeps the table's highest rowid in
    each checkpoint (``rowid``), and a restart deletes the rows above it, in
    one transaction, before the sources replay them; this assumes the sink is
    the table's only writer and new rows get higher rowids (SQLite's default;
    a ``WITHOUT ROWID`` table is refused: give it a ``key``). Readers of the
    table may see the rows of an epoch not committed yet, which a recovery
    deletes. Without checkpoints and a key: at-least-once. State: ``rows``
    written, ``batches`` committed, ``rowid`` (without a key, under
    checkpoints).

    Example:
        ``{id: save, type: sqlite.sink, config: {path: app.db, table: users,
        key: id}}`` keeps one row per ``id``, with its latest values.
    """

    def __init__(self, config: SqliteSinkConfig) -> None:
        self.config = config
        self._worker: _Worker | None = None
        self._writer: _TableWriter | None = None

    async def __aenter__(self) -> SqliteSink:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def initialize(self, ctx: NodeContext) -> None:
        """Connect in the node's thread and check the table (if it exists).

        Under checkpoints, a sink without a key first deletes the rows above
        the restored ``rowid``.

        Raises:
            ValueError: The table cannot be written as configured (see
                above).
        """
        worker = self._worker = _Worker(f"flowstream-sqlite-{ctx.node_id}")
        try:
            writer = self._writer = await worker.run(open_writer, self.config)
            worker.conn = writer.conn
            if ctx.checkpointing and not self.config.key_fields:
                await self._roll_back(ctx, worker, writer)
        except BaseException:
            await self.aclose()  # a node that fails to start gets no shutdown
            raise
        for name in ("rows", "batches"):
            if name not in ctx.state:
                ctx.state[name] = 0

    async def _roll_back(
        self, ctx: NodeContext, worker: _Worker, writer: _TableWriter
    ) -> None:
        committed: int | None = ctx.state.get("rowid")
        if committed is None:
            await worker.run(writer.check_rowid)
        else:
            deleted = await worker.run(writer.roll_back_to, committed)
            if deleted:
                ctx.logger.info(
                    "table %r: deleted %d rows written after checkpoint %d",
                    self.config.table,
                    deleted,
                    ctx.restored_epoch,
                )

        async def at_barrier(epoch: int) -> None:
            # Batches commit as they come: everything before the barrier is
            # in the table, and so below this rowid.
            ctx.state["rowid"] = await worker.run(writer.last_rowid)

        ctx.on_barrier(at_barrier)

    async def execute(
        self, inp: AsyncIterator[list[Any]], *, ctx: NodeContext
    ) -> AsyncIterator[list[Any]]:
        """Write each batch in one transaction."""
        assert self._worker is not None
        assert self._writer is not None
        write = self._writer.write
        async for batch in inp:
            if not batch:
                continue
            written, refused = await self._worker.run(write, batch)
            ctx.state["rows"] += written
            ctx.state["batches"] += 1
            if refused:
                for item, reason in refused:
                    ctx.dead_letter(item, reason)
                yield []  # lets the runtime hand the dead letters on now

    async def shutdown(self) -> None:
        """Close the connection."""
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection and its thread; idempotent."""
        if self._worker is not None:
            worker, self._worker = self._worker, None
            self._writer = None
            await worker.aclose()


sqlite_sink = node("sqlite.sink", config=SqliteSinkConfig, batched=True)(SqliteSink)


# --- sqlite.source ----------------------------------------------------------------


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

    path: str
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
        self._worker: _Worker | None = None
        self._reader: _Reader | None = None

    async def __aenter__(self) -> SqliteSource:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def initialize(self, ctx: NodeContext) -> None:
        """Open the database read-only in the node's thread."""
        cfg = self.config
        self._worker = _Worker(f"flowstream-sqlite-{ctx.node_id}")

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
