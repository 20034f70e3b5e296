"""Sampled ``flowstream.batch`` spans in stream mode: attributes, parent, cap."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import pytest

from flowstream import EventBus, FlowRuntime
from flowstream.core.events import WorkflowCompleted, WorkflowStarted
from flowstream.core.workflow import parse_workflow
from flowstream.server import runs
from flowstream.server.metrics import BatchLatency
from flowstream.server.tracing import RunTracer

from .conftest import AUTH, finished, wait_for_run
from .test_batch_latency import HOLD_S, delayed, latency
from .test_observability import FakeSpan, FakeTracer

if TYPE_CHECKING:
    import httpx

MS = 1_000_000  # nanoseconds


def started(bus: EventBus, run_id: str = "r1") -> None:
    bus.publish(
        WorkflowStarted(
            run_id=run_id,
            timestamp=time.time(),
            workflow="w",
            mode="stream",
            nodes=2,
        )
    )


def completed(bus: EventBus, run_id: str = "r1") -> None:
    bus.publish(
        WorkflowCompleted(
            run_id=run_id, timestamp=time.time(), status="completed", duration_s=1.0
        )
    )


class SignallingTracer(FakeTracer):
    """Sets `batch_seen` when the first ``flowstream.batch`` span starts."""

    def __init__(self) -> None:
        super().__init__()
        self.batch_seen = asyncio.Event()

    def start_span(self, name: str, *args: Any, **kwargs: Any) -> FakeSpan:
        if name == "flowstream.batch":
            self.batch_seen.set()
        return super().start_span(name, *args, **kwargs)


def batches(tracer: FakeTracer, run_id: str | None = None) -> list[FakeSpan]:
    return [
        s
        for s in tracer.spans
        if s.name == "flowstream.batch"
        and (run_id is None or s.attributes["flowstream.run_id"] == run_id)
    ]


def run_span(tracer: FakeTracer, run_id: str) -> FakeSpan:
    (span,) = [
        s
        for s in tracer.spans
        if s.name == "flowstream.run" and s.attributes["flowstream.run_id"] == run_id
    ]
    return span


async def test_sampled_batches_are_spans_under_the_run() -> None:
    bus = EventBus()
    tracer = FakeTracer()
    spans = RunTracer(tracer, bus)
    result = await FlowRuntime(bus=bus).arun(
        parse_workflow(delayed(count=8)), batch_probe=spans.batch_probe, probe_every=1
    )
    spans.close()
    assert result.status == "completed"
    run = run_span(tracer, result.run_id)
    sampled = batches(tracer)
    assert sampled
    assert run.end_time is not None
    for span in sampled:
        assert run in span.parent.values()  # the run's span is the context's span
        nodes = span.attributes["flowstream.nodes"]
        assert nodes in {("tick",), ("later", "square", "out")}
        assert span.attributes["flowstream.node_id"] == nodes[0]
        assert span.attributes["flowstream.run_id"] == result.run_id
        assert span.end_time is not None
        # Epoch nanoseconds, inside the run (whose times come from events).
        assert run.start_time - 50 * MS <= span.start_time <= span.end_time
        assert span.end_time <= run.end_time
    ticks = [s for s in sampled if s.attributes["flowstream.node_id"] == "tick"]
    assert sum(s.attributes["flowstream.items"] for s in ticks) == 8
    later = [s for s in sampled if s.attributes["flowstream.node_id"] == "later"]
    # That task ends in a sink: it hands nothing downstream.
    assert {s.attributes["flowstream.items"] for s in later} == {0}
    held = [s.end_time - s.start_time for s in later if s.end_time is not None]
    assert sum(held) / len(held) >= HOLD_S * 0.9 * 1e9
    assert run.attributes["flowstream.batch_spans"] == len(sampled)
    assert run.attributes["flowstream.batch_spans_dropped"] == 0


def test_batch_times_are_mapped_to_epoch_nanoseconds() -> None:
    bus = EventBus()
    tracer = FakeTracer()
    spans = RunTracer(tracer, bus)
    started(bus)
    before = time.time_ns()
    now = time.perf_counter()
    spans.batch_probe(("a", "b"), 3, now - 0.25, now)
    after = time.time_ns()
    (span,) = batches(tracer)
    assert span.end_time is not None
    assert before - MS <= span.end_time <= after + MS
    assert span.end_time - span.start_time == pytest.approx(250 * MS, abs=MS / 1000)
    assert span.attributes == {
        "flowstream.run_id": "r1",
        "flowstream.node_id": "a",
        "flowstream.nodes": ("a", "b"),
        "flowstream.items": 3,
    }
    spans.close()


def test_batch_spans_are_capped_per_second() -> None:
    bus = EventBus()
    tracer = FakeTracer()
    spans = RunTracer(tracer, bus, max_batch_spans_per_s=5)
    now = time.perf_counter()
    spans.batch_probe(("a",), 1, now, now)  # before the run's span: ignored
    started(bus)
    for _ in range(100):  # a burst within one second
        spans.batch_probe(("a",), 1, now, now)
    assert len(batches(tracer)) == 5
    for _ in range(100):  # two seconds on: a fresh allowance
        spans.batch_probe(("a",), 1, now + 2, now + 2)
    assert len(batches(tracer)) == 10
    assert (spans.batch_spans, spans.batch_spans_dropped) == (10, 190)
    completed(bus)
    run = run_span(tracer, "r1")
    assert run.attributes["flowstream.batch_spans"] == 10
    assert run.attributes["flowstream.batch_spans_dropped"] == 190
    spans.batch_probe(("a",), 1, now + 4, now + 4)  # after the run: ignored
    assert len(batches(tracer)) == 10
    spans.close()


async def test_server_traces_batches_in_stream_mode_only(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    tracer = SignallingTracer()
    monkeypatch.setattr(runs, "tracer_for_runs", lambda: tracer)
    await client.put("/api/workflows/delayed", json=delayed(), headers=AUTH)
    r = await client.post("/api/workflows/delayed/runs", headers=AUTH)
    stream_id = r.json()["run_id"]
    async with asyncio.timeout(5):  # one batch in 16 per task is sampled
        await tracer.batch_seen.wait()
    await client.post(f"/api/runs/{stream_id}/stop", headers=AUTH)
    await wait_for_run(client, stream_id, finished)
    stream_run = run_span(tracer, stream_id)
    for span in batches(tracer, stream_id):
        assert stream_run in span.parent.values()
        assert span.attributes["flowstream.node_id"] in {"tick", "later"}

    # The same graph as a DAG: 48 batches per task, so batches are sampled
    # (the latency histogram shows them) but make no spans.
    dag = {**delayed(count=48), "name": "dag", "mode": "dag"}
    await client.put("/api/workflows/dag", json=dag, headers=AUTH)
    r = await client.post("/api/workflows/dag/runs", headers=AUTH)
    dag_id = r.json()["run_id"]
    detail = await wait_for_run(client, dag_id, finished)
    assert detail["status"] == "completed"
    assert latency((await client.get("/metrics")).text, "dag")["later"]["count"] > 0
    dag_spans = [
        s for s in tracer.spans if s.attributes.get("flowstream.run_id") == dag_id
    ]
    # Per node execution in DAG mode, and no batch spans.
    assert {s.name for s in dag_spans} == {"flowstream.run", "flowstream.node"}
    assert "flowstream.batch_spans" not in run_span(tracer, dag_id).attributes


async def test_without_tracing_only_the_metrics_probe_runs(
    client: httpx.AsyncClient,
) -> None:
    await client.put("/api/workflows/delayed", json=delayed(), headers=AUTH)
    r = await client.post("/api/workflows/delayed/runs", headers=AUTH)
    run_id = r.json()["run_id"]
    app: Any = client._transport.app  # type: ignore[attr-defined]
    live = app.state.flowstream.runs.live(run_id)
    assert live.tracer is None
    assert isinstance(live.executor.options.batch_probe, BatchLatency)
    await client.post(f"/api/runs/{run_id}/cancel", headers=AUTH)
    await wait_for_run(client, run_id, finished)
