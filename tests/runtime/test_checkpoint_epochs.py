"""The checkpoint store describes epochs (duration, size) and restores."""

from __future__ import annotations

import sqlite3
import time
from typing import TYPE_CHECKING

import msgspec

from flowstream.runtime.checkpointing import CheckpointStore
from flowstream.runtime.checkpointing.records import EPOCH_LOG

if TYPE_CHECKING:
    from pathlib import Path

# The schema of stores written before epochs had a start and a size.
OLD_SCHEMA = """
create table runs (
    run_key text primary key, workflow text not null, status text not null,
    started real not null, updated real not null,
    attempts integer not null default 1
);
create table epochs (
    run_key text not null references runs(run_key) on delete cascade,
    epoch integer not null, committed real not null, states blob not null,
    primary key (run_key, epoch)
);
"""


async def test_epochs_have_duration_and_size(tmp_path: Path) -> None:
    states = {"count": b"\x81\xa1n\x05", "src": b"\x81\xa6offset\x0c"}
    size = len(msgspec.msgpack.encode(states))
    async with CheckpointStore(tmp_path / "c.db") as store:
        await store.begin("k", "wf")
        began = time.time() - 0.25
        await store.commit_epoch("k", 1, states, began)
        [run] = await store.runs()
    [epoch] = run.epochs
    assert epoch.epoch == 1
    assert epoch.size == size
    assert epoch.started == began
    assert 0.25 <= epoch.duration_s < 5.0
    assert run.epoch == 1
    assert run.restored is None


async def test_the_epoch_log_is_bounded(tmp_path: Path) -> None:
    async with CheckpointStore(tmp_path / "c.db") as store:
        await store.begin("k", "wf")
        for epoch in range(1, EPOCH_LOG + 6):
            await store.commit_epoch("k", epoch, {"n": bytes(epoch)})
        [run] = await store.runs()
    numbers = [e.epoch for e in run.epochs]
    assert numbers == list(range(EPOCH_LOG + 5, 5, -1))  # newest first
    assert [e.size for e in run.epochs][:2] != [e.size for e in run.epochs][-2:]


async def test_a_resumed_run_is_running_again(tmp_path: Path) -> None:
    async with CheckpointStore(tmp_path / "c.db") as store:
        await store.begin("k", "wf")
        await store.commit_epoch("k", 1, {})
        await store.finish("k", "stopped")
        [before] = await store.runs()
        assert before.status == "stopped"
        await store.begin("k", "wf")
        [after] = await store.runs()
    assert after.status == "running"
    assert after.attempts == 2
    assert after.restored is not None
    assert after.restored >= before.updated


async def test_an_old_store_gains_the_columns(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript(OLD_SCHEMA)
    blob = msgspec.msgpack.encode({"n": b"\x01"})
    conn.execute("insert into runs values ('k', 'wf', 'stopped', 1.0, 2.0, 1)")
    conn.execute("insert into epochs values ('k', 3, 2.0, ?)", (blob,))
    conn.commit()
    conn.close()
    async with CheckpointStore(path) as store:
        [old] = await store.runs()
        assert old.epoch == 3
        assert old.epochs == []  # committed before the store kept a log
        await store.begin("k", "wf")
        assert await store.latest_epoch("k") == (3, {"n": b"\x01"})
        await store.commit_epoch("k", 4, {"n": b"\x02"}, time.time())
        [run] = await store.runs()
    assert run.status == "running"
    assert [e.epoch for e in run.epochs] == [4]
    conn = sqlite3.connect(path)
    try:
        row = conn.execute("select size from epochs where epoch = 4").fetchone()
    finally:
        conn.close()
    assert row[0] == run.epochs[0].size > 0
