"""Barrier alignment across the input ports of a multi-input node.

Two sources feed the two ports of one node, one of them through a slow
stage, so their barriers reach it far apart. Every committed epoch must be a
consistent cut: the keyed counts behind the merge equal exactly what each
source had emitted at that epoch (its offset) — an oracle that needs no
second run.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
from contextlib import closing
from typing import TYPE_CHECKING, Any

import pytest

from flowstream import FlowRuntime, NodeRegistry, Workflow, default_registry, node
from flowstream.core.workflow import Checkpoint
from flowstream.runtime.checkpointing import workflow_key
from tests.checkpoints import latest_epoch
from tests.local import local

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path


@node("test.slow", batched=True)
async def slow(inp: AsyncIterator[list[Any]]) -> AsyncIterator[list[Any]]:
    """Let every batch through after a short sleep: the slow input."""
    async for batch in inp:
        await asyncio.sleep(0.002)
        yield batch


def two_inputs(store: Path, n: int, node_type: str = "control.merge") -> Workflow:
    wf = (
        Workflow("align", mode="stream")
        .node("a", "source.range", stop=n)
        .node("b", "source.range", stop=n)
        .node("tag_a", "transform.map", expr="{'src': 'a', 'x': x}")
        .node("tag_b", "transform.map", expr="{'src': 'b', 'x': x}")
        .node("slow", "test.slow")
        .node("both", node_type, inputs=["fast", "slow"])
        .node("count", "transform.scan", op="count", key="x.src")
        .node("out", "sink.null")
        .connect("a -> tag_a")
        .connect("b -> tag_b")
        .connect("tag_b -> slow")
        .connect("tag_a -> both.fast")
        .connect("slow -> both.slow")
        .connect("both -> count")
        .connect("count -> out")
    )
    wf.checkpoint = Checkpoint(path=str(store), interval_ms=3)
    return wf


def read_epoch(store: Path, wf: Workflow) -> tuple[int, dict[str, Any]]:
    return latest_epoch(store, workflow_key(wf))


def registry() -> NodeRegistry:
    reg = default_registry(entry_points=False)
    reg.register(slow)
    return reg


def assert_consistent(states: dict[str, Any]) -> tuple[int, int]:
    """The counts behind the merge equal what the sources had emitted."""
    offsets = (
        states.get("a", {}).get("offset", 0),
        states.get("b", {}).get("offset", 0),
    )
    accs = states.get("count", {}).get("accs", {})
    assert (accs.get("a", 0), accs.get("b", 0)) == offsets, (accs, offsets)
    return offsets


@pytest.mark.parametrize("fuse", [True, False])
async def test_every_committed_epoch_is_a_consistent_cut(
    tmp_path: Path, fuse: bool
) -> None:
    store = tmp_path / "c.db"
    n = 10**8  # runs until stopped
    wf = two_inputs(store, n)
    executor = local(FlowRuntime(registry()).executor(wf, fuse=fuse))
    run = asyncio.ensure_future(executor.run())
    checked: set[int] = set()
    while not run.done() and len(checked) < 25:
        await asyncio.sleep(0.004)
        epoch, states = await asyncio.to_thread(read_epoch, store, wf)
        if epoch > 0 and epoch not in checked:
            checked.add(epoch)
            assert_consistent(states)
    executor.stop()
    result = await run
    assert result.ok, result.error
    assert len(checked) >= 25
    _, states = read_epoch(store, wf)  # the final checkpoint after the drain
    assert_consistent(states)
    assert executor.state.nodes["count"]["accs"] == {
        "a": states["a"]["offset"],
        "b": states["b"]["offset"],
    }


async def test_join_lookup_runs_under_checkpoints(tmp_path: Path) -> None:
    wf = (
        Workflow("lookup", mode="stream")
        .node("users", "source.values", values=[{"id": 1, "name": "ann"}])
        .node("events", "source.range", stop=2_000)
        .node("keyed", "transform.map", expr="{'user': 1, 'n': x}")
        .node("enrich", "join.lookup", key="x.user", table_key="x.id")
        .node("out", "sink.collect")
        .connect("users -> enrich.table")
        .connect("events -> keyed")
        .connect("keyed -> enrich.in")
        .connect("enrich -> out")
    )
    wf.checkpoint = Checkpoint(path=str(tmp_path / "c.db"), interval_ms=2)
    result = await FlowRuntime(registry()).executor(wf).run()
    assert result.ok, result.error
    out = result.output("out")
    assert [r["item"]["n"] for r in out] == list(range(2_000))


RUNNER = """
import asyncio, json, sys
from flowstream import FlowRuntime
sys.path.insert(0, sys.argv[3])
from test_checkpoint_align import registry, two_inputs
from pathlib import Path

