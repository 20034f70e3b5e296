"""The per-item failure hook of batched nodes (`ItemFailed`).

A batch-aware node handles a batch in one loop; when item i fails it raises
``ItemFailed(i)`` from the item's error, and the runtime meets the node's
policies for that item alone, then goes on from i (retry) or i + 1.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec
import pytest

from flowstream import FlowRuntime, default_registry
from flowstream.core.node import ItemFailed, node
from flowstream.core.workflow import ContinueOnError, RetryPolicy, Workflow

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from flowstream.runtime.registry import NodeRegistry


class Picky(msgspec.Struct, frozen=True, kw_only=True):
    bad: list[int] = []
    fail_times: int = 1_000_000


@node("test.batch_total", batched=True)
async def batch_total(
    inp: AsyncIterator[list[int]], *, config: Picky, ctx: Any
) -> AsyncIterator[list[int]]:
    """Emit the running total after each item; items in ``bad`` fail."""
    state = ctx.state
    failures = state.setdefault("failures", {})
    async for batch in inp:
        out: list[int] = []
        for i, x in enumerate(batch):
            seen = failures.get(str(x), 0)
            if x in config.bad and seen < config.fail_times:
                failures[str(x)] = seen + 1
                if out:
                    yield out
                cause = ValueError(f"bad item {x}")
                raise ItemFailed(i) from cause
            state["total"] = state.get("total", 0) + x
            state["calls"] = state.get("calls", 0) + 1
            out.append(state["total"])
        yield out


def registry() -> NodeRegistry:
    reg = default_registry(entry_points=False)
    reg.register(batch_total)
    return reg


def flow(bad: list[int], **decl: Any) -> Workflow:
    return (
        Workflow("item-failed")
        .node("src", "source.values", values=list(range(10)))
        .node("n", "test.batch_total", bad=bad, **decl)
        .node("out", "sink.collect")
        .connect("src -> n")
        .connect("n -> out")
    )


def totals(items: list[int]) -> list[int]:
    out, total = [], 0
    for x in items:
        total += x
        out.append(total)
    return out


@pytest.mark.parametrize("fuse", [True, False])
async def test_only_the_failing_items_go_to_dead_letters(fuse: bool) -> None:
    runtime = FlowRuntime(registry())
    wf = flow([3, 4, 9], error_handling=ContinueOnError())
    result = await runtime.arun(wf, fuse=fuse)
    assert result.ok, result.error
    # Every other item handled exactly once, in order; the bad ones alone
    # set aside (two of them next to each other, one the batch's last).
    assert result.output("out") == totals([0, 1, 2, 5, 6, 7, 8])
    assert [d.item for d in result.dead_letters] == [3, 4, 9]
    assert all("ValueError: bad item" in d.reason for d in result.dead_letters)
    assert result.stats["n"].dead_letters == 3


@pytest.mark.parametrize("fuse", [True, False])
async def test_a_retried_item_is_tried_again_alone_with_its_own_budget(
    fuse: bool,
) -> None:
    delays: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        delays.append(seconds)

    runtime = FlowRuntime(registry())
    retry = RetryPolicy(max_attempts=3, delay_ms=100, backoff_multiplier=2)
    wf = flow([2, 6], fail_times=2, retry=retry)
    result = await runtime.arun(wf, fuse=fuse, sleep=fake_sleep)
    assert result.ok, result.error
    assert result.output("out") == totals(list(range(10)))
    # Each failing item starts a fresh budget: 2 retries each.
    assert delays == [0.1, 0.2, 0.1, 0.2]
    assert result.dead_letters == []


async def test_an_item_that_fails_for_good_fails_the_run_naming_it() -> None:
    runtime = FlowRuntime(registry())
    result = await runtime.arun(flow([5]))
    assert result.status == "failed"
    assert result.error is not None
    assert "'n'" in result.error
    assert "bad item 5" in result.error


async def test_reduce_sets_aside_a_bad_item_and_counts_the_rest_once() -> None:
    runtime = FlowRuntime(default_registry(entry_points=False))
    items = [{"k": "a", "n": 1}, {"k": "a", "n": 2}, {"k": "a", "n": "x"}]
    items += [{"k": "b", "n": 4}, {"k": "a", "n": 8}]
    wf = (
        Workflow("reduce-bad")
        .node("src", "source.values", values=items)
        .node(
            "r",
            "transform.reduce",
            op="max",
            key="x.k",
            value="x.n",
            error_handling=ContinueOnError(),
        )
        .node("out", "sink.collect")
        .connect("src -> r")
        .connect("r -> out")
    )
    result = await runtime.arun(wf)
    assert result.ok, result.error
    assert result.output("out") == [{"key": "a", "value": 8}, {"key": "b", "value": 4}]
    assert [d.item for d in result.dead_letters] == [{"k": "a", "n": "x"}]
