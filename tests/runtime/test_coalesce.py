"""A node that coalesces takes the batches waiting in its channel in one.

`NodeSpec.coalesce`: Ray's ``runtime.send`` uses it so that batches queued
behind a full credit window cross in one push. Nothing is lost, reordered
or moved across a control message (a checkpoint barrier) or an error.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import pytest

from flowstream import FlowRuntime, Workflow, default_registry
from flowstream.core.node import node
from flowstream.runtime.channel import open_channel
from flowstream.runtime.checkpointing.coordinator import Barrier
from flowstream.runtime.local.segments import _coalesced

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from flowstream.runtime.context import NodeRuntime


class Taken:
    """Counts what `_coalesced` says was taken (as NodeRuntime.took does)."""

    def __init__(self) -> None:
        self.items = 0

    def took(self, items: int) -> None:
        self.items += items


def rt() -> NodeRuntime:
    return Taken()  # type: ignore[return-value]


async def test_the_waiting_batches_come_along_up_to_the_limit() -> None:
    send, recv = open_channel[int](8)
    for batch in ([2, 3], [4], [5, 6, 7], [8]):
        send.send_nowait(batch)
    taken = Taken()
    first = [1]
    batch, after = _coalesced(recv, taken, first, limit=5)  # type: ignore[arg-type]
    assert (batch, after) == ([1, 2, 3, 4, 5, 6, 7], None)
    assert taken.items == 6  # what it took off the channel (first was counted)
    assert first == [1]  # a new list: the sender's lists are not changed
    assert await recv.receive() == [8]
    send.close()
    recv.close()


async def test_a_control_message_stops_the_taking_and_keeps_its_place() -> None:
    send, recv = open_channel[int](8)
    send.send_nowait([2])
    barrier = Barrier(7)
    send.send_control(barrier)
    send.send_nowait([3])
    batch, after = _coalesced(recv, rt(), [1], limit=100)
    assert (batch, after) == ([1, 2], barrier)
    assert await recv.receive() == [3]
    send.close()
    recv.close()


async def test_a_producers_error_comes_after_its_batches() -> None:
    send, recv = open_channel[int](8)
    send.send_nowait([2])
    send.close(ValueError("upstream broke"))
    batch, after = _coalesced(recv, rt(), [1], limit=100)
    assert batch == [1, 2]
    assert isinstance(after, ValueError)
    recv.close()


async def test_nothing_waiting_leaves_the_batch_as_it_is() -> None:
    send, recv = open_channel[int](8)
    first = [1, 2]
    batch, after = _coalesced(recv, rt(), first, limit=100)
    assert batch is first
    assert after is None
    send.close()
    recv.close()


SIZES: list[int] = []


@node("test.small_batch_source", batched=True)
async def small_batch_source() -> AsyncIterator[list[int]]:
    """0..1999 in batches of 4, as fast as the channel takes them."""
    for i in range(0, 2000, 4):
        yield [i, i + 1, i + 2, i + 3]


@node("test.slow_coalescing_sink", batched=True, coalesce=64)
async def slow_coalescing_sink(inp: AsyncIterator[list[int]]) -> AsyncIterator[Any]:
    """Record each batch's size; take 1 ms per batch (a cost per batch)."""
    async for batch in inp:
        SIZES.append(len(batch))
        await asyncio.sleep(0.001)
        yield batch


async def test_a_node_that_falls_behind_gets_fewer_larger_batches() -> None:
    SIZES.clear()
    registry = default_registry(entry_points=False)
    registry.register_all([small_batch_source, slow_coalescing_sink])
    wf = (
        Workflow("coalesce")
        .node("src", "test.small_batch_source")
        .node("slow", "test.slow_coalescing_sink")
        .node("out", "sink.collect")
        .connect("src -> slow")
        .connect("slow -> out")
    )
    result = await FlowRuntime(registry).arun(wf, capacity=16)
    assert result.ok, result.error
    assert result.output("out") == list(range(2000))  # all, in order
    assert sum(SIZES) == 2000
    assert max(SIZES) <= 64 + 3  # the limit, overshot by less than a batch
    assert len(SIZES) < 500 / 4, SIZES[:20]  # 500 batches were sent
    assert result.stats["slow"].items_in == 2000


def test_coalesce_needs_a_batch_aware_node() -> None:
    async def per_item(inp: AsyncIterator[int]) -> AsyncIterator[int]:
        async for x in inp:
            yield x

    with pytest.raises(TypeError, match="coalesce needs batched=True"):
        node("test.per_item", coalesce=10)(per_item)
