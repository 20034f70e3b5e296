"""Limits on Python nodes: ``timeout_ms`` per one-shot call, a run's memory budget."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from flowstream import (
    ContinueOnError,
    NodeRegistry,
    Workflow,
    default_registry,
    node,
    validate,
)
from flowstream.errors import WorkflowValidationError
from flowstream.runtime.budget import resident_bytes
from flowstream.testing import run_workflow


@node("test.slow_async")
async def slow_async(x: Any) -> Any:
    if x < 0:
        await asyncio.sleep(30)  # far past any limit the tests set
    return x


@node("test.slow_sync")
def slow_sync(x: Any) -> Any:
    if x < 0:
        time.sleep(0.05)  # a plain def cannot be interrupted: it runs over
    return x


@node("test.own_timeout")
async def own_timeout(x: Any) -> Any:
    msg = "the node's own"
    raise TimeoutError(msg)


@node("test.hoard", batched=True)
async def hoard(inp: Any) -> Any:
    kept = []
    async for batch in inp:
        kept.append(bytearray(4 << 20))  # 4 MB per batch, touched
        kept[-1][::4096] = b"x" * len(kept[-1][::4096])
        yield batch


@node("test.minus_one")
def minus_one() -> int:
    return -1


@node("test.drip", batched=True)
async def drip() -> Any:
    for i in range(400):
        yield [i]  # a batch per item: the budget is read between batches


def registry() -> NodeRegistry:
    reg = default_registry(entry_points=False)
    reg.register_all([slow_async, slow_sync, own_timeout, hoard, drip, minus_one])
    return reg


def one_shot(node_type: str, items: list[Any], timeout_ms: float) -> Workflow:
    return (
        Workflow("w")
        .node("src", "source.values", values=items)
        .node(
            "f",
            node_type,
            timeout_ms=timeout_ms,
            error_handling=ContinueOnError(),
        )
        .connect("src -> f")
    )


@pytest.mark.parametrize("fuse", [True, False])
async def test_an_async_call_over_its_timeout_fails_the_item_and_the_run_goes_on(
    fuse: bool,
):
    wf = one_shot("test.slow_async", [1, -1, 2], 30)
    result = await run_workflow(wf, registry(), fuse=fuse)
    assert result.ok, result.error
    assert result.output("f") == [1, 2]
    [dead] = result.dead_letters
    assert dead.item == -1
    assert dead.reason == (
        "TimeLimitExceeded: time limit exceeded: the call ran over timeout_ms=30"
    )


@pytest.mark.parametrize("node_type", ["test.slow_async", "test.slow_sync"])
async def test_the_timeout_holds_in_a_dag_of_one_shot_calls(node_type: str):
    # Every node a one-shot call: the DAG loop calls plain functions itself,
    # except those with a timeout, which go through failure handling.
    wf = (
        Workflow("w")
        .node("src", "test.minus_one")
        .node("f", node_type, timeout_ms=10, error_handling=ContinueOnError())
        .connect("src -> f")
    )
    result = await run_workflow(wf, registry())
    assert result.ok, result.error
    assert result.output("f") == []
    [dead] = result.dead_letters
    assert dead.item == -1
    assert "TimeLimitExceeded" in dead.reason


async def test_a_plain_function_over_its_timeout_has_its_result_discarded():
    wf = one_shot("test.slow_sync", [1, -1, 2], 10)
    result = await run_workflow(wf, registry())
    assert result.output("f") == [1, 2]
    assert [d.item for d in result.dead_letters] == [-1]
    assert "timeout_ms=10" in result.dead_letters[0].reason


async def test_the_node_s_own_timeout_error_is_not_the_limit():
    wf = one_shot("test.own_timeout", [1], 10_000)
    result = await run_workflow(wf, registry())
    [dead] = result.dead_letters
    assert dead.reason == "TimeoutError: the node's own"


async def test_a_timeout_under_stop_workflow_fails_the_run_naming_the_node():
    wf = (
        Workflow("w")
        .node("src", "source.values", values=[-1])
        .node("f", "test.slow_async", timeout_ms=20)
        .connect("src -> f")
    )
    result = await run_workflow(wf, registry())
    assert result.status == "failed"
    assert result.error is not None
    assert "'f'" in result.error
    assert "timeout_ms=20" in result.error


def test_timeout_ms_on_a_generator_node_is_refused():
    wf = (
        Workflow("w")
        .node("src", "source.values", values=[1])
        .node("f", "transform.map", expr="x", timeout_ms=5)
        .connect("src -> f")
    )
    with pytest.raises(WorkflowValidationError) as info:
        validate(wf, registry())
    [problem] = info.value.problems
    assert (problem.node, problem.field) == ("f", "timeout_ms")
    assert "one-shot" in problem.message


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf")])
def test_a_bad_timeout_or_budget_is_refused(bad: float):
    from flowstream.core.workflow import parse_workflow

    doc = {"name": "w", "nodes": [{"id": "a", "type": "x.y", "timeout_ms": bad}]}
    with pytest.raises(WorkflowValidationError, match="timeout_ms must be"):
        parse_workflow(doc)
    with pytest.raises(WorkflowValidationError, match="memory_budget_mb must be"):
        parse_workflow({"name": "w", "memory_budget_mb": bad})


async def test_a_run_past_its_memory_budget_stops_with_a_named_error():
    wf = Workflow("w", memory_budget_mb=24)
    wf.node("src", "test.drip")
    wf.node("h", "test.hoard").connect("src -> h")
    before = resident_bytes()
    result = await run_workflow(wf, registry())
    assert result.status == "failed"
    assert result.error is not None
    assert result.error.startswith("MemoryBudgetExceeded: the run grew")
    assert "memory_budget_mb=24" in result.error
    # Stopped near the budget, long before the 1.6 GB the run would hold.
    assert resident_bytes() - before < 400 << 20


async def test_a_run_within_its_budget_completes():
    wf = Workflow("w", memory_budget_mb=200)
    wf.node("src", "source.range", stop=3)
    wf.node("h", "test.hoard").connect("src -> h")
    result = await run_workflow(wf, registry())
    assert result.ok, result.error
    assert result.output("h") == [0, 1, 2]


def test_routed_workflows_refuse_the_limits_they_would_ignore():
    from flowstream.core.workflow import parse_workflow

    doc = {
        "name": "r",
        "mode": "routed",
        "memory_budget_mb": 10,
        "nodes": [{"id": "a", "type": "x.y", "timeout_ms": 5}],
    }
    with pytest.raises(WorkflowValidationError) as info:
        parse_workflow(doc)
    got = {(p.node, p.field) for p in info.value.problems}
    assert got == {(None, "memory_budget_mb"), ("a", "timeout_ms")}
