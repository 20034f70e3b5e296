"""A graceful stop that lands while a source is between two pulls.

A source's loop checks for a stop, then may yield to the event loop (every
``YIELD_EVERY`` seconds, to let others run) before it waits for its next
batch. A stop that runs in that window used to find no pull to interrupt,
and the source then waited on its input for good (an open pipe with no
data): the drain timed out and the run was cancelled. On a loaded machine
that window is hit by chance (tests/connectors/test_stdio.py flaked so);
here every turn yields, so it is hit every time.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import pytest

from flowstream import FlowRuntime, NodeContext, Workflow, default_registry, node
from flowstream.runtime.local import segments

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from flowstream.runtime.protocol import Executor

running: list[Executor] = []


class Waiting:
    """One batch, then waits for more that never comes (an open, idle pipe)."""

    async def initialize(self, ctx: NodeContext) -> None:
        pass

    async def execute(self, *, ctx: NodeContext) -> AsyncIterator[list[Any]]:
        yield [1, 2]
        await asyncio.Event().wait()

    async def shutdown(self) -> None:
        pass


class StopsOnFirst:
    """Asks the run to stop when it takes its first batch."""

    async def initialize(self, ctx: NodeContext) -> None:
        pass

    async def execute(
        self, inp: AsyncIterator[list[Any]], *, ctx: NodeContext
    ) -> AsyncIterator[list[Any]]:
        async for batch in inp:
            running[0].stop()
            yield batch

    async def shutdown(self) -> None:
        pass


waiting = node("t.waiting", batched=True)(Waiting)
stops = node("t.stops", batched=True)(StopsOnFirst)


@pytest.mark.parametrize("fuse", [True, False])
async def test_a_stop_between_two_pulls_ends_the_source(
    monkeypatch: pytest.MonkeyPatch, fuse: bool
) -> None:
    # A loaded machine: every turn of the source's loop yields first.
    monkeypatch.setattr(segments, "YIELD_EVERY", -1.0)
    registry = default_registry(entry_points=False)
    registry.register_all([waiting, stops])
    wf = (
        Workflow("idle", mode="stream")
        .node("src", "t.waiting")
        .node("stop", "t.stops", fuse=False)
        .node("out", "sink.collect")
        .connect("src -> stop")
        .connect("stop -> out")
    )
    executor = FlowRuntime(registry).executor(wf, fuse=fuse, drain_timeout=5.0)
    running[:] = [executor]
    try:
        result = await executor.run()
    finally:
        running.clear()
    assert result.status == "completed", result.error
    assert result.stats["out"].items_in == 2
