"""Nodes' checkpoint hooks: on_barrier before the snapshot, on_commit after."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import msgspec
import pytest

from flowstream import FlowRuntime, Workflow, default_registry, node
from flowstream.core.workflow import Checkpoint
from flowstream.runtime.checkpointing import CheckpointStore, workflow_key
from flowstream.runtime.checkpointing.faults import POINTS, fault_point

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from flowstream.core.node import NodeContext

LOG: list[tuple[str, int, int]] = []


@node("test.hooked_sink")
async def hooked_sink(
    inp: AsyncIterator[Any], *, ctx: NodeContext
) -> AsyncIterator[Any]:
    seen = 0

    async def barrier(epoch: int) -> None:
        await asyncio.sleep(0)  # hooks may suspend
        ctx.state["seen_at_barrier"] = seen
        LOG.append(("barrier", epoch, seen))

    def commit(epoch: int) -> None:
        LOG.append(("commit", epoch, ctx.state["seen_at_barrier"]))

    LOG.append(("start", ctx.restored_epoch, ctx.state.get("seen_at_barrier", 0)))
    assert ctx.checkpointing
    ctx.on_barrier(barrier)
    ctx.on_commit(commit)
    async for _ in inp:
        seen += 1
    if False:
        yield


def workflow(store: Path, n: int) -> Workflow:
    wf = (
        Workflow("hooks", mode="stream")
        .node("numbers", "source.range", stop=n)
        .node("sink", "test.hooked_sink")
        .connect("numbers -> sink")
    )
    wf.checkpoint = Checkpoint(path=str(store), interval_ms=2)
    return wf


async def run_until(wf: Workflow, commits: int) -> None:
    registry = default_registry(entry_points=False)
    registry.register(hooked_sink)
    executor = FlowRuntime(registry).executor(wf, fuse=False)
    run = asyncio.ensure_future(executor.run())
    while not run.done():
        if sum(e[0] == "commit" for e in LOG) >= commits:
            break
        await asyncio.sleep(0.001)
    executor.stop()
    result = await run
    assert result.ok, result.error


async def test_barrier_hooks_run_before_the_snapshot_and_commit_hooks_after(
    tmp_path: Path,
) -> None:
    LOG.clear()
    store = tmp_path / "c.db"
    await run_until(workflow(store, 10**8), commits=3)
    assert LOG[0] == ("start", 0, 0)
    barriers = [e for e in LOG if e[0] == "barrier"]
    commits = [e for e in LOG if e[0] == "commit"]
    # Every committed epoch was first seen by the barrier hook, in order,
    # and the commit hook sees the state the barrier hook left.
    assert [e[1] for e in commits] == [e[1] for e in barriers]
    assert commits == [("commit", e, seen) for _, e, seen in barriers]
    for b, c in zip(barriers, commits, strict=True):
        assert LOG.index(b) < LOG.index(c)
    async with CheckpointStore(store) as ckpt:
        epoch, _ = await ckpt.latest_epoch(workflow_key(workflow(store, 10**8)))
    assert epoch == commits[-1][1]
    last_seen = commits[-1][2]

    # A restart is told the epoch it resumed from, with that epoch's state.
    LOG.clear()
    await run_until(workflow(store, 10**8), commits=1)
    assert LOG[0] == ("start", epoch, last_seen)
    assert LOG[-1][0] == "commit"
    assert LOG[-1][1] > epoch


def test_an_unknown_fault_point_is_refused_by_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from flowstream.runtime.checkpointing import faults

    monkeypatch.setenv("FLOWSTREAM_FAULT", "after_comit@3")
    with pytest.raises(ValueError, match="unknown point 'after_comit'"):
        faults._armed()
    monkeypatch.setenv("FLOWSTREAM_FAULT", "after_commit@3")
    assert faults._armed() == ("after_commit", 3)
    assert "after_commit" in POINTS
    fault_point("after_commit", 3)  # not armed in this process: a no-op


@node("test.ticking_source", batched=True)
async def ticking_source(*, ctx: NodeContext) -> AsyncIterator[list[int]]:
    """A source that waits between batches and has a barrier hook."""
    ctx.on_barrier(lambda epoch: None)  # its epochs are marked between batches
    i = ctx.state.get("offset", 0)
    while True:
        await asyncio.sleep(0.001)
        batch = list(range(i, i + 10))
        i += 10
        ctx.state["offset"] = i
        yield batch


async def test_a_batch_pulled_while_an_epoch_is_due_goes_before_its_barrier(
    tmp_path: Path,
) -> None:
    # The source's state counts a batch as soon as it is pulled: that batch
    # must reach the downstream state before the barrier the state is
    # snapshotted with, or a restore would skip it.
    store = tmp_path / "c.db"
    wf = (
        Workflow("ticking", mode="stream")
        .node("ticks", "test.ticking_source")
        .node("count", "transform.scan", op="count")
        .node("out", "sink.null")
        .connect("ticks -> count")
        .connect("count -> out")
    )
    wf.checkpoint = Checkpoint(path=str(store), interval_ms=2)
    registry = default_registry(entry_points=False)
    registry.register(ticking_source)
    executor = FlowRuntime(registry).executor(wf, fuse=False)
    run = asyncio.ensure_future(executor.run())
    seen: set[int] = set()
    key = workflow_key(wf)
    while not run.done() and len(seen) < 20:
        await asyncio.sleep(0.003)
        async with CheckpointStore(store) as ckpt:
            epoch, blobs = await ckpt.latest_epoch(key)
        if epoch > 0 and epoch not in seen:
            seen.add(epoch)
            states = {k: msgspec.msgpack.decode(v) for k, v in blobs.items()}
            counted = states.get("count", {}).get("accs", {}).get("\x00null", 0)
            assert counted == states["ticks"]["offset"]
    executor.stop()
    result = await run
    assert result.ok, result.error
