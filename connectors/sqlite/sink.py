"""The ``sqlite.sink`` node: records inserted or upserted into an SQLite table.

Its config, `SqliteSink` (one worker thread and connection, one transaction
per batch, rollback to the last checkpoint's rowid) and the `sqlite_sink`
spec. The writing itself is `connectors.sqlite._writer._TableWriter`'s.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import msgspec

from flowstream import FilePath, SQLiteWorker, node

from .._records import record_type
from ._common import _check_busy, _check_path
from ._writer import open_writer

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from flowstream import NodeContext

    from ._writer import _TableWriter

__all__ = ["SqliteSink", "SqliteSinkConfig", "sqlite_sink"]


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

    path: FilePath
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

        Without a ``schema``, a missing table is created from the first
        record: one column per field, typed from the field's value (int
        ``INTEGER``, float ``REAL``, str ``TEXT``, bool ``INTEGER`` 0/1,
        dict or list ``TEXT``, null no declared type). Nested maps and lists
        are stored as JSON text (``{"k": 1}`` is the text ``{"k":1}``): read
        them back with SQLite's ``json_extract``.

        ``key`` (a field, or a list of fields such as ``[user, start]``)
        makes it the table's primary key and each write an upsert: the
        first record of a key inserts a row, a later one updates the fields
        it carries and leaves the row's other columns as they were. Without
        ``key`` every record is a new row (duplicates kept).

        ``new_fields: add_column`` (the default): a record with a field the
        table lacks adds the column (``ALTER TABLE ADD COLUMN``, typed from
        that value as above); rows written before hold NULL in it.
        ``new_fields: dead_letter``: such a record is not written and goes
        to ``error`` with the reason ``fields not in table 'users':
        nickname``.
    """

    def __init__(self, config: SqliteSinkConfig) -> None:
        self.config = config
        self._worker: SQLiteWorker | None = None
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
        worker = self._worker = SQLiteWorker(f"flowstream-sqlite-{ctx.node_id}")
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
        self, ctx: NodeContext, worker: SQLiteWorker, writer: _TableWriter
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
