"""Fixtures for the server: apps in-process, and a real server on 127.0.0.1.

In-process tests drive the app through ``httpx.ASGITransport`` inside the app's
lifespan (which owns the runs' task group). `live_server` serves an app with
uvicorn on a free loopback port, in a thread of its own, and always stops it:
sync tests (schemathesis) and async tests (WebSocket, browser) can both use it.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import uvicorn

from flowstream.server import ServerConfig, create_app

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator
    from pathlib import Path

    from litestar import Litestar

TOKEN = "test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

NUMBERS: dict[str, Any] = {
    "name": "numbers",
    "nodes": [
        {"id": "numbers", "type": "source.range", "config": {"stop": 10}},
        {"id": "double", "type": "transform.map", "config": {"expr": "x * 2"}},
        {"id": "keep", "type": "transform.filter", "config": {"expr": "x % 3 != 0"}},
        {"id": "result", "type": "sink.collect"},
    ],
    "connections": ["numbers -> double", "double -> keep", "keep -> result"],
}
NUMBERS_OUT = [2, 4, 8, 10, 14, 16]

# A stream that runs until stopped; the fan-out gives the sinks channels (a
# fused chain has none), so channel fill and batch latency show.
TICKS: dict[str, Any] = {
    "name": "ticks",
    "mode": "stream",
    "nodes": [
        {"id": "tick", "type": "source.timer", "config": {"interval_ms": 5}},
        {"id": "square", "type": "transform.map", "config": {"expr": "x * x"}},
        {"id": "sink", "type": "sink.null"},
        {"id": "other", "type": "sink.null"},
    ],
    "connections": ["tick -> square", "square -> sink", "square -> other"],
}


def make_config(tmp_path: Path, **overrides: Any) -> ServerConfig:
    fields: dict[str, Any] = {
        "db": tmp_path / "flowstream.db",
        "token": TOKEN,
        "sample_interval": 0.05,
        "drain_timeout": 5.0,
    }
    fields.update(overrides)
    return ServerConfig(**fields)


@asynccontextmanager
async def open_client(app: Litestar) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client wired to the app in-process, inside its lifespan.

    The lifespan runs in a task of its own, as under an ASGI server: pytest
    sets a fixture up and tears it down in different tasks, and the app's
    task groups must be entered and left by one task.
    """
    ready = asyncio.Event()
    stop = asyncio.Event()

    async def hold_lifespan() -> None:
        async with app.lifespan():
            ready.set()
            await stop.wait()

    lifespan = asyncio.create_task(hold_lifespan())
    started = asyncio.create_task(ready.wait())
    await asyncio.wait({lifespan, started}, return_when=asyncio.FIRST_COMPLETED)
    if lifespan.done():
        started.cancel()
        lifespan.result()  # raises why the app did not start
    try:
        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(
            transport=transport, base_url="http://127.0.0.1"
        ) as client:
            yield client
    finally:
        stop.set()
        await lifespan


@pytest.fixture
def config(tmp_path: Path) -> ServerConfig:
    return make_config(tmp_path)


@pytest.fixture
async def client(config: ServerConfig) -> AsyncIterator[httpx.AsyncClient]:
    async with open_client(create_app(config)) as c:
        yield c


async def wait_for_run(
    client: httpx.AsyncClient,
    run_id: str,
    done: Any,
    *,
    within: float = 10.0,
) -> dict[str, Any]:
    """Poll a run until ``done(detail)`` holds; fail after ``within`` seconds."""
    async with asyncio.timeout(within):
        while True:
            r = await client.get(f"/api/runs/{run_id}")
            assert r.status_code == 200, r.text
            detail: dict[str, Any] = r.json()
            if done(detail):
                return detail
            await asyncio.sleep(0.02)


def finished(detail: dict[str, Any]) -> bool:
    return detail["status"] in ("completed", "failed", "cancelled", "interrupted")


# --- a real server -------------------------------------------------------------


@dataclass
class LiveServer:
    url: str
    ws_url: str
    config: ServerConfig


def free_socket(port: int = 0) -> socket.socket:
    """A socket bound to 127.0.0.1 (a free port unless one is given)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    return sock


@contextmanager
def running_server(config: ServerConfig, port: int = 0) -> Iterator[LiveServer]:
    """Serve an app for ``config`` on 127.0.0.1 (a free port); always stop it."""
    app = create_app(config)
    sock = free_socket(port)
    host, port = sock.getsockname()
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            log_config=None,
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=5,
        )
    )
    # uvicorn installs signal handlers only in the main thread; this one is not.
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="live-server"
    )
    thread.start()
    try:
        for _ in range(1000):  # readiness: up to ~10 s
            if server.started or not thread.is_alive():
                break
            threading.Event().wait(0.01)
        if not server.started:
            pytest.fail("the server did not start")
        yield LiveServer(f"http://{host}:{port}", f"ws://{host}:{port}", config)
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()
        assert not thread.is_alive(), "the server did not stop"


@pytest.fixture
def live_server(tmp_path: Path) -> Iterator[LiveServer]:
    with running_server(make_config(tmp_path, sample_interval=0.1)) as live:
        yield live
