"""SQLite connectors: ``sqlite.sink`` (insert or upsert) and ``sqlite.source``.

Threads: every node owns one connection and one dedicated worker thread
(a `flowstream.SQLiteWorker`). The connection is made in that thread and
every sqlite3 call runs there, so the event loop never blocks on SQLite and sqlite3's
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

This module re-exports the public names (those outside ``__all__`` too); the
code is split by concept:

* `connectors.sqlite._common`: connecting, quoting, and the config checks
  both nodes run;
* `connectors.sqlite._writer`: ``sqlite.sink``'s table writer;
* `connectors.sqlite.sink`: the ``sqlite.sink`` node and its config;
* `connectors.sqlite.source`: the ``sqlite.source`` node and its config.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._common import quote as quote
from ._writer import (
    ROWID_NAMES as ROWID_NAMES,
    SQL_TYPES as SQL_TYPES,
    open_writer as open_writer,
)
from .sink import SqliteSink, SqliteSinkConfig, sqlite_sink
from .source import (
    MIN_ROWID as MIN_ROWID,
    SqliteSource,
    SqliteSourceConfig,
    sqlite_source,
)

if TYPE_CHECKING:
    from flowstream import NodeSpec

__all__ = [
    "NODES",
    "SqliteSink",
    "SqliteSinkConfig",
    "SqliteSource",
    "SqliteSourceConfig",
    "sqlite_sink",
    "sqlite_source",
]

NODES: tuple[NodeSpec, ...] = (sqlite_source, sqlite_sink)
"""This family's node types (its ``flowstream.nodes`` entry point)."""
