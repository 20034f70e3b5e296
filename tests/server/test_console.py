"""The operator's console in the API: watermarks, recent outputs, series, instances."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from typing import TYPE_CHECKING, Any

import httpx
import websockets

from flowstream.server import create_app
from flowstream.server.observe import (
    OUTPUT_BYTES,
    OUTPUT_RECORDS,
    RECORD_BYTES,
    RecentOutputs,
)

from .conftest import (
    AUTH,
    finished,
    make_config,
    open_client,
    running_server,
    wait_for_run as wait,
)

if TYPE_CHECKING:
    from pathlib import Path

# Event time from the tick number: 250 ms of event time per tick, from
# 2026-01-01; the window's watermark follows the largest time seen.
BASE_MS = 1_767_225_600_000
WINDOWED: dict[str, Any] = {
    "name": "windowed",
    "mode": "stream",
    "nodes": [
        {"id": "tick", "type": "source.timer", "config": {"interval_ms": 5}},
        {
            "id": "stamp",
            "type": "transform.map",
            "config": {"expr": f"{{'ts': {BASE_MS} + x * 250, 'n': x}}"},
        },
        {
            "id": "win",
            "type": "window.tumbling",
            "config": {
                "size_ms": 1000,
                "time": "event",
                "timestamp_field": "ts",
                "allowed_lateness_ms": 500,
                "op": "count",
            },
        },
        {"id": "out", "type": "sink.collect"},
    ],
    "connections": ["tick -> stamp", "stamp -> win", "win -> out"],
}

PARALLEL: dict[str, Any] = {
    "name": "parallel",
    "mode": "stream",
    "nodes": [
        {"id": "tick", "type": "source.timer", "config": {"interval_ms": 2}},
        {
            "id": "double",
            "type": "transform.map",
            "config": {"expr": "x * 2"},
            "parallelism": 2,
        },
        {"id": "sink", "type": "sink.null"},
    ],
    "connections": ["tick -> double", "double -> sink"],
}

DIVIDED: dict[str, Any] = {
    "name": "divided",
    "error_handling": {"mode": "continue_on_error"},
    "nodes": [
        {"id": "numbers", "type": "source.range", "config": {"stop": 20}},
        {
            "id": "divide",
            "type": "transform.map",
            "config": {"expr": "100 / (x % 10)"},
            "parallelism": 2,
        },
        {"id": "result", "type": "sink.collect"},
    ],
    "connections": ["numbers -> divide", "divide -> result"],
}


async def put(client: httpx.AsyncClient, doc: dict[str, Any]) -> None:
    r = await client.put(f"/api/workflows/{doc['name']}", json=doc, headers=AUTH)
    assert r.status_code == 200, r.text


async def start(client: httpx.AsyncClient, name: str) -> str:
    r = await client.post(f"/api/workflows/{name}/runs", json={}, headers=AUTH)
    assert r.status_code == 201, r.text
    run_id: str = r.json()["run_id"]
    return run_id


async def stop(client: httpx.AsyncClient, run_id: str) -> dict[str, Any]:
    r = await client.post(f"/api/runs/{run_id}/stop", headers=AUTH)
    assert r.status_code == 202, r.text
    return await wait(client, run_id, finished)


async def test_an_event_time_window_shows_its_watermark_and_lag(
    tmp_path: Path,
) -> None:
    async with open_client(create_app(make_config(tmp_path))) as client:
        await put(client, WINDOWED)
        run_id = await start(client, "windowed")
        detail = await wait(
            client,
            run_id,
            lambda d: (d["nodes"]["win"].get("watermark_ms") or 0) > BASE_MS + 1000,
        )
        win = detail["nodes"]["win"]
        mark = win["watermark_ms"]
        # The largest event time seen, minus the allowed lateness: a tick's.
        assert (mark + 500 - BASE_MS) % 250 == 0, mark
        stamp = dt.datetime.fromisoformat(win["watermark"])
        assert stamp.timestamp() * 1000 == mark
        assert win["watermark"].endswith("Z")
        # Event time runs ahead of the clock here (2026-01-01 + fast ticks
        # vs now); the lag is the clock minus the watermark, either sign.
        lag = time.time() - mark / 1000
        assert abs(win["watermark_lag_s"] - lag) < 60
        assert detail["nodes"]["stamp"].get("watermark") is None
        # The gauges come with the run's next sample.
        labels = f'node="win",run_id="{run_id}",workflow="windowed"'
        async with asyncio.timeout(10):
            while True:
                metrics = (await client.get("/metrics")).text
                if f"flowstream_node_watermark_ms{{{labels}}}" in metrics:
                    break
                await asyncio.sleep(0.02)
        assert f"flowstream_node_watermark_lag_seconds{{{labels}}}" in metrics
        assert (
            'node="stamp",run_id'
            not in metrics.split("flowstream_node_watermark_ms")[-1].split("# HELP")[0]
        )
        # The series carries the lag, for the node's chart.
        series = (await client.get(f"/api/runs/{run_id}/series")).json()
        assert any(p.get("watermark_lag_s") is not None for p in series["win"])
        done = await stop(client, run_id)
        assert done["nodes"]["win"]["watermark_ms"] >= mark
        assert (
            "flowstream_node_watermark_ms{" not in (await client.get("/metrics")).text
        )


async def test_a_running_stream_shows_its_recent_outputs(tmp_path: Path) -> None:
    async with open_client(create_app(make_config(tmp_path))) as client:
        await put(client, WINDOWED)
        run_id = await start(client, "windowed")
        detail = await wait(
            client,
            run_id,
            lambda d: (
                len(
                    ((d.get("recent_outputs") or {}).get("out") or {})
                    .get("out", {})
                    .get("records", [])
                )
                >= 2
            ),
        )
        assert detail["status"] == "running"
        assert detail["outputs"] is None  # the full outputs come at the end
        recent = detail["recent_outputs"]["out"]["out"]
        assert recent["seen"] >= len(recent["records"]) >= 2
        assert len(recent["records"]) <= OUTPUT_RECORDS
        windows = recent["records"]
        assert all(w["value"] == 4 for w in windows)  # 4 ticks of 250 ms
        starts = [w["start"] for w in windows]
        assert starts == sorted(starts)
        later = await wait(
            client,
            run_id,
            lambda d: d["recent_outputs"]["out"]["out"]["seen"] > recent["seen"],
        )
        assert (
            later["recent_outputs"]["out"]["out"]["records"][-1]["start"] > (starts[-1])
        )
        done = await stop(client, run_id)
        assert done.get("recent_outputs") is None
        assert done["outputs"]["out"]["out"]


async def test_series_are_kept_by_the_server(tmp_path: Path) -> None:
    config = make_config(tmp_path, sample_interval=0.05)
    async with open_client(create_app(config)) as client:
        await put(client, PARALLEL)
        run_id = await start(client, "parallel")
        async with asyncio.timeout(10):
            while True:
                r = await client.get(f"/api/runs/{run_id}/series")
                assert r.status_code == 200, r.text
                series = r.json()
                if len(series.get("sink", [])) >= 5:
                    break
                await asyncio.sleep(0.05)
        # Declared nodes only, oldest point first.
        assert set(series) == {"tick", "double", "sink"}
        times = [p["t"] for p in series["sink"]]
        assert times == sorted(times)
        assert time.time() - times[0] < 60
        # The sink reads a channel (the instances merge into it): its fill.
        assert all(p["channel_fill"] is not None for p in series["sink"])
        assert all(p["errors"] == 0 for p in series["sink"])
        await stop(client, run_id)
        r = await client.get(f"/api/runs/{run_id}/series")
        assert (r.status_code, r.json()) == (200, {})
        r = await client.get("/api/runs/0123456789ab/series")
        assert r.status_code == 404


async def test_parallel_instances_show_under_their_declared_node(
    tmp_path: Path,
) -> None:
    async with open_client(create_app(make_config(tmp_path))) as client:
        await put(client, PARALLEL)
        run_id = await start(client, "parallel")
        detail = await wait(
            client,
            run_id,
            lambda d: all(
                i["items_in"] > 0 for i in (d["nodes"]["double"]["instances"] or [])
            ),
        )
        nodes = detail["nodes"]
        # Declared nodes, not instances or partition steps.
        assert set(nodes) == {"tick", "double", "sink"}
        double = nodes["double"]
        assert double["parallelism"] == 2
        assert double["state"] == "running"
        rows = double["instances"]
        assert [(r["instance"], r["node_id"]) for r in rows] == [
            (0, "double[0]"),
            (1, "double[1]"),
        ]
        assert all(r["state"] == "running" for r in rows)
        # Each instance has its own input channel; the node shows the fullest.
        assert all(r["channel_fill"] is not None for r in rows)
        assert double["channel_fill"] == max(r["channel_fill"] for r in rows)
        assert nodes["sink"]["instances"] is None
        done = await stop(client, run_id)
        double = done["nodes"]["double"]
        assert double["state"] == "completed"
        assert double["items_in"] == sum(r["items_in"] for r in double["instances"])
        assert double["items_in"] == done["nodes"]["tick"]["items_out"]


async def test_dead_letters_of_an_instance_name_the_declared_node(
    tmp_path: Path,
) -> None:
    async with open_client(create_app(make_config(tmp_path))) as client:
        await put(client, DIVIDED)
        run_id = await start(client, "divided")
        done = await wait(client, run_id, finished)
        assert done["status"] == "completed", done
        letters = done["dead_letters"]
        assert len(letters) == 2  # 0 and 10 divide by zero
        for d in letters:
            assert d["node_id"] == "divide"
            assert d["instances"] == 2
            assert d["instance"] in (0, 1)
        assert done["nodes"]["divide"]["dead_letters"] == 2
        assert sorted(done["outputs"]["result"]["out"]) == sorted(
            100 // (x % 10)
            for x in range(20)
            if x % 10  # CEL: int division
        )


def test_recent_outputs_are_bounded_in_records_and_bytes() -> None:
    recent = RecentOutputs()
    for start in range(0, 10_000, 1000):
        recent.take("out", "out", list(range(start, start + 1000)))
    ring = recent.snapshot()["out"]["out"]
    assert ring.seen == 10_000
    assert [int(bytes(r)) for r in ring.records] == list(range(9950, 10_000))
    big = {"text": "x" * 10_000}
    recent.take("big", "out", [big] * 40)
    records = recent.snapshot()["big"]["out"].records
    assert sum(len(bytes(r)) for r in records) <= OUTPUT_BYTES
    shown = json.loads(bytes(records[0]))
    assert isinstance(shown, str)
    assert shown.endswith("(10011 bytes, cut)")
    assert len(bytes(records[0])) <= RECORD_BYTES


async def test_recent_outputs_reach_the_events_feed(tmp_path: Path) -> None:
    config = make_config(tmp_path, sample_interval=0.05)
    with running_server(config) as live:
        async with httpx.AsyncClient(base_url=live.url, headers=AUTH) as http:
            await put(http, WINDOWED)
            run_id = await start(http, "windowed")
            url = f"{live.ws_url}/api/runs/{run_id}/events"
            seen: list[dict[str, Any]] = []
            async with websockets.connect(url) as ws:
                async with asyncio.timeout(15):
                    async for message in ws:
                        event = json.loads(message)
                        if event.get("name") == "recent_outputs":
                            seen.append(event)
                            if sum(len(e["data"]["records"]) for e in seen) >= 3:
                                break
            first = seen[0]
            assert first["node_id"] == "out"
            assert first["data"]["port"] == "out"
            # Each event brings only what is new: the windows follow on.
            starts = [w["start"] for e in seen for w in e["data"]["records"]]
            assert starts == sorted(set(starts))
            await stop(http, run_id)
            # Not kept in the run's record: the outputs are there.
            async with websockets.connect(url) as ws:
                kinds = [json.loads(m).get("name") async for m in ws]
            assert "recent_outputs" not in kinds
