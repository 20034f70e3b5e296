"""Operating the server: readable rates and times, runs that survive restarts."""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
from typing import TYPE_CHECKING, Any

from flowstream.core.events import RunRestarted, decode_event
from flowstream.core.workflow import parse_workflow
from flowstream.server import create_app
from flowstream.server.schemas import RunSummary
from flowstream.server.store import Store

from .conftest import (
    AUTH,
    NUMBERS,
    TICKS,
    finished,
    make_config,
    open_client,
    wait_for_run as wait,
)

if TYPE_CHECKING:
    from pathlib import Path

    import httpx


def checkpointed_ticks() -> dict[str, Any]:
    doc = copy.deepcopy(TICKS)
    doc["name"] = "kept"
    doc["checkpoint"] = {"path": "kept.ckpt", "interval_ms": 50}
    return doc


async def put(client: httpx.AsyncClient, doc: dict[str, Any]) -> None:
    r = await client.put(f"/api/workflows/{doc['name']}", json=doc, headers=AUTH)
    assert r.status_code == 200, r.text


async def start(client: httpx.AsyncClient, name: str) -> str:
    r = await client.post(f"/api/workflows/{name}/runs", json={}, headers=AUTH)
    assert r.status_code == 201, r.text
    run_id: str = r.json()["run_id"]
    return run_id


def parse(text: str) -> dt.datetime:
    # ISO 8601, UTC, milliseconds: 2026-12-03T17:40:00.123Z
    assert text.endswith("Z"), text
    assert len(text.split(".")[1]) == 4, text  # three digits and the Z
    return dt.datetime.fromisoformat(text)


async def test_times_are_iso_8601_utc_with_milliseconds(tmp_path: Path) -> None:
    async with open_client(create_app(make_config(tmp_path))) as client:
        await put(client, NUMBERS)
        run_id = await start(client, "numbers")
        detail = await wait(client, run_id, finished)
        started, ended = parse(detail["started_at"]), parse(detail["ended_at"])
        assert started <= ended
        assert abs((dt.datetime.now(dt.UTC) - started).total_seconds()) < 60
        (listed,) = (await client.get("/api/runs")).json()
        assert listed["started_at"] == detail["started_at"]
        (wf,) = (await client.get("/api/workflows")).json()
        assert parse(wf["created_at"]) <= parse(wf["updated_at"])


async def test_rates_roles_and_a_finished_run_average(tmp_path: Path) -> None:
    async with open_client(create_app(make_config(tmp_path))) as client:
        # A 10-item DAG: no rate at all, not thousands per second.
        await put(client, NUMBERS)
        run_id = await start(client, "numbers")
        nodes = (await wait(client, run_id, finished))["nodes"]
        assert nodes["numbers"]["role"] == "source"
        assert nodes["double"]["role"] == "transform"
        assert nodes["result"]["role"] == "sink"
        assert all(n.get("rate_in") is None for n in nodes.values()), nodes
        # A stream over a second long: a recent rate while it runs...
        await put(client, TICKS)
        run_id = await start(client, "ticks")
        live = await wait(
            client, run_id, lambda d: d["nodes"]["sink"].get("rate_in") is not None
        )
        assert live["status"] == "running"
        assert live["nodes"]["sink"]["rate_in"] > 0
        metrics = (await client.get("/metrics")).text
        assert (
            f'flowstream_node_items_per_second{{direction="in",node="sink",'
            f'run_id="{run_id}",workflow="ticks"}}'
        ) in metrics
        r = await client.post(f"/api/runs/{run_id}/stop", headers=AUTH)
        assert r.status_code == 202, r.text
        done = await wait(client, run_id, finished)
        # ...and once finished, the average over its run, not 0.
        sink = done["nodes"]["sink"]
        assert sink["role"] == "sink"
        assert sink["rate_in"] > 0
        assert (
            "flowstream_node_items_per_second{"
            not in (await client.get("/metrics")).text
        )


