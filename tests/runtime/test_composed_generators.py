"""Consecutive user generators in one segment are composed item by item.

`flowstream.runtime.local.stages.composed_stage` hands items from one user
``@node`` generator to the next with no batch between them; these tests pin
that every node's counts, failures and cleanup stay exactly as they are for
unfused nodes.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import pytest

from flowstream import (
    ContinueOnError,
    FlowRuntime,
    NodeContext,
    Workflow,
    default_registry,
    node,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

CLOSED: list[str] = []


@node("c.double")
async def double(inp: AsyncIterator[int]) -> AsyncIterator[int]:
    try:
        async for x in inp:
            yield 2 * x
    finally:
        CLOSED.append("double")


@node("c.odd_thirds")
async def drop_thirds(inp: AsyncIterator[int]) -> AsyncIterator[int]:
    try:
        async for x in inp:
            if x % 3:
                yield x
    finally:
        CLOSED.append("drop_thirds")


@node("c.explode_at_8")
async def explode_at_8(inp: AsyncIterator[int]) -> AsyncIterator[int]:
    async for x in inp:
        if x == 8:
            msg = f"cannot take {x}"
            raise ValueError(msg)
        yield x


@node("c.first_two")
async def first_two(inp: AsyncIterator[int]) -> AsyncIterator[int]:
    n = 0
    async for x in inp:
        yield x
        n += 1
        if n == 2:
            return


@node("c.tell", outputs=("told",))
async def tell(inp: AsyncIterator[int], *, ctx: NodeContext) -> AsyncIterator[int]:
    async for x in inp:
        ctx.emit("told", -x)
        yield x


GATE: list[asyncio.Event] = []
BATCHES: list[int] = []


@node("c.wait_after_3")
async def wait_after_3(inp: AsyncIterator[int]) -> AsyncIterator[int]:
    """Passes items on; after the third, waits until someone downstream saw it."""
    async for x in inp:
        yield x
        if x == 4:  # the third item (after c.double)
            async with asyncio.timeout(10):
                await GATE[0].wait()


@node("c.open_at_8", batched=True)
async def open_at_8(inp: AsyncIterator[list[int]]) -> AsyncIterator[list[int]]:
    async for batch in inp:
        BATCHES.append(len(batch))
        if 8 in batch:
            GATE[0].set()
        yield batch


@node("c.times_3000")
async def times_3000(inp: AsyncIterator[int]) -> AsyncIterator[int]:
    async for x in inp:
        for _ in range(3000):
            yield x


@pytest.fixture
def runtime() -> FlowRuntime:
    CLOSED.clear()
    GATE[:] = [asyncio.Event()]
    BATCHES.clear()
    reg = default_registry(entry_points=False)
    specs = (double, drop_thirds, explode_at_8, first_two, tell)
    for spec in (*specs, wait_after_3, open_at_8, times_3000):
        reg.register(spec)
    return FlowRuntime(reg)


def chain(*types: str, stop: int = 10, **extra: Any) -> Workflow:
    wf = Workflow("chain").node("src", "source.range", stop=stop)
    prev = "src"
    for i, t in enumerate(types):
        wf.node(f"n{i}", t, **extra.get(f"n{i}", {}))
        wf.connect(f"{prev} -> n{i}")
        prev = f"n{i}"
    return wf.node("out", "sink.collect").connect(f"{prev} -> out")


@pytest.mark.parametrize("fuse", [True, False], ids=["fused", "unfused"])
async def test_counts_are_exact_for_every_node(
    runtime: FlowRuntime, fuse: bool
) -> None:
    wf = chain("c.double", "c.odd_thirds", "c.double")
    result = await runtime.arun(wf, fuse=fuse)
    assert result.ok, result.error
    assert result.output("out") == [4, 8, 16, 20, 28, 32]
    stats = result.stats
    assert (stats["n0"].items_in, stats["n0"].items_out) == (10, 10)
    assert (stats["n1"].items_in, stats["n1"].items_out) == (10, 6)
    assert (stats["n2"].items_in, stats["n2"].items_out) == (6, 6)
    assert sorted(CLOSED) == ["double", "double", "drop_thirds"]


@pytest.mark.parametrize("fuse", [True, False], ids=["fused", "unfused"])
async def test_a_node_that_stops_early_is_counted_and_everyone_is_closed(
    runtime: FlowRuntime, fuse: bool
) -> None:
    wf = chain("c.double", "c.first_two", "c.odd_thirds")
    result = await runtime.arun(wf, fuse=fuse)
    assert result.ok, result.error
    assert result.output("out") == [2]
    assert result.stats["n1"].items_out == 2
    assert result.stats["n2"].items_in == 2
    assert sorted(CLOSED) == ["double", "drop_thirds"]


@pytest.mark.parametrize("fuse", [True, False], ids=["fused", "unfused"])
async def test_a_failure_names_the_node_it_happened_in(
    runtime: FlowRuntime, fuse: bool
) -> None:
    wf = chain("c.double", "c.explode_at_8", "c.odd_thirds")
    result = await runtime.arun(wf, fuse=fuse)
    assert result.status == "failed"
    assert result.error is not None
    assert "'n1'" in result.error
    assert "cannot take 8" in result.error
    assert result.stats["n1"].errors == 1
    assert result.stats["n0"].errors == result.stats["n2"].errors == 0


async def test_a_failure_upstream_of_the_chain_is_not_pinned_on_it(
    runtime: FlowRuntime,
) -> None:
    wf = (
        Workflow("up")
        .node("src", "source.values", values=[1, 2, "x", 4])
        .node("m", "transform.map", expr="x * 2")
        .node("a", "c.double")
        .node("b", "c.double")
        .node("out", "sink.collect")
        .connect("src -> m")
        .connect("m -> a")
        .connect("a -> b")
        .connect("b -> out")
    )
    result = await runtime.arun(wf)
    assert result.status == "failed"
    assert result.error is not None
    assert "'m'" in result.error
    assert result.stats["a"].errors == result.stats["b"].errors == 0


async def test_nodes_with_their_own_policies_still_replay(runtime: FlowRuntime) -> None:
    # continue_on_error needs each node's own failing item: not composed.
    wf = chain(
        "c.double",
        "c.explode_at_8",
        "c.double",
        n1={"error_handling": ContinueOnError()},
    )
    result = await runtime.arun(wf)
    assert result.ok, result.error
    assert [d.item for d in result.dead_letters] == [8]
    assert result.output("out") == [0, 4, 8, 12, 20, 24, 28, 32, 36]


async def test_side_outputs_of_composed_nodes_arrive(runtime: FlowRuntime) -> None:
    wf = chain("c.tell", "c.double", stop=4)
    wf.node("told", "sink.collect").connect("n0.told -> told")
    result = await runtime.arun(wf)
    assert result.ok, result.error
    assert result.output("out") == [0, 2, 4, 6]
    assert result.output("told") == [0, -1, -2, -3]


async def test_what_a_chain_made_leaves_before_it_waits(runtime: FlowRuntime) -> None:
    # n1 waits (on a real future) for the batch node after the chain to see
    # its third item: only if the chain hands on what it made before waiting.
    wf = chain("c.double", "c.wait_after_3", "c.double", "c.open_at_8", stop=5)
    # The chain is n0..n2, composed; n3 is a batch node after it.
    result = await runtime.arun(wf)
    assert result.ok, result.error
    assert result.output("out") == [0, 4, 8, 12, 16]
    stats = result.stats
    assert [stats[f"n{i}"].items_out for i in range(4)] == [5, 5, 5, 5]
    assert [stats[f"n{i}"].items_in for i in range(4)] == [5, 5, 5, 5]


async def test_a_chain_that_multiplies_its_items_leaves_bounded_batches(
    runtime: FlowRuntime,
) -> None:
    wf = chain("c.times_3000", "c.double", "c.open_at_8", stop=3)
    result = await runtime.arun(wf)
    assert result.ok, result.error
    assert len(result.output("out")) == 9000
    assert sum(BATCHES) == 9000
    assert max(BATCHES) <= 1024  # stages.MAX_BATCH
    assert result.stats["n0"].items_out == result.stats["n1"].items_in == 9000
