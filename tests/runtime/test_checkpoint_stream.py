from __future__ import annotations

import asyncio
import random
import sqlite3
import subprocess
import sys
from contextlib import closing
from typing import TYPE_CHECKING, Any

from flowstream import FlowRuntime, Workflow, default_registry, node
from flowstream.core.workflow import Checkpoint
from flowstream.runtime.checkpointing import CheckpointStore, workflow_key
from tests.checkpoints import kill_at_random
from tests.local import local

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

N = 400_000  # long enough that a stop always lands mid-run, even under load


def counting(store: Path, n: int = N) -> Workflow:
    wf = (
        Workflow("counting", mode="stream")
        .node("numbers", "source.range", stop=n)
        .node("count", "transform.scan", op="count")
        .node("out", "sink.collect")
        .connect("numbers -> count")
        .connect("count -> out")
    )
    wf.checkpoint = Checkpoint(path=str(store), interval_ms=5)
    return wf


async def run_until_stopped(wf: Workflow, after_items: int) -> list[int]:
    runtime = FlowRuntime(default_registry(entry_points=False))
    executor = local(runtime.executor(wf, fuse=False))
    run = asyncio.ensure_future(executor.run())
    while not run.done():
        out = executor.statistics().get("out")
        if out is not None and out.items_in >= after_items:
            executor.stop()
            break
        await asyncio.sleep(0.001)
    result = await run
    assert result.ok, result.error
    return [r["value"] for r in result.output("out")]


async def test_a_stopped_stream_run_resumes_exactly_where_it_stopped(
    tmp_path: Path,
) -> None:
    store = tmp_path / "ckpt.db"
    first = await run_until_stopped(counting(store), after_items=5_000)
    assert 5_000 <= len(first) < N
    async with CheckpointStore(store) as ckpt:
        epoch, states = await ckpt.latest_epoch(workflow_key(counting(store)))
    assert epoch >= 1
    assert set(states) == {"numbers", "count"}

    second = await run_until_stopped(counting(store), after_items=N + 1)
    # The running count goes on from the checkpoint: nothing lost, nothing
    # counted twice, and the source resumed at its offset.
    assert first + second == list(range(1, N + 1))


async def test_epochs_commit_while_the_stream_runs(tmp_path: Path) -> None:
    store = tmp_path / "ckpt.db"
    wf = counting(store, n=10**8)  # runs until stopped
    runtime = FlowRuntime(default_registry(entry_points=False))
    executor = local(runtime.executor(wf, fuse=False))
    run = asyncio.ensure_future(executor.run())
    committed = 0
    while not run.done() and committed < 3:
        coord = executor._coord
        committed = coord.committed if coord is not None else 0
        await asyncio.sleep(0.001)
    executor.stop()
    result = await run
    assert result.ok, result.error
    assert committed >= 3


@node("test.interleave")
async def interleave(
    left: AsyncIterator[Any], right: AsyncIterator[Any]
) -> AsyncIterator[Any]:
    """Reads its two inputs itself, in its own order: nothing to align on."""
    async for x in left:
        yield x
        yield await anext(right)


def test_nodes_reading_several_inputs_themselves_are_refused(tmp_path: Path) -> None:
    wf = (
        Workflow("mix", mode="stream")
        .node("a", "source.range", stop=10)
        .node("b", "source.range", stop=10)
        .node("z", "test.interleave")
        .connect("a -> z.left")
        .connect("b -> z.right")
    )
    wf.checkpoint = Checkpoint(path=str(tmp_path / "c.db"))
    registry = default_registry(entry_points=False)
    registry.register(interleave)
    result = FlowRuntime(registry).run(wf, fuse=False)
    assert result.status == "failed"
    assert result.error is not None
    assert "align barriers across the inputs of node 'z'" in result.error
    assert "merge_batches" in result.error


RUNNER = """
import sys
from flowstream import FlowRuntime, Workflow, node, default_registry
from flowstream.core.workflow import Checkpoint

store, db, n, keys = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
wf = (
    Workflow("harness", mode="stream")
    .node("seq", "source.range", stop=n)
    .node("record", "transform.map", expr="{'key': x % " + str(keys) + ", 'seq': x}")
    .node("rows", "sqlite.sink", path=db, table="records", key=["key", "seq"])
    .node("count", "transform.scan", op="count", key="x.key")
    .node("counts", "sqlite.sink", path=db, table="counts", key="key")
    .connect("seq -> record")
    .connect("record -> rows")
    .connect("record -> count")
    .connect("count -> counts")
)
wf.checkpoint = Checkpoint(path=store, interval_ms=20)
result = FlowRuntime().run(wf, fuse=False)
print(result.status, result.stats["seq"].items_out, result.error)
sys.exit(0 if result.ok else 1)
"""


def test_kill_9_at_random_times_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    script = tmp_path / "runner.py"
    script.write_text(RUNNER)
    store, db = tmp_path / "ckpt.db", tmp_path / "out.db"
    n, keys = 150_000, 7
    args = [sys.executable, str(script), str(store), str(db), str(n), str(keys)]
    kills = kill_at_random(args, store, random.Random(1234), 3, 0.3)
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert kills >= 1, "no kill landed mid-run: make the run longer"
    # The last run resumed from a checkpoint: its source did not start over.
    status, emitted, _ = done.stdout.split(maxsplit=2)
    assert status == "completed"
    assert int(emitted) < n
    with closing(sqlite3.connect(db)) as conn:
        rows, distinct = conn.execute(
            "select count(*), count(distinct seq) from records"
        ).fetchone()
        counts = dict(conn.execute("select key, value from counts").fetchall())
        integrity = conn.execute("pragma integrity_check").fetchone()[0]
    with closing(sqlite3.connect(store)) as conn:
        store_ok = conn.execute("pragma integrity_check").fetchone()[0]
    assert (rows, distinct) == (n, n)
    # Keyed counts live in checkpointed state: exact only if every kill
    # resumed from a consistent epoch (no item counted twice or lost).
    expected = {k: len(range(k, n, keys)) for k in range(keys)}
    assert {int(k): v for k, v in counts.items()} == expected
    assert integrity == store_ok == "ok"
