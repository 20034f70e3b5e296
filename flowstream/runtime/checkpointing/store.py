"""Checkpoints in SQLite: what a killed run needs to resume without redoing work.

The store is one SQLite file (WAL, ``synchronous=FULL``: a committed
transaction survives a kill -9 or a power cut). A run is identified by its
workflow's content (a hash of the workflow document), so restarting the same
workflow against the same store resumes a run that was killed or failed,
and a changed workflow starts afresh. A run that completed is not run again
(`AlreadyCompleted`): its sinks hold its whole output, and a second run would
write it twice. Starting over is explicit (``fresh``).

What is recorded today: in DAG mode, the outputs of every one-shot node as it
completes (per port, MessagePack), committed in groups every ``interval_ms``.
A resumed run hands those outputs on without calling the node again, so the
run's result is the same as an uninterrupted run's; at most one group of
completions (the last ``interval_ms``) is computed twice. Stream-mode epochs
(barriers, operator state, source offsets) build on the same store later.

All SQLite calls run on one `SQLiteWorker` thread, off the event loop.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from ..sqlite_worker import SQLiteWorker
from .faults import fault_point
from .records import (
    EPOCH_LOG,
    AlreadyCompleted,
    CheckpointError,
    EpochRecord,
    PoisonRecord,
    RunRecord,
    record_fingerprint,
    workflow_key,
)

if TYPE_CHECKING:
    from ...core.workflow import Workflow
    from .rescale import Layout

__all__ = ["CheckpointStore", "resume_epoch"]

_SCHEMA = """
create table if not exists runs (
    run_key   text primary key,
    workflow  text not null,
    status    text not null,           -- running | completed | failed
    started   real not null,
    updated   real not null,
    attempts  integer not null default 1,
    restored  real                     -- when it last resumed from the store
);
create table if not exists epochs (
    run_key   text not null references runs(run_key) on delete cascade,
    epoch     integer not null,
    committed real not null,
    states    blob not null,           -- msgpack {node_id: msgpack state}
    started   real,                    -- when its barrier was triggered
    size      integer,                 -- bytes of states
    primary key (run_key, epoch)
);
create table if not exists epoch_log (  -- the last EPOCH_LOG epochs of a run
    run_key   text not null references runs(run_key) on delete cascade,
    epoch     integer not null,
    started   real not null,
    committed real not null,
    size      integer not null,
    primary key (run_key, epoch)
);
create table if not exists failures (
    run_key     text not null references runs(run_key) on delete cascade,
    node_id     text not null,
    fingerprint text not null,         -- sha256 of the record's MessagePack
    record      text not null,         -- the record as JSON, cut to 500 chars
    reason      text not null,
    count       integer not null,
    primary key (run_key, node_id, fingerprint)
);
create table if not exists node_outputs (
    run_key   text not null references runs(run_key) on delete cascade,
    node_id   text not null,
    outputs   blob not null,           -- msgpack {port: [values]}
    stored    real not null,
    primary key (run_key, node_id)
);
"""

# Columns added after the first release, for stores made before them: the
# table, the column and its declaration (`CheckpointStore._open` adds them).
_ADDED_COLUMNS = (
    ("runs", "restored", "real"),
    ("epochs", "started", "real"),
    ("epochs", "size", "integer"),
)

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(dict[str, list[Any]])
_states_decoder = msgspec.msgpack.Decoder(dict[str, bytes])


async def resume_epoch(path: str | Path, workflow: Workflow) -> int | None:
    """The epoch a run of ``workflow`` would resume from in the store at ``path``.

    The last epoch committed for the workflow's run key; None when the store
    does not exist (it is not created) or holds no epoch of that run.
    """
    if not await asyncio.to_thread(Path(path).exists):
        return None
    async with CheckpointStore(path) as store:
        return await store.committed_epoch(workflow_key(workflow))


class CheckpointStore:
    """A SQLite checkpoint store; use as ``async with CheckpointStore(path)``.

    Args:
        path: The database file (created if missing).
        interval_ms: How long completions may wait before being committed.
    """

    def __init__(self, path: str | Path, interval_ms: float = 1000.0) -> None:
        self.path = Path(path)
        self.interval = interval_ms / 1000.0
        # Every sqlite3 call runs on this worker's thread; its ``conn`` is
        # the store's connection.
        self._worker = SQLiteWorker("flowstream-ckpt")
        self._pending: list[tuple[str, str, bytes, float]] = []
        self._last_commit = 0.0
        self.unstorable: list[str] = []
        # A run's start, held for the next write transaction (`begin` with
        # ``defer``): (SQL, parameters) statements.
        self._deferred: list[tuple[str, tuple[Any, ...]]] = []
        # The (run key, status) the last epoch's transaction also recorded
        # (`commit_epoch` with ``finish``), which `finish` then need not.
        self._finished: tuple[str, str] | None = None

    async def __aenter__(self) -> CheckpointStore:
        await self._call(self._open)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Commit what is pending and close the database."""
        await self._worker.aclose(wait=True)

    # --- what the executor calls ----------------------------------------------

    async def begin(
        self, run_key: str, workflow: str, *, fresh: bool = False, defer: bool = False
    ) -> dict[str, dict[str, list[Any]]]:
        """Start (or resume) the run ``run_key``; return outputs already done.

        Args:
            run_key: The workflow's key (`workflow_key`).
            workflow: Its name, for listings.
            fresh: Forget what the store holds of ``run_key`` (its epochs,
                completed nodes, failed records) and start it over, whatever
                its status.
            defer: Write the run's row (a new run, or one more attempt) in
                the store's next write transaction (stream mode: epoch 0's,
                or the next epoch's) instead of one of its own. Until then a
                crash leaves the store as if this attempt never began, which
                a restart treats the same way (the run starts from the same
                place; only the attempt count and start time differ). A
                ``fresh`` start over an existing run is never deferred: its
                old rows must be gone before the new attempt touches a sink.

        Raises:
            AlreadyCompleted: The run completed and ``fresh`` is not set.
        """
        done: dict[str, dict[str, list[Any]]] = await self._call(
            self._begin, run_key, workflow, fresh, defer
        )
        return done

    def record(self, run_key: str, node_id: str, outputs: dict[str, list[Any]]) -> None:
        """Queue a completed node's outputs (committed by `maybe_commit`)."""
        try:
            blob = _encoder.encode(outputs)
        except (TypeError, OverflowError):
            # Not encodable (a Stream, an object): recomputed on resume.
            self.unstorable.append(node_id)
            return
        self._pending.append((run_key, node_id, blob, time.time()))

    async def maybe_commit(self) -> None:
        """Commit queued completions if the interval has passed."""
        if self._pending and time.monotonic() - self._last_commit >= self.interval:
            await self.commit()

    async def commit(self) -> None:
        """Commit every queued completion now (one transaction)."""
        if self._pending:
            rows, self._pending = self._pending, []
            await self._call(self._write, rows)
        self._last_commit = time.monotonic()

    async def finish(self, run_key: str, status: str) -> None:
        """Mark the run finished; a completed run is not run again.

        A completed run keeps only its row and its final epoch (what
        `AlreadyCompleted` reports); its completed nodes and failed records
        are dropped.
        """
        pending = bool(self._pending or self._deferred)
        await self.commit()
        if self._finished == (run_key, status) and not pending:
            return  # recorded with the final epoch, in its transaction
        await self._call(self._finish, run_key, status)

    async def commit_epoch(
        self,
        run_key: str,
        epoch: int,
        states: dict[str, bytes],
        started: float | None = None,
        *,
        finish: str | None = None,
    ) -> None:
        """Record a stream epoch's node states (one transaction, durable).

        Args:
            run_key: The run's key.
            epoch: The epoch's number.
            states: Each node's state, by node id.
            started: When the epoch's barrier was triggered (`time.time`);
                None: now (an epoch taken with nothing in flight).
            finish: For the run's last epoch, when nothing is left to do
                after it (no node has a commit hook to run): the run's final
                status, recorded in the same transaction as the epoch
                (`finish` then has nothing to write).
        """
        blob = _encoder.encode(states)
        await self._call(self._commit_epoch, run_key, epoch, blob, started, finish)
        if finish is not None:
            self._finished = (run_key, finish)

    async def record_failure(
        self, run_key: str, node_id: str, item: Any, reason: str
    ) -> int:
        """Count one more run failed by ``item`` at ``node_id``; return the count."""
        fingerprint, shown = record_fingerprint(item)
        count: int = await self._call(
            self._record_failure, run_key, node_id, fingerprint, shown, reason
        )
        return count

    async def failures(self, run_key: str) -> list[PoisonRecord]:
        """Records that failed runs of ``run_key``, most failures first."""
        found: list[PoisonRecord] = await self._call(self._failures, run_key)
        return found

    async def forget_failures(self, run_key: str | None = None) -> int:
        """Forget recorded failures (of one run, or all); return how many."""
        forgotten: int = await self._call(self._forget_failures, run_key)
        return forgotten

    async def latest_epoch(self, run_key: str) -> tuple[int, dict[str, bytes]]:
        """The last committed epoch of a run and its node states (0, {} if none)."""
        latest: tuple[int, dict[str, bytes]] = await self._call(
            self._latest_epoch, run_key
        )
        return latest

    async def committed_epoch(self, run_key: str) -> int | None:
        """The last committed epoch of a run; None if it has none."""
        epoch: int | None = await self._call(self._committed_epoch, run_key)
        return epoch

    async def runs(self) -> list[RunRecord]:
        """Every run in the store, newest first."""
        runs: list[RunRecord] = await self._call(self._runs)
        return runs

    # --- on the worker thread --------------------------------------------------

    async def _call(self, fn: Any, *args: Any) -> Any:
        return await self._worker.run(fn, *args)

    def _open(self) -> None:
        try:
            conn = sqlite3.connect(self.path, isolation_level=None)
            conn.execute("pragma journal_mode=wal")
            conn.execute("pragma synchronous=full")
            conn.execute("pragma foreign_keys=on")
            # One transaction, not one per table (each a durable commit on
            # a new store); on an existing store it writes nothing.
            conn.executescript(f"begin immediate;{_SCHEMA}commit;")
            for table, column, kind in _ADDED_COLUMNS:
                have = {row[1] for row in conn.execute(f"pragma table_info({table})")}
                if column not in have:
                    conn.execute(f"alter table {table} add column {column} {kind}")
        except sqlite3.DatabaseError as exc:
            msg = f"{self.path}: not a usable checkpoint store ({exc})"
            raise CheckpointError(msg) from None
        self._worker.conn = conn

    def _begin(
        self, run_key: str, workflow: str, fresh: bool, defer: bool
    ) -> dict[str, dict[str, list[Any]]]:
        conn = self._worker.conn
        assert conn is not None
        now = time.time()
        with conn:
            conn.execute("begin immediate")
            row = conn.execute(
                "select status, updated from runs where run_key = ?", (run_key,)
            ).fetchone()
            if row is not None and row[0] == "completed" and not fresh:
                last = conn.execute(
                    "select max(epoch) from epochs where run_key = ?", (run_key,)
                ).fetchone()[0]
                raise AlreadyCompleted(run_key, last, row[1])
            if row is None or fresh:
                # A new run of the workflow; the old one's rows go with it
                # (foreign keys cascade).
                start = [
                    ("delete from runs where run_key = ?", (run_key,)),
                    (
                        "insert into runs (run_key, workflow, status, started, "
                        "updated, attempts) values (?, ?, 'running', ?, ?, 1)",
                        (run_key, workflow, now, now),
                    ),
                ]
                if defer and row is None:
                    self._deferred = start  # nothing of an old run to forget
                else:
                    for sql, args in start:
                        conn.execute(sql, args)
                return {}
            # Resumed: running again, whatever its last attempt ended as.
            attempt = (
                "update runs set attempts = attempts + 1, updated = ?, "
                "restored = ?, status = 'running' where run_key = ?",
                (now, now, run_key),
            )
            if defer:
                self._deferred = [attempt]
            else:
                conn.execute(*attempt)
        done = conn.execute(
            "select node_id, outputs from node_outputs where run_key = ?", (run_key,)
        ).fetchall()
        return {node_id: _decoder.decode(blob) for node_id, blob in done}

    def _write(self, rows: list[tuple[str, str, bytes, float]]) -> None:
        conn = self._worker.conn
        assert conn is not None
        with conn:
            conn.execute("begin immediate")
            self._write_deferred(conn)
            conn.executemany(
                "insert or replace into node_outputs values (?, ?, ?, ?)", rows
            )
            conn.execute(
                "update runs set updated = ? where run_key = ?",
                (time.time(), rows[0][0]),
            )
        self._deferred = []

    def _finish(self, run_key: str, status: str) -> None:
        conn = self._worker.conn
        assert conn is not None
        with conn:
            conn.execute("begin immediate")
            self._write_deferred(conn)
            self._write_finish(conn, run_key, status)
        self._deferred = []

    def _write_finish(
        self, conn: sqlite3.Connection, run_key: str, status: str
    ) -> None:
        """The statements of `finish`, inside the caller's transaction."""
        conn.execute(
            "update runs set status = ?, updated = ? where run_key = ?",
            (status, time.time(), run_key),
        )
        if status == "completed":
            # The final epoch stays: it says where the run ended.
            conn.execute("delete from failures where run_key = ?", (run_key,))
            conn.execute("delete from node_outputs where run_key = ?", (run_key,))

    def _write_deferred(self, conn: sqlite3.Connection) -> None:
        """Write the run's start held by `begin` (``defer``), in this transaction.

        Dropped from memory only once the transaction commits: if it rolls
        back, the next one writes it.
        """
        for sql, args in self._deferred:
            conn.execute(sql, args)

    def _commit_epoch(
        self,
        run_key: str,
        epoch: int,
        blob: bytes,
        started: float | None,
        finish: str | None,
    ) -> None:
        conn = self._worker.conn
        assert conn is not None
        now = time.time()
        began = now if started is None else started
        with conn:
            conn.execute("begin immediate")
            self._write_deferred(conn)
            conn.execute(
                "insert or replace into epochs "
                "(run_key, epoch, committed, states, started, size) "
                "values (?, ?, ?, ?, ?, ?)",
                (run_key, epoch, now, blob, began, len(blob)),
            )
            conn.execute(
                "insert or replace into epoch_log values (?, ?, ?, ?, ?)",
                (run_key, epoch, began, now, len(blob)),
            )
            conn.execute(
                "delete from epoch_log where run_key = ? and epoch <= ?",
                (run_key, epoch - EPOCH_LOG),
            )
            # Only the newest epoch is needed to recover.
            conn.execute(
                "delete from epochs where run_key = ? and epoch < ?", (run_key, epoch)
            )
            conn.execute(
                "update runs set updated = ? where run_key = ?", (now, run_key)
            )
            if finish is not None:
                self._write_finish(conn, run_key, finish)
            fault_point("before_commit", epoch)
        self._deferred = []

    def _record_failure(
        self, run_key: str, node_id: str, fingerprint: str, shown: str, reason: str
    ) -> int:
        conn = self._worker.conn
        assert conn is not None
        with conn:
            conn.execute("begin immediate")
            self._write_deferred(conn)
            conn.execute(
                "insert into failures values (?, ?, ?, ?, ?, 1) "
                "on conflict (run_key, node_id, fingerprint) do update "
                "set count = count + 1, reason = excluded.reason",
                (run_key, node_id, fingerprint, shown, reason),
            )
            row = conn.execute(
                "select count from failures where run_key = ? and node_id = ? "
                "and fingerprint = ?",
                (run_key, node_id, fingerprint),
            ).fetchone()
        self._deferred = []
        return int(row[0])

    def _failures(self, run_key: str) -> list[PoisonRecord]:
        conn = self._worker.conn
        assert conn is not None
        rows = conn.execute(
            "select node_id, fingerprint, record, reason, count from failures "
            "where run_key = ? order by count desc",
            (run_key,),
        ).fetchall()
        return [PoisonRecord(*row) for row in rows]

    def _forget_failures(self, run_key: str | None) -> int:
        conn = self._worker.conn
        assert conn is not None
        with conn:
            conn.execute("begin immediate")
            if run_key is None:
                cur = conn.execute("delete from failures")
            else:
                cur = conn.execute("delete from failures where run_key = ?", (run_key,))
        return cur.rowcount

    def _latest_epoch(self, run_key: str) -> tuple[int, dict[str, bytes]]:
        conn = self._worker.conn
        assert conn is not None
        row = conn.execute(
            "select epoch, states from epochs where run_key = ? "
            "order by epoch desc limit 1",
            (run_key,),
        ).fetchone()
        if row is None:
            return 0, {}
        return row[0], _states_decoder.decode(row[1])

    def _committed_epoch(self, run_key: str) -> int | None:
        conn = self._worker.conn
        assert conn is not None
        row = conn.execute(
            "select max(epoch) from epochs where run_key = ?", (run_key,)
        ).fetchone()
        return None if row is None else row[0]

    def _runs(self) -> list[RunRecord]:
        conn = self._worker.conn
        assert conn is not None
        rows = conn.execute(
            "select r.run_key, r.workflow, r.status, r.started, r.updated, r.attempts,"
            " (select count(*) from node_outputs n where n.run_key = r.run_key),"
            " (select max(epoch) from epochs e where e.run_key = r.run_key),"
            " r.restored"
            " from runs r order by r.updated desc"
        ).fetchall()
        records = []
        for row in rows:
            epoch = conn.execute(
                "select states from epochs where run_key = ? "
                "order by epoch desc limit 1",
                (row[0],),
            ).fetchone()
            positions = _positions(epoch[0]) if epoch is not None else {}
            layout = _layout(epoch[0]) if epoch is not None else None
            key, workflow, status, started, updated, attempts, done, last, back = row
            log = conn.execute(
                "select epoch, started, committed, size from epoch_log "
                "where run_key = ? order by epoch desc",
                (key,),
            ).fetchall()
            records.append(
                RunRecord(
                    key,
                    workflow,
                    status,
                    started,
                    updated,
                    attempts,
                    done,
                    last,
                    positions=positions,
                    parallelism=dict(layout.parallelism) if layout else {},
                    rescaled={
                        node_id: {
                            "from": move.old,
                            "to": move.new,
                            "epoch": move.epoch,
                            "keys": move.keys,
                        }
                        for node_id, move in (layout.moves if layout else {}).items()
                    },
                    epochs=[EpochRecord(*e) for e in log],
                    restored=back,
                )
            )
        return records


_raw_states = msgspec.msgpack.Decoder(dict[str, bytes])
_raw_fields = msgspec.msgpack.Decoder(dict[str, msgspec.Raw])


def _layout(blob: bytes) -> Layout | None:
    """The parallel layout recorded with an epoch, if any."""
    from .rescale import read_layout  # rescale's errors build on this module's

    return read_layout(_raw_states.decode(blob))


def _positions(blob: bytes) -> dict[str, dict[str, Any]]:
    """The scalar entries of every node's state: offsets, not big tables."""
    found: dict[str, dict[str, Any]] = {}
    for node_id, state in _raw_states.decode(blob).items():
        if node_id.startswith("\x00"):
            continue  # the layout (`rescale.LAYOUT_KEY`), not a node
        try:
            fields = _raw_fields.decode(state)
        except msgspec.DecodeError:
            continue
        small = {}
        for key, raw in fields.items():
            if len(raw) > 64 or key.startswith("\x00"):
                continue  # a table or a queue, not a position
            value = msgspec.msgpack.decode(raw)
            if isinstance(value, (int, float, str)):
                small[key] = value
        if small:
            found[node_id] = small
    return found
