"""A side port wired into a one-shot node called directly is refused.

One-shot nodes (``def f(x) -> y``) fed only by other one-shot nodes are
called in dependency order with their producers' ``out`` values: an edge
from any other port would silently carry nothing, so validation names it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import pytest

from flowstream import (
    ContinueOnError,
    FlowRuntime,
    NodeContext,
    Workflow,
    default_registry,
    node,
)
from flowstream.errors import WorkflowValidationError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


@node("t.one")
def one() -> int:
    return 1


@node("t.noisy", outputs=("side",))
def noisy(x: int, *, ctx: NodeContext) -> int:
    ctx.emit("side", x + 100)
    return x


@node("t.fails")
def fails(x: int) -> int:
    msg = f"no {x}"
    raise ValueError(msg)


@node("t.tenfold")
def tenfold(x: int) -> int:
    return x * 10


@node("t.evens", outputs=("even",))
async def evens(inp: AsyncIterator[int], *, ctx: NodeContext) -> AsyncIterator[int]:
    async for x in inp:
        if x % 2 == 0:
            ctx.emit("even", x)
        yield x


@pytest.fixture
def runtime() -> FlowRuntime:
    reg = default_registry()
    for spec in (one, noisy, fails, tenfold, evens):
        reg.register(spec)
    return FlowRuntime(reg)


@pytest.mark.parametrize("mode", ["dag", "stream"])
def test_a_side_port_into_a_direct_call_is_refused(
    runtime: FlowRuntime, mode: Literal["dag", "stream"]
) -> None:
    wf = (
        Workflow("w", mode=mode)
        .node("a", "t.one")
        .node("n", "t.noisy")
        .node("d", "t.tenfold")
        .connect("a -> n")
        .connect("n.side -> d")
    )
    with pytest.raises(WorkflowValidationError) as info:
        runtime.validate(wf)
    (problem,) = info.value.problems
    assert (problem.node, problem.field) == ("d", "in")
    assert "n.side -> d.in" in problem.message
    assert "would be dropped" in problem.message
    assert "control.merge" in problem.message


def test_an_error_port_into_a_direct_call_is_refused(runtime: FlowRuntime) -> None:
    wf = (
        Workflow("w")
        .node("a", "t.one")
        .node("f", "t.fails", error_handling=ContinueOnError())
        .node("d", "t.tenfold")
        .connect("a -> f")
        .connect("f.error -> d")
    )
    with pytest.raises(WorkflowValidationError, match=r"f\.error -> d\.in"):
        runtime.validate(wf)


async def test_through_a_stream_node_the_side_values_arrive(
    runtime: FlowRuntime,
) -> None:
    # What the problem says to do, done: the values reach the one-shot node.
    wf = (
        Workflow("w")
        .node("a", "t.one")
        .node("n", "t.noisy")
        .node("m", "control.merge", inputs=["side"])
        .node("d", "t.tenfold")
        .connect("a -> n")
        .connect("n.side -> m.side")
        .connect("m -> d")
    )
    result = await runtime.arun(wf)
    assert result.status == "completed", result.error
    assert result.outputs["d"] == {"out": [1010]}


async def test_a_side_port_of_a_stream_node_feeds_a_call(
    runtime: FlowRuntime,
) -> None:
    # A one-shot node fed by a stream node is not called directly: it gets
    # the side port's values and validation lets it be.
    wf = (
        Workflow("w")
        .node("nums", "source.values", values=[1, 2, 3, 4])
        .node("e", "t.evens")
        .node("d", "t.tenfold")
        .connect("nums -> e")
        .connect("e.even -> d")
    )
    result = await runtime.arun(wf)
    assert result.status == "completed", result.error
    assert result.outputs["d"] == {"out": [20, 40]}
