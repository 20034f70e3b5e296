from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import pytest

from flowstream import default_registry
from flowstream.core.workflow import Workflow
from flowstream.errors import WorkflowValidationError
from flowstream.nodes import time as time_nodes
from flowstream.runtime.validation import validate
from flowstream.testing import assert_emits, run_virtual, run_workflow

from .test_transform import at_times, docstring_example, stamp

if TYPE_CHECKING:
    from flowstream.runtime.registry import NodeRegistry


def registry() -> NodeRegistry:
    reg = default_registry(entry_points=False)
    for spec in (time_nodes.delay, at_times, stamp):
        reg.register(spec, replace=True)
    return reg


def delayed(config: dict[str, Any], events: list[Any], **options: Any) -> list[Any]:
    wf = (
        Workflow("t")
        .node("src", "test.at", events=events)
        .node("n", "time.delay", config)
        .node("stamp", "test.stamp")
        .connect("src -> n")
        .connect("n -> stamp")
    )
    result = run_virtual(run_workflow(wf, registry(), **options))
    assert result.status == "completed", result.error
    return result.output("stamp")


def test_docstring_example_runs() -> None:
    decl, inp, out = docstring_example(time_nodes.delay)
    assert "stream-safe" in (time_nodes.delay.fn.__doc__ or "").lower()
    run_virtual(assert_emits(time_nodes.delay, inp, out, decl["config"]))


def test_delay_is_timed() -> None:
    assert time_nodes.delay.timed
    assert not time_nodes.delay.needs_end


@pytest.mark.parametrize("fuse", [True, False], ids=["fused", "unfused"])
def test_each_item_is_held_for_ms_from_its_arrival(fuse: bool) -> None:
    events = [[0, "a"], [0, "b"], [1, "c"], [1.25, "d"], [3, "e"]]
    got = delayed({"ms": 500}, events, fuse=fuse)
    assert got == [
        [0.5, "a"],
        [0.5, "b"],
        [1.5, "c"],
        [1.75, "d"],
        [3.5, "e"],
    ]


def test_items_held_at_end_of_input_still_come_out_on_time() -> None:
    got = delayed({"ms": 10_000}, [[0, 1], [2, 2]])
    assert got == [[10.0, 1], [12.0, 2]]


def test_zero_delay_passes_items_straight_through() -> None:
    got = delayed({"ms": 0}, [[0, 1], [0, 2], [1, 3]])
    assert got == [[0.0, 1], [0.0, 2], [1.0, 3]]


def test_a_burst_is_delayed_once_in_order() -> None:
    got = delayed({"ms": 100}, [[0, i] for i in range(5000)])
    assert [x for _, x in got] == list(range(5000))
    assert {t for t, _ in got} == {0.1}


def test_max_pending_stops_reading_until_the_oldest_is_due() -> None:
    got = delayed({"ms": 1000, "max_pending": 1}, [[0, "a"], [0, "b"], [0, "c"]])
    assert got == [[1.0, "a"], [2.0, "b"], [3.0, "c"]]


def test_stream_mode() -> None:
    wf = (
        Workflow("s", mode="stream")
        .node("src", "source.values", values=[1, 2, 3])
        .node("n", "time.delay", ms=5)
        .node("sink", "sink.collect")
        .connect("src -> n")
        .connect("n -> sink")
    )
    result = run_virtual(run_workflow(wf, registry()))
    assert result.output("sink") == [1, 2, 3]


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({}, "ms"),
        ({"ms": -1}, "ms must be a finite number >= 0"),
        ({"ms": math.inf}, "ms must be a finite number >= 0"),
        ({"ms": math.nan}, "ms must be a finite number >= 0"),
        ({"ms": "soon"}, "config.ms"),
        ({"ms": 1, "max_pending": 0}, "max_pending must be >= 1"),
        ({"ms": 1, "seconds": 1}, "seconds"),
    ],
)
def test_bad_config_names_node_and_field(config: dict[str, Any], expected: str) -> None:
    wf = (
        Workflow("t")
        .node("src", "source.values", values=[1])
        .node("n", "time.delay", config)
        .connect("src -> n")
    )
    with pytest.raises(WorkflowValidationError) as info:
        validate(wf, registry())
    [problem] = info.value.problems
    assert problem.node == "n"
    assert expected in str(problem)
