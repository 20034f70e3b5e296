"""sink.collect's bound (``max_items``) and sink.null, in every mode."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from flowstream import FlowRuntime, Workflow, default_registry
from flowstream.errors import WorkflowValidationError
from flowstream.runtime.local import collecting


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
    runtime = FlowRuntime(default_registry(entry_points=False))
    return await runtime.arun(wf, fuse=fuse, mode=mode)


async def test_past_max_items_it_keeps_the_newest_and_counts_the_rest(
    fuse: bool, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="flowstream.node.out"):
        result = await run(flow(50, max_items=10), fuse, mode)
    assert result.ok, result.error
    assert result.output("out") == list(range(41, 51))
    assert result.outputs_dropped == {"out": 40}
    # The first drop is logged once, naming the node and the bound.
    warnings = [r for r in caplog.records if r.name == "flowstream.node.out"]
    assert len(warnings) == 1
    assert "max_items=10 reached" in warnings[0].getMessage()


async def test_max_items_reached_but_not_passed_drops_nothing(
    fuse: bool, mode: str
) -> None:
    result = await run(flow(10, max_items=10), fuse, mode)
    assert result.ok, result.error
    assert result.output("out") == list(range(1, 11))
    assert result.outputs_dropped == {}


@pytest.fixture
def default_bound(monkeypatch: pytest.MonkeyPatch) -> int:
    """The stream-mode default, made small so a test need not make a million."""
    monkeypatch.setattr(collecting, "STREAM_MAX_ITEMS", 100)
    return 100


async def test_stream_mode_is_bounded_by_default(default_bound: int) -> None:
    result = await run(flow(default_bound + 5), True, "stream")
    assert result.ok, result.error
    out = result.output("out")
    assert len(out) == default_bound
    assert out[0] == 6
    assert out[-1] == default_bound + 5
    assert result.outputs_dropped == {"out": 5}


async def test_dag_mode_is_unbounded_by_default(default_bound: int) -> None:
    result = await run(flow(default_bound + 1), True, "dag")
    assert result.ok, result.error
    assert len(result.output("out")) == default_bound + 1
    assert result.outputs_dropped == {}


async def test_null_max_items_is_unbounded_in_stream_mode(default_bound: int) -> None:
    result = await run(flow(default_bound + 1, max_items=None), True, "stream")
    assert result.ok, result.error
    assert len(result.output("out")) == default_bound + 1
    assert result.outputs_dropped == {}


async def test_parallel_instances_share_one_bound() -> None:
    wf = (
        Workflow("collect")
        .node("src", "source.range", stop=40)
        .node("out", "sink.collect", max_items=30, parallelism=2)
        .connect("src -> out")
    )
    result = await run(wf, True, "stream")
    assert result.ok, result.error
    out = result.output("out")
    assert len(out) == 30
    assert set(out) <= set(range(40))
    # Counted under the declared node, whichever instance pushed them out.
    assert result.outputs_dropped == {"out": 10}


def test_max_items_below_one_is_refused_naming_the_node() -> None:
    runtime = FlowRuntime(default_registry(entry_points=False))
    with pytest.raises(WorkflowValidationError) as info:
        runtime.validate(flow(10, max_items=0))
    assert "out" in str(info.value)
    assert "max_items must be >= 1" in str(info.value)
