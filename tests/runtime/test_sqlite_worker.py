from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest

from flowstream import SQLiteWorker


async def test_calls_run_in_order_on_one_thread_off_the_loop(tmp_path: Path) -> None:
    worker = SQLiteWorker("test-sqlite")
    db = str(tmp_path / "t.db")

    def open_db() -> str:
        # check_same_thread off only so that the test can see it closed.
        worker.conn = sqlite3.connect(db, check_same_thread=False)
        worker.conn.execute("create table t (n integer)")
        return threading.current_thread().name

    def insert(n: int) -> str:
        assert worker.conn is not None
        worker.conn.execute("insert into t values (?)", (n,))
        return threading.current_thread().name

    def read() -> list[int]:
        assert worker.conn is not None
        return [n for (n,) in worker.conn.execute("select n from t order by rowid")]

    # Made in one go, awaited together: the order they were made in holds.
    names = await asyncio.gather(
        worker.run(open_db), *(worker.run(insert, n) for n in range(20))
    )
    assert len(set(names)) == 1
    assert names[0].startswith("test-sqlite")
    assert names[0] != threading.current_thread().name
    assert await worker.run(read) == list(range(20))
    conn = worker.conn
    assert conn is not None
    await worker.aclose()
    assert worker.closed
    assert worker.conn is None
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        conn.execute("select 1")


async def test_a_closed_worker_refuses_calls_naming_itself() -> None:
    worker = SQLiteWorker("test-refuse")
    await worker.aclose()
    await worker.aclose()  # idempotent
    worker.close()
    with pytest.raises(RuntimeError, match="test-refuse closed"):
        await worker.run(int)


async def test_an_error_on_the_thread_reaches_the_caller() -> None:
    worker = SQLiteWorker("test-error")
    try:

        def bad() -> None:
            msg = "no such table: nope"
            raise sqlite3.OperationalError(msg)

        with pytest.raises(sqlite3.OperationalError, match="nope"):
            await worker.run(bad)
        assert await worker.run(int, "7") == 7  # the thread goes on
    finally:
        await worker.aclose(wait=True)


async def test_close_without_waiting_still_closes_the_connection_on_its_thread(
    tmp_path: Path,
) -> None:
    worker = SQLiteWorker("test-close")
    closed_on: list[str] = []

    class Traced(sqlite3.Connection):
        def close(self) -> None:
            closed_on.append(threading.current_thread().name)
            super().close()

    def open_db() -> None:
        worker.conn = sqlite3.connect(str(tmp_path / "c.db"), factory=Traced)

    await worker.run(open_db)
    worker.close()  # sync: queued after the calls before it, never awaited
    done = asyncio.Event()
    loop = asyncio.get_running_loop()

    def poll() -> None:
        if closed_on:
            done.set()
        else:
            loop.call_later(0.005, poll)

    poll()
    async with asyncio.timeout(10):
        await done.wait()
    assert len(closed_on) == 1
    assert closed_on[0].startswith("test-close")


async def test_a_worker_never_used_starts_no_thread() -> None:
    before = {t.name for t in threading.enumerate()}
    worker = SQLiteWorker("test-idle")
    await worker.aclose(wait=True)
    assert not any(
        t.name.startswith("test-idle")
        for t in threading.enumerate()
        if t.name not in before
    )
    assert repr(worker) == "<SQLiteWorker test-idle closed>"


def test_every_sqlite_user_runs_on_the_one_worker() -> None:
    # The checkpoint store, routed storage, the sqlite connectors and the ws
    # journal once each had a thread pool of their own; a module that calls
    # sqlite3.connect now leaves the thread to SQLiteWorker.
    root = Path(__file__).resolve().parents[2]
    users = [
        path
        for base in ("flowstream", "connectors")
        for path in sorted((root / base).rglob("*.py"))
        if "sqlite3.connect(" in path.read_text()
    ]
    assert len(users) >= 4
    own_threads = [
        str(path.relative_to(root))
        for path in users
        if "ThreadPoolExecutor" in path.read_text()
        or "run_in_executor" in path.read_text()
    ]
    assert own_threads == []
