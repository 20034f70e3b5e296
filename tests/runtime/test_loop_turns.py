"""A segment whose input is always ready still gives the event loop turns.

A segment reading a channel that never runs dry, into one that never fills,
meets no await that suspends: it would hold the loop until its input ended,
and every other task of the process (stops, statistics polls, timers; on
Ray, the sends that feed the other processes) would wait that long. It gives
the loop a turn at least every ``segments.YIELD_EVERY`` seconds.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from flowstream import FlowRuntime, Workflow, default_registry, node

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

progress: list[int] = []
N = 300


@node("test.singles", batched=True)
async def singles() -> AsyncIterator[list[int]]:
    """0..N-1, one item per batch."""
    for i in range(N):
        yield [i]


@node("test.busy_map")
def busy_map(x: int) -> int:
    """About 2 ms of work per item, counted in `progress`."""
    end = time.perf_counter() + 0.002
    while time.perf_counter() < end:
        pass
    progress.append(x)
    return x


async def test_a_segment_with_a_ready_input_lets_other_tasks_run() -> None:
    registry = default_registry(entry_points=False)
    registry.register_all([singles, busy_map])
    n = N
    wf = (
        Workflow("busy")
        .node("src", "test.singles")
        .node("work", "test.busy_map")
        .node("out", "sink.collect")
        .connect("src -> work")
        .connect("work -> out")
    )
    progress.clear()
    seen: list[int] = []
    done = asyncio.Event()

    async def ticker() -> None:
        while not done.is_set():
            seen.append(len(progress))
            await asyncio.sleep(0)

    tick = asyncio.create_task(ticker())
    try:
        # Unfused, with room for the whole input: the source hands every
        # batch over at once and the map's segment never has to wait.
        result = await FlowRuntime(registry).arun(wf, fuse=False, capacity=2 * n)
    finally:
        done.set()
        await tick
    assert result.ok, result.error
    assert sorted(result.output("out")) == list(range(n))
    # ~0.6 s of work in 2 ms items: without the turns the ticker would see
    # the map before it started and after it ended, nothing in between.
    midway = {k for k in seen if 0 < k < n}
    assert len(midway) >= 10, sorted(midway)
