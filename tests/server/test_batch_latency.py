"""Batch latency: a histogram of sampled batches, reported under each task's head."""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from flowstream import FlowRuntime
from flowstream.core.workflow import parse_workflow
from flowstream.server.metrics import Metrics

from .conftest import AUTH, finished, wait_for_run
from .test_cli import flowstream, free_port, wait_until_up

if TYPE_CHECKING:
    from pathlib import Path

LATENCY = "flowstream_batch_latency_seconds"
HOLD_S = 0.005


def delayed(count: int | None = None) -> dict[str, Any]:
    """A timer (every 40 ms) whose items ``time.delay`` holds back 5 ms each."""
    timer: dict[str, Any] = {"interval_ms": 40}
    if count is not None:
        timer["count"] = count
    return {
        "name": "delayed",
        "mode": "stream",
        "nodes": [
            {"id": "tick", "type": "source.timer", "config": timer},
            {"id": "later", "type": "time.delay", "config": {"ms": HOLD_S * 1000}},
            {"id": "square", "type": "transform.map", "config": {"expr": "x * x"}},
            {"id": "out", "type": "sink.null"},
        ],
        "connections": ["tick -> later", "later -> square", "square -> out"],
    }


def latency(text: str, workflow: str = "delayed") -> dict[str, dict[str, float]]:
    """Each head node's ``count`` and ``sum``, and ``le=0.0025`` bucket."""
    heads: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        if family.name != LATENCY:
            continue
        for s in family.samples:
            if s.labels["workflow"] != workflow:
                continue
            series = heads.setdefault(s.labels["node"], {})
            if s.name == f"{LATENCY}_count":
                series["count"] = s.value
            elif s.name == f"{LATENCY}_sum":
                series["sum"] = s.value
            elif s.name == f"{LATENCY}_bucket" and s.labels["le"] == "0.0025":
                series["fast"] = s.value
    return heads


def tasks(text: str) -> dict[str, str]:
    """``flowstream_batch_task_info``: head node -> the nodes it covers."""
    return {
        s.labels["node"]: s.labels["nodes"]
        for family in text_string_to_metric_families(text)
        if family.name == "flowstream_batch_task_info"
        for s in family.samples
    }


def assert_held(series: dict[str, float]) -> None:
    # Every delivered item was held HOLD_S after its head took it (allow a
    # little for the two clocks: the delay's loop time, the probe's counter).
    assert series["count"] > 0
    assert series["sum"] / series["count"] >= HOLD_S * 0.9
    assert series["fast"] < series["count"] / 2


@pytest.mark.parametrize("fuse", [True, False], ids=["fused", "unfused"])
async def test_probe_observes_real_latency_under_the_head(fuse: bool) -> None:
    metrics = Metrics()
    probe = metrics.batch_probe("delayed")
    result = await FlowRuntime().arun(
        parse_workflow(delayed(count=12)), fuse=fuse, batch_probe=probe, probe_every=1
    )
    assert result.status == "completed"
    text = generate_latest(metrics.registry).decode()
    heads = latency(text)
    assert_held(heads["later"])
    # The source's own task does no waiting worth 5 ms.
    assert heads["tick"]["count"] > 0
    assert heads["tick"]["sum"] / heads["tick"]["count"] < HOLD_S
    if fuse:
        # One chain, one task: its latency shows once, under its head.
        assert tasks(text) == {"tick": "tick", "later": "later,square,out"}
        assert set(heads) == {"tick", "later"}
    else:
        assert tasks(text) == {n: n for n in ("tick", "later", "square", "out")}
        assert set(heads) == {"tick", "later", "square", "out"}
        assert heads["square"]["sum"] / heads["square"]["count"] < HOLD_S


@pytest.mark.parametrize("fuse", [True, False], ids=["fused", "unfused"])
async def test_a_burst_is_measured_from_each_batch_take_not_the_latest(
    fuse: bool,
) -> None:
    # Ticks every 1 ms, each held 20 ms: the delay takes about 20 batches
    # while it holds the first. Each delivered batch is measured from when
    # its own first item came in, so none reads less than the hold (reading
    # the head's latest take gave about 1 ms).
    hold_s = 0.02
    wf = delayed(count=60)
    wf["nodes"][0]["config"]["interval_ms"] = 1
    wf["nodes"][1]["config"]["ms"] = hold_s * 1000
    seen: list[tuple[str, float]] = []

    def probe(ids: tuple[str, ...], items: int, taken: float, done: float) -> None:
        seen.append((ids[0], done - taken))

    result = await FlowRuntime().arun(
        parse_workflow(wf), fuse=fuse, batch_probe=probe, probe_every=1
    )
    assert result.status == "completed", result.error
    held = [s for head, s in seen if head == "later"]
    assert len(held) > 1
    assert min(held) >= hold_s * 0.9, sorted(held)[:5]


async def test_server_stream_run_has_the_histogram(client: httpx.AsyncClient) -> None:
    await client.put("/api/workflows/delayed", json=delayed(), headers=AUTH)
    r = await client.post("/api/workflows/delayed/runs", headers=AUTH)
    run_id = r.json()["run_id"]
    # The server samples one batch in 16 per task (640 ms of ticks here).
    async with asyncio.timeout(5):
        while True:
            text = (await client.get("/metrics")).text
            heads = latency(text)
            if heads.get("later", {}).get("count", 0) > 0:
                break
            await asyncio.sleep(0.02)
    assert_held(heads["later"])
    assert tasks(text)["later"] == "later,square,out"
    assert "square" not in heads
    await client.post(f"/api/runs/{run_id}/stop", headers=AUTH)
    detail = await wait_for_run(client, run_id, finished)
    assert detail["status"] == "completed"


def test_cli_metrics_port_serves_the_histogram(tmp_path: Path) -> None:
    path = tmp_path / "delayed.json"
    path.write_text(json.dumps(delayed(count=60)))
    port = free_port()
    proc = flowstream("run", str(path), "--metrics-port", str(port), cwd=tmp_path)
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        wait_until_up(url, proc)
        heads: dict[str, dict[str, float]] = {}
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                text = httpx.get(url, timeout=1).text
            except httpx.TransportError:
                break  # the run ended before a batch was sampled
            heads = latency(text)
            if heads.get("later", {}).get("count", 0) > 0:
                break
            time.sleep(0.02)
        assert heads.get("later", {}).get("count", 0) > 0, heads
        assert_held(heads["later"])
        assert tasks(text)["later"] == "later,square,out"
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
