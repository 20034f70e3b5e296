"""One-shot async nodes with ``concurrency: N``: calls in flight at once.

`flowstream.runtime.local.stages.concurrent_call_stage` runs up to N calls
of one node at once, in input order or as they finish, with retries and
dead letters per item, and never lets a checkpoint barrier pass a call in
flight.
"""

from __future__ import annotations

import asyncio
import sys
import types
from typing import Any

import pytest

from flowstream import ContinueOnError, FlowRuntime, Workflow, default_registry
from flowstream.core.workflow import Checkpoint
from flowstream.errors import WorkflowValidationError

calls = types.ModuleType("fs_test_calls")
sys.modules["fs_test_calls"] = calls


class Gauge:
    running = 0
    peak = 0


async def slow_double(x: int) -> int:
    Gauge.running += 1
    Gauge.peak = max(Gauge.peak, Gauge.running)
    try:
        # Later items finish first: input order and finish order differ.
        for _ in range(20 - x % 20):
            await asyncio.sleep(0)
        if x == 13:
            msg = "thirteen"
            raise ValueError(msg)
        return 2 * x
    finally:
        Gauge.running -= 1


calls.slow_double = slow_double  # type: ignore[attr-defined]


@pytest.fixture
def runtime() -> FlowRuntime:
    Gauge.running = Gauge.peak = 0
    return FlowRuntime(default_registry(entry_points=False))


def workflow(concurrency: int, ordered: bool = True, **decl: Any) -> Workflow:
    return (
        Workflow("calls")
        .node("src", "source.range", stop=40)
        .node(
            "m",
            "transform.map_async",
            fn="fs_test_calls:slow_double",
            concurrency=concurrency,
            ordered=ordered,
            error_handling=ContinueOnError(),
            **decl,
        )
        .node("out", "sink.collect")
        .connect("src -> m")
        .connect("m -> out")
    )


EXPECTED = [2 * x for x in range(40) if x != 13]


async def test_calls_run_at_once_up_to_the_bound_in_input_order(
    runtime: FlowRuntime,
) -> None:
    result = await runtime.arun(workflow(8))
    assert result.ok, result.error
    assert result.output("out") == EXPECTED
    assert Gauge.peak == 8
    assert [d.item for d in result.dead_letters] == [13]
    assert result.stats["m"].items_in == 40
    assert result.stats["m"].items_out == 39


async def test_unordered_results_come_as_calls_finish(runtime: FlowRuntime) -> None:
    result = await runtime.arun(workflow(8, ordered=False))
    assert result.ok, result.error
    out = result.output("out")
    assert sorted(out) == EXPECTED
    assert out != EXPECTED  # later items finished first
    assert Gauge.peak == 8


async def test_one_call_at_a_time_by_default(runtime: FlowRuntime) -> None:
    result = await runtime.arun(workflow(1))
    assert result.ok, result.error
    assert result.output("out") == EXPECTED
    assert Gauge.peak == 1


def test_concurrency_is_refused_where_it_means_nothing(runtime: FlowRuntime) -> None:
    wf = (
        Workflow("bad")
        .node("src", "source.range", stop=3, concurrency=4)
        .node("m", "transform.map", expr="x", concurrency=2)
        .node("out", "sink.collect")
        .connect("src -> m")
        .connect("m -> out")
    )
    with pytest.raises(WorkflowValidationError) as caught:
        runtime.validate(wf)
    fields = {(p.node, p.field) for p in caught.value.problems}
    assert fields == {("src", "concurrency"), ("m", "concurrency")}


async def test_a_stream_checkpoint_never_cuts_calls_in_flight(
    runtime: FlowRuntime, tmp_path: Any
) -> None:
    wf = workflow(8)
    wf.mode = "stream"
    wf.checkpoint = Checkpoint(path=str(tmp_path / "cp.db"), interval_ms=1)
    result = await runtime.arun(wf)
    assert result.ok, result.error
    assert result.output("out") == EXPECTED