wf = two_inputs(Path(sys.argv[1]), int(sys.argv[2]))
executor = FlowRuntime(registry()).executor(wf)
result = asyncio.run(executor.run())
assert result.ok, result.error
print(json.dumps(executor.state.nodes["count"]["accs"]))
"""


def test_killed_during_alignment_resumes_from_a_consistent_epoch(
    tmp_path: Path,
) -> None:
    store = tmp_path / "c.db"
    script = tmp_path / "runner.py"
    script.write_text(RUNNER)
    n = 100_000
    here = os.path.dirname(__file__)
    args = [sys.executable, str(script), str(store), str(n), here]
    # The first snapshot of epoch 5 is a source's: the slow input's barrier
    # is still on its way to the merge when the process dies.
    env = {**os.environ, "FLOWSTREAM_FAULT": "snapshot@5"}
    killed = subprocess.run(args, env=env, capture_output=True, timeout=60)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    wf = two_inputs(store, n)
    epoch, states = read_epoch(store, wf)
    assert epoch == 4
    assert_consistent(states)
    with closing(sqlite3.connect(store)) as conn:
        assert conn.execute("pragma integrity_check").fetchone()[0] == "ok"

    done = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    # Resumed from epoch 4's counts and offsets: every item counted once.
    assert json.loads(done.stdout) == {"a": n, "b": n}


async def test_items_held_by_time_delay_are_part_of_the_epoch(tmp_path: Path) -> None:
    # A node that holds items across a barrier (they came before it, leave
    # after it) must keep them in the snapshot, or a crash loses them.
    store = tmp_path / "c.db"
    wf = (
        Workflow("held", mode="stream")
        .node("numbers", "source.range", stop=10**8)
        .node("later", "time.delay", ms=20)
        .node("count", "transform.scan", op="count")
        .node("out", "sink.null")
        .connect("numbers -> later")
        .connect("later -> count")
        .connect("count -> out")
    )
    wf.checkpoint = Checkpoint(path=str(store), interval_ms=3)
    executor = local(FlowRuntime(registry()).executor(wf))
    run = asyncio.ensure_future(executor.run())
    holding = 0
    seen: set[int] = set()
    while not run.done() and len(seen) < 10:
        await asyncio.sleep(0.004)
        epoch, states = await asyncio.to_thread(read_epoch, store, wf)
        if epoch > 0 and epoch not in seen:
            seen.add(epoch)
            offset = states["numbers"]["offset"]
            held = states.get("later", {}).get("held", [])
            counted = states.get("count", {}).get("accs", {}).get("\x00null", 0)
            holding += bool(held)
            # Everything the source emitted is either counted or held.
            assert counted + len(held) == offset, (counted, len(held), offset)
    executor.stop()
    result = await run
    assert result.ok, result.error
    assert holding > 0


@pytest.mark.parametrize("fuse", [True, False])
async def test_zip_keeps_unpaired_items_in_the_epoch(
    tmp_path: Path, fuse: bool
) -> None:
    # zip pairs the n-th items of two sources, one behind a slow stage: at a
    # barrier, items of the fast input still waiting for their partner are
    # part of the epoch's state.
    store = tmp_path / "c.db"
    wf = (
        Workflow("zipped", mode="stream")
        .node("a", "source.range", stop=10**8)
        .node("b", "source.range", stop=10**8)
        .node("slow", "test.slow")
        .node("pairs", "control.zip", inputs=["fast", "slow"], as_dict=True)
        .node("count", "transform.scan", op="count")
        .node("out", "sink.null")
        # Unequal paths: the inputs run at different paces between barriers.
        .connect("b -> slow", capacity=3)
        .connect("a -> pairs.fast")
        .connect("slow -> pairs.slow")
        .connect("pairs -> count")
        .connect("count -> out")
    )
    wf.checkpoint = Checkpoint(path=str(store), interval_ms=3)
    executor = local(FlowRuntime(registry()).executor(wf, fuse=fuse))
    run = asyncio.ensure_future(executor.run())
    seen: set[int] = set()
    waiting = 0
    while not run.done() and len(seen) < 15:
        await asyncio.sleep(0.004)
        epoch, states = await asyncio.to_thread(read_epoch, store, wf)
        if epoch > 0 and epoch not in seen:
            seen.add(epoch)
            pairs = states.get("count", {}).get("accs", {}).get("\x00null", 0)
            fast, slow_ = states.get("pairs", {}).get("\x00queued", [[], []])
            waiting += bool(fast or slow_)
            assert pairs + len(fast) == states["a"]["offset"]
            assert pairs + len(slow_) == states["b"]["offset"]
            assert fast == list(range(pairs, pairs + len(fast)))
    executor.stop()
    result = await run
    assert result.ok, result.error
    assert waiting > 0
