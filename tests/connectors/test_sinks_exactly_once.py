"""file.sink and sqlite.sink roll back to their last checkpoint: exactly once."""

from __future__ import annotations

import csv
import json
import os
import random
import sqlite3
import subprocess
import sys
from contextlib import closing
from typing import TYPE_CHECKING, Any, cast

import pytest

from connectors.files import FileSink, FileSinkConfig
from connectors.sqlite import SqliteSink, SqliteSinkConfig
from flowstream.runtime.context import NodeRuntime, RunState, State
from flowstream.runtime.events import EventBus
from tests.checkpoints import kill_at_random

if TYPE_CHECKING:
    from pathlib import Path

    from flowstream.core.node import NodeContext


def context(
    state: dict[str, Any] | None = None, *, checkpointing: bool = True
) -> NodeRuntime:
    """The context of a node resumed from epoch 3 with ``state`` (or fresh)."""
    run_state = RunState()
    if state is not None:
        run_state.nodes["out"] = State(state)
    ctx = NodeRuntime(
        run_id="run",
        node_id="out",
        node_type="sink",
        run_state=run_state,
        bus=EventBus(),
        dead_letters=[],
        error_connected=False,
    )
    ctx.checkpointing = checkpointing
    ctx.restored_epoch = 3 if state is not None else 0
    return ctx


async def barrier(ctx: NodeRuntime, epoch: int) -> None:
    for hook in ctx.barrier_hooks:
        result = hook(epoch)
        if result is not None:
            await result


async def write(sink: FileSink | SqliteSink, ctx: NodeRuntime, *steps: Any) -> None:
    """Feed the sink batches (lists); an int is a barrier of that epoch.

    A barrier's hooks run while the sink waits for its next input, as in a run.
    """

    async def inp() -> Any:
        for step in steps:
            if isinstance(step, int):
                await barrier(ctx, step)
            else:
                yield step

    async for _ in sink.execute(inp(), ctx=cast("NodeContext", ctx)):
        pass


async def initialize(sink: FileSink | SqliteSink, ctx: NodeRuntime) -> None:
    # NodeRuntime is the runtime's NodeContext (its cached properties make it
    # one that mypy cannot see structurally).
    await sink.initialize(cast("NodeContext", ctx))


def rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(db)) as conn:
        return conn.execute(sql).fetchall()


# --- file.sink --------------------------------------------------------------------


