"""Rates read from counters: recent while running, average once ended."""

from __future__ import annotations

import asyncio
import time

import pytest

from flowstream import FlowRuntime, default_registry
from flowstream.core.events import NodeCompleted
from flowstream.core.workflow import Workflow
from flowstream.runtime.events import EventBus
from flowstream.runtime.rates import MIN_SPAN_S, STEP_S, WINDOW_S, RateMeter, average


def test_a_stopped_source_reads_zero_within_a_window() -> None:
    # 14 items/s for 10 s, then nothing: the average since start would drift
    # 14 -> 9 -> 7; the recent rate is 14 while it flows and 0 a window later.
    meter = RateMeter(started=100.0)
    got = {}
    for tenth in range(1, 201):
        t = 100.0 + tenth / 10
        items = min(tenth, 100) * 14 // 10  # 14/s until t=110
        got[round(t - 100.0, 1)] = meter.read(t, items, items)
    assert got[9.0][0] == pytest.approx(14.0, abs=0.5)
    assert got[10.0 + WINDOW_S + STEP_S] == (0.0, 0.0)
    assert got[20.0] == (0.0, 0.0)


def test_no_rate_over_less_than_a_second() -> None:
    meter = RateMeter(started=5.0)
    assert meter.read(5.0004, 10, 10) == (None, None)
    assert meter.read(5.0 + MIN_SPAN_S / 2, 10, 10) == (None, None)
    assert meter.read(5.0 + MIN_SPAN_S, 10, 20) == (10.0, 20.0)
    assert average(10, 0.0004) is None
    assert average(10, 2.0) == 5.0


def test_sparse_readings_measure_since_the_previous_one() -> None:
    # Readings 30 s apart: each rate covers the 30 s since the last reading.
    meter = RateMeter(started=0.0)
    assert meter.read(30.0, 300, 0) == (10.0, 0.0)
    assert meter.read(60.0, 330, 0) == (1.0, 0.0)


def test_dense_readings_stay_bounded() -> None:
    meter = RateMeter(started=0.0)
    for i in range(1, 100_001):
        meter.read(i / 1000, i, i)
    assert len(meter._readings) <= WINDOW_S / STEP_S + 2
    rate_in, _ = meter.read(100.0, 100_000, 100_000)
    assert rate_in == pytest.approx(1000.0, rel=0.01)


@pytest.fixture
def runtime() -> FlowRuntime:
    return FlowRuntime(default_registry(entry_points=False), EventBus())


def test_a_ten_item_dag_reports_no_rate_not_thousands(runtime: FlowRuntime) -> None:
    wf = (
        Workflow("ten")
        .node("numbers", "source.range", stop=10)
        .node("double", "transform.map", expr="x * 2")
        .node("out", "sink.collect")
        .connect("numbers -> double")
        .connect("double -> out")
    )
    result = runtime.run(wf)
    assert result.status == "completed", result.error
    for node_id, stats in result.stats.items():
        assert stats.duration_s < MIN_SPAN_S, node_id
        assert stats.rate_in is None, node_id
        assert stats.rate_out is None, node_id
    assert result.stats["out"].items_in == 10


async def test_a_finished_run_reports_its_average_not_zero(
    runtime: FlowRuntime,
) -> None:
    # 30 ticks 40 ms apart: a run of about 1.2 s, over the one-second floor.
    wf = (
        Workflow("ticks", mode="stream")
        .node("tick", "source.timer", interval_ms=40, count=30)
        .node("out", "sink.collect")
        .connect("tick -> out")
    )
    completed: list[NodeCompleted] = []
    runtime.bus.add_listener(
        lambda e: completed.append(e) if isinstance(e, NodeCompleted) else None
    )
    executor = runtime.executor(wf)
    run = asyncio.ensure_future(executor.run())
    # While it runs, reading the counters gives a recent rate once a second
    # has passed (and none before).
    deadline = time.monotonic() + 30
    live = None
    while live is None and time.monotonic() < deadline and not run.done():
        stats = executor.statistics().get("tick")
        if stats is not None and stats.rate_out is not None:
            live = stats
        else:
            await asyncio.sleep(0.05)
    result = await run
    assert result.status == "completed", result.error
    if live is not None and live.rate_out is not None:  # a slow machine may end first
        assert 0 < live.rate_out <= live.items_out / MIN_SPAN_S
    tick = result.stats["tick"]
    assert tick.items_out == 30
    assert tick.duration_s >= MIN_SPAN_S
    assert tick.rate_out == pytest.approx(30 / tick.duration_s)
    sink = result.stats["out"]
    assert sink.rate_in == pytest.approx(30 / sink.duration_s)
    by_node = {e.node_id: e.stats for e in completed}
    assert by_node["tick"].rate_out is not None
    assert by_node["tick"].rate_out > 0
