"""Event-time nodes report their watermark; parallel instances name themselves."""

from __future__ import annotations

import pytest

from flowstream import FlowRuntime, Workflow
from flowstream.core.events import (
    NodeCompleted,
    NodeStarted,
    decode_event,
    encode_event,
)
from flowstream.core.workflow import ContinueOnError
from flowstream.runtime.events import EventBus


def windowed(lateness: int = 0) -> Workflow:
    return (
        Workflow("windows")
        .node(
            "src",
            "source.values",
            values=[{"ts": t, "n": 1} for t in (1000, 2500, 1800, 4200)],
        )
        .node(
            "win",
            "window.tumbling",
            size_ms=1000,
            time="event",
            timestamp_field="ts",
            allowed_lateness_ms=lateness,
            op="count",
        )
        .node("tally", "transform.map", expr="x")
        .node("out", "sink.collect")
        .connect("src -> win")
        .connect("win -> tally")
        .connect("tally -> out")
    )


@pytest.mark.parametrize("lateness", [0, 700])
def test_an_event_time_window_reports_its_watermark(lateness: int) -> None:
    result = FlowRuntime().run(windowed(lateness))
    assert result.ok, result.error
    # The largest event time seen, minus the allowed lateness.
    assert result.stats["win"].watermark_ms == 4200 - lateness
    # Nodes with no event time have none.
    assert result.stats["tally"].watermark_ms is None
    assert result.stats["src"].watermark_ms is None


def test_a_processing_time_window_has_no_watermark() -> None:
    wf = (
        Workflow("clock")
        .node("src", "source.values", values=[1, 2, 3])
        .node("win", "window.tumbling", size_ms=1000, op="count")
        .node("out", "sink.collect")
        .connect("src -> win")
        .connect("win -> out")
    )
    result = FlowRuntime().run(wf)
    assert result.ok, result.error
    assert result.stats["win"].watermark_ms is None


def test_an_interval_join_reports_the_lower_input_watermark() -> None:
    wf = (
        Workflow("joined")
        .node("l", "source.values", values=[{"k": 1, "t": 100}, {"k": 1, "t": 900}])
        .node("r", "source.values", values=[{"k": 1, "t": 300}])
        .node(
            "j",
            "join.interval",
            left_key="x.k",
            right_key="x.k",
            left_time="x.t",
            right_time="x.t",
            upper_ms=500,
        )
        .node("out", "sink.collect")
        .connect("l -> j.left")
        .connect("r -> j.right")
        .connect("j -> out")
    )
    result = FlowRuntime().run(wf)
    assert result.ok, result.error
    # Both inputs ended: nothing more can come, the watermark is +inf,
    # which is no watermark to show.
    assert result.stats["j"].watermark_ms is None


def test_stats_events_and_dead_letters_name_the_instance() -> None:
    wf = (
        Workflow("counted")
        .node("src", "source.range", stop=40)
        .node(
            "count",
            "transform.map",
            expr="100 / (x % 10)",  # every tenth item divides by zero
            parallelism=2,
            error_handling=ContinueOnError(),
        )
        .node("out", "sink.collect")
        .connect("src -> count")
        .connect("count -> out")
    )
    events: list[object] = []
    bus = EventBus()
    bus.add_listener(events.append)
    result = FlowRuntime(bus=bus).run(wf)
    assert result.ok, result.error
    for i in (0, 1):
        st = result.stats[f"count[{i}]"]
        assert (st.instance_of, st.instance) == ("count", i)
    assert result.stats["src"].instance_of is None
    started = {
        e.node_id: (e.instance_of, e.instance)
        for e in events
        if isinstance(e, NodeStarted)
    }
    assert started["count[1]"] == ("count", 1)
    assert started["src"] == (None, None)
    completed = [e for e in events if isinstance(e, NodeCompleted)]
    one = next(e for e in completed if e.node_id == "count[0]")
    assert decode_event(encode_event(one)) == one
    letters = result.dead_letters
    assert len(letters) == 4
    for d in letters:
        assert d.node_id == "count"
        assert d.instances == 2
        assert d.where == f"node 'count' (instance {d.instance} of 2)"
    assert {d.instance for d in letters} <= {0, 1}