async def test_file_sink_truncates_to_the_checkpointed_offset(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    committed = b'{"v":0}\n{"v":1}\n'
    path.write_bytes(committed + b'{"v":2}\n{"v":')  # an epoch never committed
    ctx = context({"offset": len(committed), "records": 2})
    async with FileSink(FileSinkConfig(path=str(path))) as sink:
        await initialize(sink, ctx)
        assert path.read_bytes() == committed
        await write(sink, ctx, [{"v": 2}, {"v": 3}])
        await barrier(ctx, 4)
        assert ctx.state == {"offset": path.stat().st_size, "records": 4}
    assert path.read_bytes() == committed + b'{"v":2}\n{"v":3}\n'


async def test_file_sink_barrier_fsyncs_what_it_wrote(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.fstat(fd).st_size)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    path = tmp_path / "out.jsonl"
    ctx = context()
    offsets: list[int] = []

    async def note(epoch: int) -> None:
        offsets.append(ctx.state["offset"])

    async with FileSink(FileSinkConfig(path=str(path))) as sink:
        await initialize(sink, ctx)
        ctx.on_barrier(note)
        await write(sink, ctx, 0, [{"v": 1}], 1, 2, [{"v": 22}], 3)
    one, two = len(b'{"v":1}\n'), len(b'{"v":1}\n{"v":22}\n')
    assert offsets == [0, one, one, two]
    # Synced at the barriers that had something new to sync, not at the end
    # of input (nothing new), nor at shutdown.
    assert synced == [one, two]


async def test_file_shorter_than_the_checkpoint_fails_clearly(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_bytes(b'{"v":0}\n')
    ctx = context({"offset": 100, "records": 10})
    sink = FileSink(FileSinkConfig(path=str(path)))
    with pytest.raises(ValueError, match="fewer than the 100") as info:
        await initialize(sink, ctx)
    assert str(path) in str(info.value)
    assert "changed outside the run" in str(info.value)
    assert sink._fd is None  # closed: a failed initialize gets no shutdown
    assert path.read_bytes() == b'{"v":0}\n'


async def test_csv_sink_keeps_its_columns_and_writes_no_second_header(
    tmp_path: Path,
) -> None:
    path = tmp_path / "out.csv"
    committed = b"1,a\n"  # header: false, columns from the first record
    path.write_bytes(committed + b"2,b\n3,")
    ctx = context({"offset": len(committed), "records": 1, "fields": ["n", "s"]})
    async with FileSink(FileSinkConfig(path=str(path), header=False)) as sink:
        await initialize(sink, ctx)
        await write(sink, ctx, [{"s": "b", "n": 2}])
        await barrier(ctx, 4)
    assert path.read_bytes() == b"1,a\n2,b\n"
    assert ctx.state["fields"] == ["n", "s"]


async def test_csv_sink_rolled_back_to_an_empty_file_writes_the_header(
    tmp_path: Path,
) -> None:
    path = tmp_path / "out.csv"
    path.write_bytes(b"n\n1\n")
    ctx = context({"offset": 0, "records": 0})
    async with FileSink(FileSinkConfig(path=str(path))) as sink:
        await initialize(sink, ctx)
        await write(sink, ctx, [{"n": 1}])
    assert path.read_bytes() == b"n\n1\n"


async def test_file_sink_without_checkpoints_appends_as_before(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_bytes(b'{"v":0}\n')
    ctx = context(checkpointing=False)
    async with FileSink(FileSinkConfig(path=str(path))) as sink:
        await initialize(sink, ctx)
        assert not ctx.barrier_hooks
        await write(sink, ctx, [{"v": 1}])
    assert path.read_bytes() == b'{"v":0}\n{"v":1}\n'


# --- sqlite.sink ------------------------------------------------------------------


def make_table(db: Path, ddl: str, count: int) -> None:
    with closing(sqlite3.connect(db)) as conn:
        conn.execute(ddl)
        conn.executemany("insert into t (v) values (?)", [(i,) for i in range(count)])
        conn.commit()


async def test_sqlite_sink_deletes_rows_after_the_checkpointed_rowid(
    tmp_path: Path,
) -> None:
    db = tmp_path / "out.db"
    make_table(db, "create table t (v integer)", 10)
    ctx = context({"rows": 6, "batches": 2, "rowid": 6})
    async with SqliteSink(SqliteSinkConfig(path=str(db), table="t")) as sink:
        await initialize(sink, ctx)
        assert rows(db, "select rowid, v from t") == [(i + 1, i) for i in range(6)]
        await write(sink, ctx, [{"v": 6}, {"v": 7}])
        await barrier(ctx, 4)
    assert ctx.state == {"rows": 8, "batches": 3, "rowid": 8}
    assert rows(db, "select v from t") == [(i,) for i in range(8)]


async def test_sqlite_sink_reads_the_rowid_behind_a_column_named_rowid(
    tmp_path: Path,
) -> None:
    db = tmp_path / "out.db"
    make_table(db, "create table t (rowid text, v integer)", 3)
    ctx = context({"rowid": 1})
    async with SqliteSink(SqliteSinkConfig(path=str(db), table="t")) as sink:
        await initialize(sink, ctx)
        await barrier(ctx, 4)
    assert rows(db, "select v from t") == [(0,)]
    assert ctx.state["rowid"] == 1


async def test_sqlite_sink_rolls_back_to_an_empty_or_missing_table(
    tmp_path: Path,
) -> None:
    db = tmp_path / "out.db"
    config = SqliteSinkConfig(path=str(db), table="t")
    # Checkpointed before the table existed; the table was never created.
    ctx = context({"rowid": 0})
    async with SqliteSink(config) as sink:
        await initialize(sink, ctx)
        await barrier(ctx, 4)
        assert ctx.state["rowid"] == 0
        await write(sink, ctx, [{"v": 0}, {"v": 1}])  # creates it
    # Checkpointed before the table existed; an uncommitted epoch created it.
    ctx = context({"rowid": 0})
    async with SqliteSink(config) as sink:
        await initialize(sink, ctx)
    assert rows(db, "select count(*) from t") == [(0,)]


async def test_sqlite_sink_refuses_a_without_rowid_table_with_no_key(
    tmp_path: Path,
) -> None:
    db = tmp_path / "out.db"
    make_table(db, "create table t (v integer primary key) without rowid", 3)
    sink = SqliteSink(SqliteSinkConfig(path=str(db), table="t"))
    with pytest.raises(
        ValueError, match=r"no rowid.*WITHOUT ROWID.*give the sink a key"
    ):
        await initialize(sink, context())
    assert sink._worker is None  # closed: a failed initialize gets no shutdown
    # With the key, replays are upserts: nothing to roll back, nothing refused.
    ctx = context({"rows": 1})
    async with SqliteSink(SqliteSinkConfig(path=str(db), table="t", key="v")) as sink:
        await initialize(sink, ctx)
        assert not ctx.barrier_hooks
        await write(sink, ctx, [{"v": 2}, {"v": 3}])
    assert rows(db, "select v from t") == [(0,), (1,), (2,), (3,)]


async def test_sqlite_sink_without_checkpoints_deletes_nothing(tmp_path: Path) -> None:
    db = tmp_path / "out.db"
    make_table(db, "create table t (v integer)", 3)
    ctx = context(checkpointing=False)
    async with SqliteSink(SqliteSinkConfig(path=str(db), table="t")) as sink:
        await initialize(sink, ctx)
        assert not ctx.barrier_hooks
        await write(sink, ctx, [{"v": 3}])
    assert rows(db, "select v from t") == [(i,) for i in range(4)]


# --- kill -9 ----------------------------------------------------------------------

RUNNER = """
import sys
from flowstream import FlowRuntime, Workflow
from flowstream.core.workflow import Checkpoint

store, out, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
wf = (
    Workflow("sinks", mode="stream")
    .node("seq", "source.range", stop=n)
    .node("record", "transform.map", expr="{'v': x}")
    .node("jsonl", "file.sink", path=out + "/out.jsonl")
    .node("csv", "file.sink", path=out + "/out.csv")
    .node("table", "sqlite.sink", path=out + "/out.db", table="records")
    .connect("seq -> record")
    .connect("record -> jsonl")
    .connect("record -> csv")
    .connect("record -> table")
)
wf.checkpoint = Checkpoint(path=store, interval_ms=20)
result = FlowRuntime().run(wf, fuse=False)
print(result.status, result.stats["seq"].items_out, result.error)
sys.exit(0 if result.ok else 1)
"""


def test_kill_9_leaves_each_record_exactly_once_in_files_and_table(
    tmp_path: Path,
) -> None:
    script = tmp_path / "runner.py"
    script.write_text(RUNNER)
    store, out = tmp_path / "ckpt.db", tmp_path / "out"
    out.mkdir()
    n = 150_000
    args = [sys.executable, str(script), str(store), str(out), str(n)]
    # Each restart has written past its checkpoint and must roll back.
    kills = kill_at_random(args, store, random.Random(4321), 3, 0.2)
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert kills >= 1, "no kill landed mid-run: make the run longer"
    status, emitted, _ = done.stdout.split(maxsplit=2)
    assert status == "completed"
    assert int(emitted) < n  # resumed from a checkpoint, not from the start

    lines = (out / "out.jsonl").read_text().splitlines()
    assert [json.loads(line)["v"] for line in lines] == list(range(n))
    with (out / "out.csv").open(newline="") as f:
        table = list(csv.reader(f))
    assert table[0] == ["v"]
    assert [int(v) for (v,) in table[1:]] == list(range(n))
    with closing(sqlite3.connect(out / "out.db")) as conn:
        count, distinct, low, high = conn.execute(
            "select count(*), count(distinct v), min(v), max(v) from records"
        ).fetchone()
        integrity = conn.execute("pragma integrity_check").fetchone()[0]
    assert (count, distinct, low, high) == (n, n, 0, n - 1)
    assert integrity == "ok"
