"""The ingest journal: frames made durable in SQLite before they enter the graph.

A journal is one SQLite file (WAL, ``synchronous=FULL``: a committed
transaction survives a kill -9 or a power cut)::

    frames (id integer primary key autoincrement,  -- never reused
            frame blob,                            -- the bytes as received
            peer text,                             -- host:port, or the url
            received real)                         -- unix time it was read
    meta   (key text primary key, value)           -- open, max_frames

``meta.open`` is 1 while a process has the journal open: finding it set
means the last process died with it open, and ``max_frames`` says how many
frames it may have lost (read, not yet journaled).

Flow: readers `add` frames; the writer (`write`) commits everything added
since its last transaction in one transaction (group commit: idle, each
frame gets its own transaction at once; under load transactions grow); the
written frames wait in `ready` until `deliver` hands them on, in id order.
Readers wait while ``max_frames`` frames (or ``max_bytes`` bytes) are added
but not handed on, so:

* at most ``max_frames`` frames are ever read but not yet journaled: the
  most a crash can lose here;
* when the consumer stops taking, the readers stop reading: the journal
  never runs ahead of the graph by more than ``max_frames`` frames.

Every sqlite3 call runs on the journal's own `flowstream.SQLiteWorker` (one
thread, in call order), so the event loop never waits on SQLite.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections import deque
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from flowstream import SQLiteWorker
from flowstream.errors import ConnectorError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

__all__ = ["Journal", "JournalOpened", "Row"]

T = TypeVar("T")

Row = tuple[int, bytes | str, str]
"""A journaled frame: its id, its bytes, its peer."""

_SCHEMA = """
create table if not exists frames (
    id       integer primary key autoincrement,
    frame    blob not null,
    peer     text not null,
    received real not null
);
create table if not exists meta (
    key      text primary key,
    value
);
"""


class JournalOpened(msgspec.Struct, frozen=True, kw_only=True):
    """What `Journal.open` found.

    Attributes:
        last_id: The id of the last frame journaled so far: frames after the
            checkpoint and up to it are the backlog to replay.
        backlog: How many frames that is.
        pruned: Frames pruned at open (covered by the checkpoint).
        unclean: The last process to open the journal did not close it.
        lost_at_most: If ``unclean``: the ``max_frames`` it ran with.
        behind: The journal ended before the checkpoint's frame id (it was
            replaced or rolled back); new ids continue after the checkpoint's.
        pruned_past: The journal was pruned past the checkpoint's frame id:
            frames after it, up to this id, are gone (the journal is newer
            than the checkpoint store: a store restored from an older copy,
            or a backup that copied the store before the journal); 0 if not.
    """

    last_id: int
    backlog: int
    pruned: int
    unclean: bool
    lost_at_most: int | None
    behind: bool
    pruned_past: int = 0


class Journal:
    """An append-only SQLite journal of frames, bounded by what it holds back.

    Use: `open`, run `write` and `deliver` as tasks, `add` frames, `drain`
    to hand on everything added, `close` and `aclose` at the end.

    Args:
        path: The SQLite file (created if missing). One journal per node.
        max_frames: Most frames added and not yet handed on; readers wait
            past it. Bounds the frames read but not yet journaled.
        max_bytes: The same in bytes (one larger frame may enter alone).
    """

    def __init__(self, path: str, *, max_frames: int, max_bytes: int) -> None:
        self.path = path
        self.max_frames = max_frames
        self.max_bytes = max_bytes
        self.ready: deque[Row] = deque()
        """Journaled, waiting to be handed on (id order)."""
        self.closed = False
        self.journaled = 0
        self.pruned = 0
        self.peak_unjournaled = 0
        self.waiting = 0
        self._pending: list[tuple[bytes | str, str, float]] = []
        self._writing = 0
        self._bytes = 0
        self._delivering = True
        self._work = asyncio.Event()  # the writer: frames added, or closed
        self._written = asyncio.Event()  # delivery: rows ready, or closed
        self._space = asyncio.Event()  # readers: room
        self._idle = asyncio.Event()  # drain: nothing held back
        # Every sqlite3 call runs on the worker's thread; its conn is ours.
        self._worker = SQLiteWorker("flowstream-journal")

    @property
    def unjournaled(self) -> int:
        """Frames read but not yet committed to the journal (lost on a crash)."""
        return len(self._pending) + self._writing

    @property
    def held(self) -> int:
        """Frames added and not yet handed on."""
        return len(self._pending) + self._writing + len(self.ready)

    @property
    def held_bytes(self) -> int:
        """The bytes of those frames."""
        return self._bytes

    # --- the event loop side ----------------------------------------------------------

    async def open(self, after: int) -> JournalOpened:
        """Open (or create) the file; prune the frames up to ``after``.

        ``after`` is the id of the last frame a committed checkpoint covers:
        those are done with. New frames get ids above ``after`` even if the
        file is newer than the checkpoint.

        Raises:
            ConnectorError: The file is not a usable journal.
        """
        opened: JournalOpened = await self._call(self._open, after)
        self.pruned += opened.pruned
        return opened

    def offer(self, frame: bytes | str, peer: str) -> bool:
        """Add a frame if it fits now; False otherwise (or once closed)."""
        held = len(self._pending) + self._writing + len(self.ready)
        size = len(frame)
        if self.closed or (
            held and (held >= self.max_frames or self._bytes + size > self.max_bytes)
        ):
            return False
        self._pending.append((frame, peer, time.time()))
        self._bytes += size
        unjournaled = len(self._pending) + self._writing
        if unjournaled > self.peak_unjournaled:
            self.peak_unjournaled = unjournaled
        self._idle.clear()
        self._work.set()
        return True

    async def add(self, frame: bytes | str, peer: str) -> bool:
        """Add a frame, waiting for room; False (frame dropped) once closed."""
        while not self.offer(frame, peer):
            if self.closed:
                return False
            self._space.clear()
            self.waiting += 1
            try:
                await self._space.wait()
            finally:
                self.waiting -= 1
        return True

    async def write(self) -> None:
        """Commit what was added, one transaction per round, until closed.

        Raises:
            sqlite3.Error: A write failed (the frames are not journaled).
        """
        while True:
            if not self._pending:
                if self.closed:
                    return
                self._work.clear()
                await self._work.wait()
                continue
            batch, self._pending = self._pending, []
            self._writing = len(batch)
            write = self._worker.submit(self._insert, batch)
            try:
                # Shielded: a writer cancelled meanwhile (an aborted run) must
                # not cancel a write still queued on the thread, or the batch
                # would be neither written nor left for aclose to write.
                ids = await asyncio.shield(write)
            finally:
                self._writing = 0
            self.ready.extend(
                (i, frame, peer) for i, (frame, peer, _) in zip(ids, batch, strict=True)
            )
            self.journaled += len(batch)
            self._written.set()

    async def deliver(self, put: Callable[[Row], Awaitable[bool]]) -> None:
        """Hand journaled frames to ``put`` in id order, waiting on it.

        Returns once closed with nothing left, or when ``put`` returns False
        (the consumer is gone); the journal is closed then.
        """
        ready = self.ready
        try:
            while True:
                if not ready:
                    if not self._pending and not self._writing:
                        self._idle.set()
                        if self.closed:
                            return
                    self._written.clear()
                    await self._written.wait()
                    continue
                row = ready[0]
                if not await put(row):
                    return
                ready.popleft()
                self._bytes -= len(row[1])
                if self.waiting:
                    self._space.set()
        finally:
            self._delivering = False
            self.close()

    async def drain(self) -> None:
        """Wait until every frame added is journaled and handed on."""
        while self.held and self._delivering:
            self._idle.clear()
            await self._idle.wait()

    async def read(self, after: int, until: int, limit: int) -> list[Row]:
        """The journaled frames with ids in ``(after, until]``, at most ``limit``."""
        rows: list[Row] = await self._call(self._read, after, until, limit)
        return rows

    async def prune(self, upto: int) -> int:
        """Delete the frames with ids up to ``upto``; return how many."""
        pruned: int = await self._call(self._prune, upto)
        self.pruned += pruned
        return pruned

    def close(self) -> None:
        """Take no more frames; the writer and delivery finish what they hold."""
        self.closed = True
        self._work.set()
        self._written.set()
        self._space.set()
        self._idle.set()

    async def aclose(self) -> int:
        """Journal what was added but not written, mark the file closed, close it.

        Returns how many frames that last write saved (they are replayed by
        the next run).
        """
        self.close()
        pending, self._pending = self._pending, []
        try:
            if self._worker.conn is not None:
                await self._worker.run(self._finish, pending)
        finally:
            # Not waited for: an aborted run may leave a write finishing.
            self._worker.close()
        return len(pending)

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        return await self._worker.run(fn, *args)

    # --- on the worker thread ---------------------------------------------------------

    def _open(self, after: int) -> JournalOpened:
        try:
            conn = sqlite3.connect(self.path, isolation_level=None)
        except sqlite3.Error as exc:
            msg = f"journal {self.path}: cannot open it ({exc})"
            raise ConnectorError(msg) from None
        try:
            conn.execute("pragma journal_mode=wal")
            conn.execute("pragma synchronous=full")
            conn.executescript(_SCHEMA)
            with conn:
                conn.execute("begin immediate")
                meta = dict(conn.execute("select key, value from meta").fetchall())
                row = conn.execute(
                    "select seq from sqlite_sequence where name = 'frames'"
                ).fetchone()
                last = row[0] if row is not None else 0
                behind = after > last
                if behind:
                    # Ids must go on above the checkpoint's, or new frames would
                    # pass for frames the checkpoint already covers.
                    if row is None:
                        conn.execute(
                            "insert into sqlite_sequence values ('frames', ?)", (after,)
                        )
                    else:
                        conn.execute(
                            "update sqlite_sequence set seq = ? where name = 'frames'",
                            (after,),
                        )
                    last = after
                # Frames up to pruned_to were deleted by commits of some
                # checkpoint store: past ``after``, not by this one's.
                pruned_to = int(meta.get("pruned_to") or 0)
                pruned_past = pruned_to if pruned_to > after else 0
                pruned = self._delete_upto(conn, after)
                backlog = conn.execute(
                    "select count(*) from frames where id > ?", (after,)
                ).fetchone()[0]
                conn.executemany(
                    "insert or replace into meta values (?, ?)",
                    [("open", 1), ("max_frames", self.max_frames)],
                )
        except sqlite3.Error as exc:
            conn.close()
            msg = f"journal {self.path}: not a usable journal ({exc})"
            raise ConnectorError(msg) from None
        self._worker.conn = conn
        unclean = meta.get("open") == 1
        return JournalOpened(
            last_id=last,
            backlog=backlog,
            pruned=pruned,
            unclean=unclean,
            lost_at_most=meta.get("max_frames") if unclean else None,
            behind=behind,
            pruned_past=pruned_past,
        )

    @staticmethod
    def _delete_upto(conn: sqlite3.Connection, upto: int) -> int:
        """Delete the frames up to ``upto``, noting how far pruning went."""
        pruned = conn.execute("delete from frames where id <= ?", (upto,)).rowcount
        conn.execute(
            "insert into meta values ('pruned_to', ?) on conflict (key) "
            "do update set value = max(value, excluded.value)",
            (upto,),
        )
        return pruned

    def _insert(self, batch: list[tuple[bytes | str, str, float]]) -> list[int]:
        conn = self._worker.conn
        assert conn is not None
        insert = "insert into frames (frame, peer, received) values (?, ?, ?)"
        with conn:
            conn.execute("begin immediate")
            return [conn.execute(insert, row).lastrowid or 0 for row in batch]

    def _read(self, after: int, until: int, limit: int) -> list[Row]:
        conn = self._worker.conn
        assert conn is not None
        rows = conn.execute(
            "select id, frame, peer from frames where id > ? and id <= ? "
            "order by id limit ?",
            (after, until, limit),
        ).fetchall()
        # A text frame (``auto``) was stored as SQLite text and reads back a str.
        return [
            (i, frame if type(frame) is str else bytes(frame), peer)
            for i, frame, peer in rows
        ]

    def _prune(self, upto: int) -> int:
        conn = self._worker.conn
        assert conn is not None
        with conn:
            conn.execute("begin immediate")
            return self._delete_upto(conn, upto)

    def _finish(self, pending: list[tuple[bytes | str, str, float]]) -> None:
        conn = self._worker.conn
        assert conn is not None
        try:
            if pending:
                self._insert(pending)
            with conn:
                conn.execute("insert or replace into meta values ('open', 0)")
        finally:
            self._worker.conn = None
            conn.close()
