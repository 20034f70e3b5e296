"""Against a real server on 127.0.0.1: the API end to end and the events feed."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from .conftest import (
    AUTH,
    NUMBERS,
    NUMBERS_OUT,
    TICKS,
    TOKEN,
    finished,
    make_config,
    running_server,
    wait_for_run,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from .conftest import LiveServer


@pytest.fixture
async def http(live_server: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=live_server.url, timeout=10) as client:
        yield client


def check_lifecycle(events: list[dict[str, Any]], nodes: set[str]) -> None:
    """The run's lifecycle, in order: started, each node started then done, done."""
    kinds = [e["event"] for e in events]
    assert kinds[0] == "WorkflowStarted"
    assert kinds[-1] == "WorkflowCompleted"
    assert kinds.count("WorkflowStarted") == kinds.count("WorkflowCompleted") == 1
    for node in nodes:
        mine = [e["event"] for e in events if e.get("node_id") == node]
        assert mine == ["NodeStarted", "NodeCompleted"], (node, mine)
    stamps = [e["timestamp"] for e in events]
    assert stamps == sorted(stamps)
    assert len({e["run_id"] for e in events}) == 1


async def receive_all(ws: Any) -> list[dict[str, Any]]:
    events = []
    async for message in ws:
        events.append(json.loads(message))
    return events


async def test_api_end_to_end(http: httpx.AsyncClient) -> None:
    assert (await http.put("/api/workflows/numbers", json=NUMBERS)).status_code == 401
    r = await http.put("/api/workflows/numbers", json=NUMBERS, headers=AUTH)
    assert r.status_code == 200
    bad = {**NUMBERS, "nodes": [*NUMBERS["nodes"][:3], {"id": "result", "type": "x"}]}
    r = await http.put("/api/workflows/numbers", json=bad, headers=AUTH)
    assert r.status_code == 422
    assert r.json()["problems"][0]["node"] == "result"
    r = await http.post("/api/workflows/numbers/runs", headers=AUTH)
    assert r.status_code == 201
    detail = await wait_for_run(http, r.json()["run_id"], finished)
    assert detail["outputs"] == {"result": {"out": NUMBERS_OUT}}
    metrics = (await http.get("/metrics")).text
    assert 'flowstream_runs{status="completed"} 1.0' in metrics


async def test_events_feed_shows_the_lifecycle_in_order(
    live_server: LiveServer, http: httpx.AsyncClient
) -> None:
    await http.put("/api/workflows/ticks", json=TICKS, headers=AUTH)
    r = await http.post("/api/workflows/ticks/runs", headers=AUTH)
    run_id = r.json()["run_id"]
    url = f"{live_server.ws_url}/api/runs/{run_id}/events"
    async with websockets.connect(url) as ws:
        first = [json.loads(await ws.recv()) for _ in range(5)]
        assert [e["event"] for e in first] == ["WorkflowStarted"] + ["NodeStarted"] * 4
        r = await http.post(f"/api/runs/{run_id}/stop", headers=AUTH)
        assert r.status_code == 202
        rest = await receive_all(ws)
        assert ws.close_code == 1000
    events = first + rest
    check_lifecycle(events, {"tick", "square", "sink", "other"})
    assert events[-1]["status"] == "completed"
    done = {e["node_id"]: e["stats"] for e in events if e["event"] == "NodeCompleted"}
    assert done["sink"]["items_in"] == done["tick"]["items_out"] > 0


async def test_late_subscribers_get_the_recorded_events(
    live_server: LiveServer, http: httpx.AsyncClient
) -> None:
    await http.put("/api/workflows/numbers", json=NUMBERS, headers=AUTH)
    r = await http.post("/api/workflows/numbers/runs", headers=AUTH)
    run_id = r.json()["run_id"]
    await wait_for_run(http, run_id, finished)
    url = f"{live_server.ws_url}/api/runs/{run_id}/events"
    async with websockets.connect(url) as ws:
        events = await receive_all(ws)
    check_lifecycle(events, {"numbers", "double", "keep", "result"})
    async with websockets.connect(f"{live_server.ws_url}/api/runs/0bad/events") as ws:
        with pytest.raises(ConnectionClosed):
            await ws.recv()
        assert ws.close_code == 4404


async def test_events_feed_needs_the_token_beyond_loopback(tmp_path: Path) -> None:
    config = make_config(tmp_path, host="0.0.0.0")  # policy only: binds 127.0.0.1
    with running_server(config) as live:
        url = f"{live.ws_url}/api/runs/0bad/events"
        for suffix, headers, code in [
            ("", {}, 4401),
            ("?token=wrong", {}, 4401),
            (f"?token={TOKEN}", {}, 4404),
            ("", AUTH, 4404),
        ]:
            async with websockets.connect(
                url + suffix, additional_headers=headers
            ) as ws:
                with pytest.raises(ConnectionClosed):
                    await ws.recv()
                assert ws.close_code == code, (suffix, headers)


# --- DNS rebinding and other origins (issue 11) ----------------------------------


def test_a_loopback_server_answers_only_to_its_own_names(
    live_server: LiveServer,
) -> None:
    # A page whose name was rebound to 127.0.0.1 sends its own name as Host.
    port = live_server.url.rsplit(":", 1)[1]
    ok = (f"127.0.0.1:{port}", f"localhost:{port}", f"localhost.:{port}", "127.0.0.2")
    for host in (*ok, "[::1]:1"):
        r = httpx.get(f"{live_server.url}/api/health", headers={"Host": host})
        assert r.status_code == 200, host
    for host in (f"evil.example:{port}", "attacker.test", "127.0.0.1.evil.example"):
        r = httpx.get(f"{live_server.url}/api/runs", headers={"Host": host})
        assert r.status_code == 421, host
        assert r.headers["content-type"] == "application/problem+json"
        assert "--allow-host" in r.json()["detail"]


def test_allowed_host_names_are_answered(tmp_path: Path) -> None:
    config = make_config(tmp_path, allow_hosts=("flows.internal",))
    with running_server(config) as live:
        ok = httpx.get(f"{live.url}/api/health", headers={"Host": "flows.internal"})
        bad = httpx.get(f"{live.url}/api/health", headers={"Host": "other.internal"})
    assert (ok.status_code, bad.status_code) == (200, 421)


async def test_events_feed_refuses_rebound_hosts_and_other_origins(
    live_server: LiveServer,
) -> None:
    url = f"{live_server.ws_url}/api/runs/0bad/events"
    own = live_server.url
    for headers, suffix, code in [
        ({}, "", 4404),  # not a browser: loopback reads are open
        ({"Origin": own}, "", 4404),  # the server's own page (the UI)
        ({"Origin": "http://evil.example"}, "", 4403),
        ({"Origin": "http://evil.example"}, "?token=wrong", 4403),
        ({"Origin": "http://evil.example"}, f"?token={TOKEN}", 4404),
        ({"Origin": "null"}, "", 4403),
    ]:
        async with websockets.connect(url + suffix, additional_headers=headers) as ws:
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            assert ws.close_code == code, headers
    # Connected to 127.0.0.1, addressed to another name (a rebound page).
    port = int(live_server.url.rsplit(":", 1)[1])
    with pytest.raises(InvalidStatus) as refused:
        async with websockets.connect(
            f"ws://evil.example:{port}/api/runs/0bad/events",
            host="127.0.0.1",
            port=port,
        ):
            pass
    assert refused.value.response.status_code == 403
