"""Metrics, traces and logs: hooked to events and statistics, never to nodes."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Any

from prometheus_client.parser import text_string_to_metric_families

from flowstream import EventBus, FlowRuntime, Workflow
from flowstream.server.logs import (
    JsonFormatter,
    RunContext,
    TextFormatter,
    current_run,
)
from flowstream.server.tracing import RunTracer, tracer_for_runs

from .conftest import AUTH, TICKS, finished, wait_for_run

if TYPE_CHECKING:
    import httpx
    import pytest


def families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def samples(family: Any, **labels: str) -> dict[str, float]:
    return {
        s.name: s.value
        for s in family.samples
        if all(s.labels.get(k) == v for k, v in labels.items())
    }


async def test_metrics_during_and_after_a_run(client: httpx.AsyncClient) -> None:
    await client.put("/api/workflows/ticks", json=TICKS, headers=AUTH)
    r = await client.post("/api/workflows/ticks/runs", headers=AUTH)
    run_id = r.json()["run_id"]
    await wait_for_run(client, run_id, lambda d: d["nodes"]["sink"]["items_in"] > 20)
    # The counters are sampled: wait for a reading that saw the sinks move.
    async with asyncio.timeout(10):
        while True:
            r = await client.get("/metrics")
            assert r.status_code == 200
            during = families(r.text)
            if samples(
                during["flowstream_node_items_in"], workflow="ticks", node="sink"
            ):
                break
            await asyncio.sleep(0.02)
    assert r.headers["content-type"].startswith("text/plain")

    node = {"workflow": "ticks", "node": "sink"}
    assert (
        samples(during["flowstream_node_items_in"], **node)[
            "flowstream_node_items_in_total"
        ]
        > 0
    )
    assert (
        samples(during["flowstream_node_items_out"], node="tick")[
            "flowstream_node_items_out_total"
        ]
        > 0
    )
    assert "flowstream_node_errors_total" in samples(
        during["flowstream_node_errors"], **node
    )
    assert "flowstream_node_dead_letters_total" in samples(
        during["flowstream_node_dead_letters"], **node
    )
    latency = samples(during["flowstream_batch_latency_seconds"], **node)
    assert latency["flowstream_batch_latency_seconds_count"] > 0
    fill = samples(
        during["flowstream_channel_fill_ratio"], run_id=run_id, node="sink", port="in"
    )
    assert 0 <= fill["flowstream_channel_fill_ratio"] <= 1
    assert during["flowstream_channel_buffered_batches"].samples
    assert samples(during["flowstream_runs"], status="running") == {
        "flowstream_runs": 1.0
    }
    dropped = samples(during["flowstream_events_dropped"], workflow="ticks")
    assert dropped["flowstream_events_dropped_total"] == 0

    await client.post(f"/api/runs/{run_id}/stop", headers=AUTH)
    detail = await wait_for_run(client, run_id, finished)
    after = families((await client.get("/metrics")).text)
    assert samples(after["flowstream_runs"], status="running") == {
        "flowstream_runs": 0.0
    }
    assert samples(after["flowstream_runs"], status="completed") == {
        "flowstream_runs": 1.0
    }
    # The counters end equal to the run's own final counts.
    items = samples(after["flowstream_node_items_in"], **node)
    assert (
        items["flowstream_node_items_in_total"] == detail["nodes"]["sink"]["items_in"]
    )
    # A finished run's channels are gone.
    assert not [
        s
        for s in after["flowstream_channel_fill_ratio"].samples
        if s.labels["run_id"] == run_id
    ]
    duration = samples(after["flowstream_node_duration_seconds"], **node)
    assert duration["flowstream_node_duration_seconds_count"] == 1


async def test_events_dropped_are_counted(client: httpx.AsyncClient) -> None:
    # A subscriber that never reads: its one-event buffer drops the rest.
    await client.put("/api/workflows/ticks", json=TICKS, headers=AUTH)
    r = await client.post("/api/workflows/ticks/runs", headers=AUTH)
    run_id = r.json()["run_id"]
    app = client._transport.app  # type: ignore[attr-defined]
    live = app.state.flowstream.runs.live(run_id)
    subscription = live.bus.subscribe(max_buffered=1)
    await client.post(f"/api/runs/{run_id}/stop", headers=AUTH)
    detail = await wait_for_run(client, run_id, finished)
    subscription.close()
    assert detail["events_dropped"] > 0
    after = families((await client.get("/metrics")).text)
    dropped = samples(after["flowstream_events_dropped"], workflow="ticks")
    assert dropped["flowstream_events_dropped_total"] == detail["events_dropped"]


# --- traces --------------------------------------------------------------------


class FakeSpan:
    def __init__(self, name: str, context: Any, start_time: int, attributes: Any):
        self.name = name
        self.parent = context
        self.start_time = start_time
        self.attributes = dict(attributes or {})
        self.end_time: int | None = None
        self.events: list[str] = []
        self.status: Any = None

    def set_attribute(self, key: str, value: Any) -> None:
        self.attributes[key] = value

    def add_event(self, name: str, **kwargs: Any) -> None:
        self.events.append(name)

    def set_status(self, status: Any) -> None:
        self.status = status

    def end(self, end_time: int | None = None) -> None:
        assert self.end_time is None, "ended twice"
        self.end_time = end_time or self.start_time


class FakeTracer:
    def __init__(self) -> None:
        self.spans: list[FakeSpan] = []

    def start_span(
        self,
        name: str,
        context: Any = None,
        start_time: int = 0,
        attributes: Any = None,
        **kwargs: Any,
    ) -> FakeSpan:
        span = FakeSpan(name, context, start_time, attributes)
        self.spans.append(span)
        return span


async def test_spans_per_run_and_node() -> None:
    wf = (
        Workflow("traced")
        .node("src", "source.values", values=[1, 2, 3])
        .node("inc", "transform.map", expr="x + 1")
        .node("out", "sink.collect")
        .connect("src -> inc")
        .connect("inc -> out")
    )
    bus = EventBus()
    tracer = FakeTracer()
    spans = RunTracer(tracer, bus)
    result = await FlowRuntime(bus=bus).arun(wf)
    spans.close()
    run, *nodes = tracer.spans
    assert run.name == "flowstream.run"
    assert run.attributes["flowstream.run_id"] == result.run_id
    assert run.attributes["flowstream.status"] == "completed"
    assert run.end_time is not None
    assert run.end_time >= run.start_time
    assert {n.attributes["flowstream.node_id"] for n in nodes} == {"src", "inc", "out"}
    for n in nodes:
        assert n.name == "flowstream.node"
        assert run in n.parent.values()  # the run's span is the context's span
        assert n.end_time is not None
    inc = next(n for n in nodes if n.attributes["flowstream.node_id"] == "inc")
    assert inc.attributes["flowstream.items_in"] == 3
    assert inc.attributes["flowstream.items_out"] == 3


def test_tracing_is_off_without_a_tracer_provider() -> None:
    # Only the API is installed and nobody set a provider: nothing is traced.
    assert tracer_for_runs() is None


# --- logs ----------------------------------------------------------------------


def test_json_logs_carry_run_and_node_ids() -> None:
    formatter = JsonFormatter()
    context = RunContext()

    def render(logger: str, **extra: Any) -> dict[str, Any]:
        record = logging.getLogger(logger).makeRecord(
            logger, logging.INFO, __file__, 1, "took %d", (3,), None, extra=extra
        )
        context.filter(record)
        doc: dict[str, Any] = json.loads(formatter.format(record))
        return doc

    doc = render("flowstream.server", path="/x")
    assert doc["message"] == "took 3"
    assert doc["level"] == "INFO"
    assert (doc["run_id"], doc["node_id"], doc["path"]) == (None, None, "/x")
    token = current_run.set("run42")
    try:
        doc = render("flowstream.node.parse")
        assert (doc["run_id"], doc["node_id"]) == ("run42", "parse")
        assert render("x", node_id="mine")["node_id"] == "mine"
    finally:
        current_run.reset(token)


def test_text_logs_name_a_run_only_when_there_is_one() -> None:
    formatter = TextFormatter()
    context = RunContext()

    def render(logger: str) -> str:
        record = logging.getLogger(logger).makeRecord(
            logger, logging.INFO, __file__, 1, "took %d", (3,), None
        )
        context.filter(record)
        return formatter.format(record)

    # uvicorn's own lines belong to no run: no "[run=None]" on them.
    line = render("uvicorn.error")
    assert "None" not in line
    assert "[run=" not in line
    stamp, level, name, message = line.split(" ", 3)
    assert stamp.endswith("Z")
    assert len(stamp.split(".")[1]) == 4
    assert (level, name, message) == ("INFO", "uvicorn.error", "took 3")
    token = current_run.set("run42")
    try:
        assert render("flowstream.node.parse").endswith(
            " INFO flowstream.node.parse [run=run42] [node=parse] took 3"
        )
    finally:
        current_run.reset(token)


async def test_server_logs_name_the_run(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    doc = {
        "name": "logged",
        "nodes": [
            {"id": "src", "type": "source.values", "config": {"values": [1]}},
            {"id": "say", "type": "debug.log", "config": {"level": "warning"}},
        ],
        "connections": ["src -> say"],
    }
    await client.put("/api/workflows/logged", json=doc, headers=AUTH)
    r = await client.post("/api/workflows/logged/runs", headers=AUTH)
    run_id = r.json()["run_id"]
    caplog.handler.addFilter(RunContext())
    with caplog.at_level(logging.INFO):
        await wait_for_run(client, run_id, finished)
    node_records = [r for r in caplog.records if r.name == "flowstream.node.say"]
    assert node_records
    assert all(getattr(r, "run_id", None) == run_id for r in node_records)
    assert all(getattr(r, "node_id", None) == "say" for r in node_records)
