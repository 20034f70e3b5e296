"""`SQLiteWorker`: one thread that owns one sqlite3 connection.

A sqlite3 connection may be used only by the thread that made it, and its
calls block, so every SQLite user in flowstream (the checkpoint store, the
routed flows' `SQLiteStorage`, ``sqlite.source`` and ``sqlite.sink``, the
WebSocket ingest journal) runs its calls on a worker of its own: the event
loop awaits them and never waits on the disk. Calls run one at a time, in
the order they were made, so a function that opens the connection (and sets
`SQLiteWorker.conn`) is always seen by the calls made after it.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar, final

if TYPE_CHECKING:
    import sqlite3
    from collections.abc import Callable

__all__ = ["SQLiteWorker"]

T = TypeVar("T")


@final
class SQLiteWorker:
    """One thread that runs blocking calls in call order, and its connection.

    The thread starts with the first call. ``conn`` is the connection the
    calls share: set and used only on the worker thread (by the functions it
    runs), closed by `aclose`.

    Args:
        name: The thread's name prefix (shown in thread dumps), e.g.
            ``"flowstream-ckpt"``.
    """

    __slots__ = ("_closed", "_pool", "_started", "conn", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self.conn: sqlite3.Connection | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._started = False
        self._closed = False

    @property
    def closed(self) -> bool:
        """True once `aclose` was called."""
        return self._closed

    def submit(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Queue ``fn(*args)`` on the thread; return the future of its result.

        For a caller that must shield the call from its own cancellation (a
        write that must happen even if the awaiting task is cancelled).

        Raises:
            RuntimeError: The worker is closed.
        """
        if self._closed:
            msg = f"{self!r} is closed"
            raise RuntimeError(msg)
        return self._submit(fn, *args)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the thread, after every call made before it.

        Cancelling the caller does not stop a call already running on the
        thread (threads cannot be interrupted); it only stops the wait.

        Returns:
            What ``fn`` returned.

        Raises:
            RuntimeError: The worker is closed.
            Exception: Whatever ``fn`` raised.
        """
        return await self.submit(fn, *args)

    async def aclose(self, *, wait: bool = False) -> None:
        """Close ``conn`` on the thread (after the queued calls), end the thread.

        Idempotent. Calls made afterwards raise `RuntimeError`.

        Args:
            wait: Block until the thread has exited. Without it the thread
                ends on its own once its queue is done: after an aborted run
                it may still be finishing a long statement.
        """
        if self._closed:
            return
        self._closed = True
        try:
            if self._started:
                await self._submit(self._close_conn)
        finally:
            self._pool.shutdown(wait=wait)

    def close(self) -> None:
        """Queue closing ``conn`` after the queued calls, end the thread; never waits.

        Idempotent. For ``finally`` blocks that must not await (a cancelled
        task cleaning up): the connection is still closed on its own thread.
        """
        if self._closed:
            return
        self._closed = True
        if self._started:
            self._pool.submit(self._close_conn)
        self._pool.shutdown(wait=False)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open" if self.conn else "idle"
        return f"<SQLiteWorker {self.name} {state}>"

    def _submit(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        self._started = True
        return asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def _close_conn(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.close()
