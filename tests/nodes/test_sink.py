"""sink.collect's bound (``max_items``) and sink.null, in every mode."""

from __future__ import annotations

from typing import Any

import pytest

from flowstream import FlowRuntime, NodeRegistry, Workflow
from flowstream.errors import WorkflowValidationError
from flowstream.runtime.local.collecting import STREAM_MAX_ITEMS


@pytest.fixture(params=["fused", "unfused"])
def fuse(request: pytest.FixtureRequest) -> bool:
    return bool(request.param == "fused")


@pytest.fixture(params=["dag", "stream"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def flow(stop: int, **config: Any) -> Workflow:
    return (
        Workflow("collect")
        .node("src", "source.range", stop=stop)
        .node("inc", "transform.map", expr="x + 1")
        .node("out", "sink.collect", config)
        .connect("src -> inc")
        .connect("inc -> out")
    )


async def run(wf: Workflow, fuse: bool, mode: str) -> Any:
    runtime = FlowRuntime(NodeRegistry.default(entry_points=False))
    return await runtime.arun(wf, fuse=fuse, mode=mode)


async def test_max_items_passed_fails_the_run_naming_node_and_bound(
    fuse: bool, mode: str
) -> None:
    result = await run(flow(50, max_items=10), fuse, mode)
    assert not result.ok
    assert "'out'" in str(result.error)
    assert "max_items=10 reached" in str(result.error)
    assert "StateLimitError" in str(result.error)
    # What it kept is the first max_items items, never a silent tail.
    assert result.output("out") == list(range(1, 11))


async def test_max_items_reached_but_not_passed_is_a_success(
    fuse: bool, mode: str
) -> None:
    result = await run(flow(10, max_items=10), fuse, mode)
    assert result.ok, result.error
    assert result.output("out") == list(range(1, 11))


async def test_stream_mode_is_bounded_by_default() -> None:
    result = await run(flow(STREAM_MAX_ITEMS + 1), True, "stream")
    assert not result.ok
    assert f"max_items={STREAM_MAX_ITEMS} reached" in str(result.error)
    assert len(result.output("out")) == STREAM_MAX_ITEMS


async def test_dag_mode_is_unbounded_by_default() -> None:
    result = await run(flow(STREAM_MAX_ITEMS + 1), True, "dag")
    assert result.ok, result.error
    assert len(result.output("out")) == STREAM_MAX_ITEMS + 1


async def test_null_max_items_is_unbounded_in_stream_mode() -> None:
    result = await run(flow(STREAM_MAX_ITEMS + 1, max_items=None), True, "stream")
    assert result.ok, result.error
    assert len(result.output("out")) == STREAM_MAX_ITEMS + 1


async def test_parallel_instances_share_one_bound() -> None:
    wf = (
        Workflow("collect")
        .node("src", "source.range", stop=40)
        .node("out", "sink.collect", max_items=30, parallelism=2)
        .connect("src -> out")
    )
    result = await run(wf, True, "stream")
    assert not result.ok
    assert "max_items=30 reached" in str(result.error)
    assert len(result.output("out")) == 30


def test_max_items_below_one_is_refused_naming_the_node() -> None:
    runtime = FlowRuntime(NodeRegistry.default(entry_points=False))
    with pytest.raises(WorkflowValidationError) as info:
        runtime.validate(flow(10, max_items=0))
    assert "out" in str(info.value)
    assert "max_items must be >= 1" in str(info.value)