async def test_stream_runs_with_checkpoints_survive_a_server_restart(
    tmp_path: Path,
) -> None:
    config = make_config(tmp_path)
    async with open_client(create_app(config)) as client:
        await put(client, checkpointed_ticks())
        await put(client, TICKS)
        kept = await start(client, "kept")
        lost = await start(client, "ticks")
        for run_id in (kept, lost):
            await wait(client, run_id, lambda d: d["nodes"]["sink"]["items_in"] > 0)
    # The server stopped: the run with checkpoints stays active to resume,
    # the other one is recorded as it ended.
    store = Store(config.db)
    assert [u.run_id for u in store.take_unfinished()] == [kept]
    store.close()
    app = create_app(config)
    async with open_client(app) as client:
        detail = await wait(client, kept, lambda d: d["nodes"]["sink"]["items_in"] > 0)
        assert detail["status"] == "running"
        assert detail["restarts"] == 1
        (listed,) = [
            r for r in (await client.get("/api/runs")).json() if r["run_id"] == kept
        ]
        assert listed["restarts"] == 1
        # The resume is a RunRestarted event, which the metrics count.
        metrics = (await client.get("/metrics")).text
        assert 'flowstream_run_restarts_total{workflow="kept"} 1.0' in metrics
        live = app.state.flowstream.runs.live(kept)
        recorded = [decode_event(raw) for raw in live.history.snapshot()]
        kinds = [type(e).__name__ for e in recorded]
        (restarted,) = [e for e in recorded if isinstance(e, RunRestarted)]
        assert kinds.index("RunRestarted") < kinds.index("WorkflowStarted")
        assert (restarted.attempt, restarted.reason) == (1, "server restart")
        assert restarted.run_id == kept
        assert restarted.checkpointed
        assert isinstance(restarted.from_epoch, int)
        # Its checkpoint store says so too: a newer epoch, one restore.
        async with asyncio.timeout(10):
            while True:
                r = await client.get(f"/api/runs/{kept}/checkpoints")
                assert r.status_code == 200, r.text
                states = r.json()
                if states and states[0].get("epoch") and states[0]["restores"]:
                    break
                await asyncio.sleep(0.05)
        (state,) = states
        assert state["restores"] == 1
        assert state["attempts"] == 2
        assert parse(state["last_commit_at"]) >= parse(state["started_at"])
        assert state["epoch"] >= 1, state
        # Resumed and running, not "stopped" as its first attempt ended.
        assert state["status"] == "running", state
        assert parse(state["last_restore_at"]) >= parse(state["started_at"])
        # Its latest epochs: each with its duration and the snapshot's size.
        epochs = state["epochs"]
        assert epochs[0]["epoch"] == state["epoch"]
        for e in epochs:
            assert e["size_bytes"] > 0, e
            assert e["duration_ms"] >= 0, e
            assert parse(e["committed_at"]) >= parse(e["started_at"])
        # A run without checkpoints has none to show.
        r = await client.get(f"/api/runs/{lost}/checkpoints")
        assert (r.status_code, r.json()) == (200, [])
        r = await client.post(f"/api/runs/{kept}/stop", headers=AUTH)
        assert r.status_code == 202, r.text
        done = await wait(client, kept, finished)
        assert done["status"] == "completed"
        assert done["restarts"] == 1
        assert (await client.get(f"/api/runs/{lost}")).json()["status"] == "completed"


async def test_runs_lost_with_a_crashed_server_resume_or_are_interrupted(
    tmp_path: Path,
) -> None:
    # What a killed process leaves: runs still marked running.
    config = make_config(tmp_path)
    async with open_client(create_app(config)) as client:
        await put(client, checkpointed_ticks())
        kept_doc = (await client.get("/api/workflows/kept")).json()
    store = Store(config.db)
    for run_id, doc, mode in (
        ("c0ffee01", kept_doc, "stream"),
        ("dead0002", NUMBERS, "dag"),
    ):
        store.insert_run(
            RunSummary(
                run_id=run_id,
                workflow=doc["name"],
                mode=mode,
                status="running",
                started_at="2026-01-02T03:04:05.678Z",
            ),
            parse_workflow(doc),
        )
    store.close()
    async with open_client(create_app(config)) as client:
        resumed = await wait(
            client, "c0ffee01", lambda d: d["nodes"]["sink"]["items_in"] > 0
        )
        assert resumed["status"] == "running"
        assert resumed["restarts"] == 1
        assert resumed["started_at"] == "2026-01-02T03:04:05.678Z"
        lost = (await client.get("/api/runs/dead0002")).json()
        assert lost["status"] == "interrupted"
        assert "no checkpoints" in lost["error"]
        r = await client.post("/api/runs/c0ffee01/cancel", headers=AUTH)
        assert r.status_code == 202, r.text
        done = await wait(client, "c0ffee01", finished)
        assert done["status"] == "cancelled"
        assert done["duration_s"] > 3600  # from its first start, long ago
