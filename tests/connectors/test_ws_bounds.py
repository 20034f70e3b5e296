"""ws.source's bounds: one memory budget for all connections, max_connections, frames.

Real servers and clients on 127.0.0.1; the memory test runs the source in a
child process (`benchmarks.ws_memory`) so that its resident set is its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
from typing import Any

import msgspec
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from benchmarks import ws_memory
from connectors.websocket import ws_source
from flowstream import FlowRuntime, Workflow, default_registry

from .test_websocket import (
    GATES,
    SOURCES,
    Events,
    RecordedSource,
    gate,
    ingest,
    items_in,
    running,
    until,
)

CHUNK = 256 << 10  # what one socket read may add past the budget
SLACK = 2 * CHUNK  # the read that crossed it, the one that finished a frame


@pytest.fixture
def runtime() -> FlowRuntime:
    registry = default_registry(entry_points=False)
    registry.register(msgspec.structs.replace(ws_source, fn=RecordedSource))
    registry.register(gate)
    SOURCES.clear()
    GATES.clear()
    return FlowRuntime(registry)


@pytest.fixture
def events(runtime: FlowRuntime) -> Events:
    return Events(runtime)


def gated(**config: Any) -> Workflow:
    """ws.source (server) -> a gate the test opens -> out; stream mode."""
    return (
        Workflow("gated", mode="stream")
        .node("src", "ws.source", {"mode": "server", **config})
        .node("gate", "test.gate", name="g")
        .node("out", "sink.null")
        .connect("src -> gate")
        .connect("gate -> out")
    )


async def test_one_budget_bounds_the_bytes_held_whatever_the_clients(
    runtime: FlowRuntime, events: Events
) -> None:
    # 40 clients, 3 frames of 500 kB each: 60 MB offered to a stalled graph.
    # Without the budget each connection buffers up to 16 frames (8 MB).
    clients, frames, size, budget = 40, 3, 500_000, 2_000_000
    frame = msgspec.json.encode("x" * (size - 2))
    GATES["g"] = asyncio.Event()
    wf = gated(max_buffered_bytes=budget, ping_interval=None)
    async with running(runtime, wf) as (executor, run):
        port = await events.port()

        async def client() -> None:
            async with connect(f"ws://127.0.0.1:{port}", ping_interval=None) as ws:
                for _ in range(frames):
                    await ws.send(frame)

        async with asyncio.TaskGroup() as tg:
            for _ in range(clients):
                tg.create_task(client())
            source = SOURCES[0]
            # Stalled: the budget is spent and every socket stops being read.
            await until(lambda: source.statistics().reading_stops >= 1)
            await until(lambda: source.statistics().connections == clients)
            assert items_in(executor, "out") <= 1
            stats = source.statistics()
            assert stats.held_bytes <= budget + SLACK + size
            GATES["g"].set()
        await until(lambda: items_in(executor, "out") == clients * frames)
        executor.stop()
        result = await run
    assert result.ok, result.error
    stats = source.statistics()
    assert stats.frames == clients * frames
    # The bound the docstring states: the budget, two read chunks, one frame.
    assert budget <= stats.peak_held_bytes <= budget + SLACK + size
    assert stats.held_bytes == 0


async def test_frames_larger_than_the_budget_still_get_through(
    runtime: FlowRuntime, events: Events
) -> None:
    # Every connection holds part of a frame and none is complete: without
    # one connection allowed to finish its frame, every reader would wait.
    clients, size, budget = 8, 600_000, 100_000
    frame = msgspec.json.encode("y" * (size - 2))
    wf = ingest(max_buffered_bytes=budget, ping_interval=None)
    async with running(runtime, wf) as (executor, run):
        port = await events.port()

        async def client() -> None:
            async with connect(f"ws://127.0.0.1:{port}", ping_interval=None) as ws:
                await ws.send(frame)
                await ws.send(frame)

        async with asyncio.TaskGroup() as tg:
            for _ in range(clients):
                tg.create_task(client())
        await until(lambda: items_in(executor, "out") == 2 * clients)
        executor.stop()
        result = await run
    assert result.ok, result.error
    stats = SOURCES[0].statistics()
    assert stats.reading_stops >= 1
    assert stats.peak_held_bytes <= budget + SLACK + size


async def test_clients_past_max_connections_are_closed_with_1013(
    runtime: FlowRuntime, events: Events, caplog: pytest.LogCaptureFixture
) -> None:
    wf = ingest(max_connections=2)
    async with running(runtime, wf) as (executor, run):
        port = await events.port()
        url = f"ws://127.0.0.1:{port}"
        async with connect(url) as one, connect(url) as two:
            await events.wait("client_connected", 2)
            for attempt in range(3):
                extra = await connect(url)
                with contextlib.suppress(ConnectionClosed):
                    await extra.send(b'{"refused": true}')  # dropped
                with pytest.raises(ConnectionClosed) as closed:
                    await extra.recv()  # returns once the connection is closed
                assert closed.value.rcvd is not None
                assert closed.value.rcvd.code == 1013
                await events.wait("client_refused", attempt + 1)
            await one.send(b'{"from": 1}')
            await two.send(b'{"from": 2}')
            await until(lambda: items_in(executor, "out") == 2)
        # Below the limit again: a new client is taken.
        await until(lambda: SOURCES[0].statistics().connections == 0)
        async with connect(url) as three:
            await three.send(b'{"from": 3}')
        await until(lambda: items_in(executor, "out") == 3)
        executor.stop()
        result = await run
    assert result.ok, result.error
    assert sorted(r["from"] for r in result.output("out")) == [1, 2, 3]
    stats = SOURCES[0].statistics()
    assert stats.refused_connections == 3
    assert stats.held_bytes == 0
    warnings = [r for r in caplog.records if "max_connections=2" in r.getMessage()]
    assert len(warnings) == 1  # once per time the limit is reached, not per client


async def test_oversized_frames_are_counted_and_reported(
    runtime: FlowRuntime, events: Events
) -> None:
    wf = ingest(max_frame_bytes=100, hard_max_frame_bytes=1000)
    async with running(runtime, wf) as (executor, run):
        port = await events.port()
        async with connect(f"ws://127.0.0.1:{port}") as soft:
            await soft.send(b'"' + b"s" * 200 + b'"')  # to error, kept open
            async with connect(f"ws://127.0.0.1:{port}") as hard:
                await hard.send(b'"' + b"h" * 2000 + b'"')
                with pytest.raises(ConnectionClosed) as closed:
                    await hard.recv()
                assert closed.value.rcvd is not None
                assert closed.value.rcvd.code == 1009
            event = await events.wait("frame_too_big")
            assert event.data["limit"] == 1000
            await soft.send(b'{"ok": 1}')
            await until(lambda: items_in(executor, "out") == 1)
            await until(lambda: items_in(executor, "errors") == 2)
        executor.stop()
        result = await run
    assert result.ok, result.error
    assert SOURCES[0].statistics().oversized_frames == 2


def test_config_refuses_a_budget_or_limit_below_one() -> None:
    from connectors.websocket import WebSocketSourceConfig

    with pytest.raises(ValueError, match="max_buffered_bytes must be >= 1"):
        WebSocketSourceConfig(mode="server", max_buffered_bytes=0)
    with pytest.raises(ValueError, match="max_connections must be >= 1"):
        WebSocketSourceConfig(mode="server", max_connections=0)


async def test_resident_memory_stays_under_the_budget_whatever_the_clients() -> None:
    # The attack of issue 11: many clients, ~1 MB frames, a slow sink. Before
    # the budget, 60 clients grew the source by ~240 MB; now by the budget and
    # an overhead that does not grow with the clients (the graph's batches,
    # transient copies, the allocator's slack, code run for the first time).
    budget = 4 << 20
    report = await ws_memory.flood(
        clients=60,
        frames=3,
        frame_bytes=1_000_000,
        budget=budget,
        delay_ms=1.0,
        capacity=2,
    )
    assert report["error"] is None
    assert report["records"] == report["sent"] == 180
    assert report["stats"]["peak_held_bytes"] <= budget + SLACK + 1_000_000
    # Measured +36..45 MB on a loaded 2-core machine (before: about +240 MB).
    assert report["growth_mb"] < budget / 2**20 + 64, report


def test_the_flood_tool_runs_as_a_module() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.ws_memory", "--clients=3", "--frames=2"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ws_memory.ROOT,
        timeout=120,
    )
    report = json.loads(out.stdout)
    assert report["records"] == 6
