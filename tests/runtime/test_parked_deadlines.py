"""Deadlines of a node's generator while its earlier output is delivered.

`stepping.rebatch` flushes a node's items when its generator is about to
wait, and holds that generator step suspended while the segment delivers
them. A deadline that falls due meanwhile must not cancel the delivery: the
built-in timed waits (`next_item`, under ``time.delay``, windows, batching)
wake their own wait instead of cancelling the task; a node's own
``asyncio.timeout`` cannot be redirected, so the run fails naming the node
rather than losing the segment and hanging.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from flowstream import FlowRuntime, Workflow, default_registry, node

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

N = 200


@node("test.trickle", batched=True)
async def trickle() -> AsyncIterator[list[int]]:
    """0..N-1 one at a time, a little apart: a delay always holds some."""
    for i in range(N):
        yield [i]
        await asyncio.sleep(0.0005)


@node("test.slow_pass", batched=True)
async def slow_pass(inp: AsyncIterator[list[Any]]) -> AsyncIterator[list[Any]]:
    """Each batch through after 3 ms: a consumer the producer waits for."""
    async for batch in inp:
        await asyncio.sleep(0.003)
        yield batch


@node("test.guarded")
async def guarded(inp: AsyncIterator[int]) -> AsyncIterator[int]:
    """Each item, then an await under a deadline of the node's own."""
    async for x in inp:
        yield x
        async with asyncio.timeout(0.002):
            await asyncio.sleep(0.001)


def registry() -> Any:
    reg = default_registry(entry_points=False)
    reg.register_all([trickle, slow_pass, guarded])
    return reg


def behind_a_slow_consumer(middle: str, **config: Any) -> Workflow:
    return (
        Workflow("parked")
        .node("src", "test.trickle")
        .node("mid", middle, **config)
        .node("slow", "test.slow_pass")
        .node("out", "sink.collect")
        .connect("src -> mid")
        .connect("mid -> slow")
        .connect("slow -> out")
    )


async def test_time_delay_behind_a_slow_consumer_delivers_everything() -> None:
    # Capacity 1: delivering the delay's items waits for the slow consumer,
    # while the delay's step is held in its wait for the next due item.
    wf = behind_a_slow_consumer("time.delay", ms=1)
    async with asyncio.timeout(30):  # a lost segment would hang the run
        result = await FlowRuntime(registry()).arun(wf, fuse=False, capacity=1)
    assert result.ok, result.error
    assert result.output("out") == list(range(N))


async def test_a_nodes_own_deadline_while_delivering_fails_the_run_by_name() -> None:
    wf = behind_a_slow_consumer("test.guarded")
    async with asyncio.timeout(30):
        result = await FlowRuntime(registry()).arun(wf, fuse=False, capacity=1)
    assert not result.ok
    assert result.error is not None
    assert "node 'mid' was cancelled while nothing stopped the run" in result.error
    assert "asyncio.wait" in result.error
