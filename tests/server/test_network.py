"""Uploaded workflows reach only what the operator allows (issue 11, SSRF).

Real servers on 127.0.0.1 are the targets: loopback is what an attacker
would aim at (the flowstream server itself, a metadata service, a database
bound to localhost). Each test checks what the target saw, not only what the
run said.
"""

from __future__ import annotations

import asyncio
import ipaddress
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import pytest
from websockets.asyncio.server import serve

from flowstream import default_registry
from flowstream.core.workflow import parse_workflow
from flowstream.errors import NetworkDenied
from flowstream.runtime.local import WorkflowExecutor
from flowstream.runtime.netpolicy import NetPolicy, check_url, enforce
from flowstream.runtime.validation import validate
from flowstream.server import create_app

from .conftest import AUTH, finished, make_config, open_client, wait_for_run

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator
    from pathlib import Path

    import httpx


class Target(ThreadingHTTPServer):
    """An HTTP server on 127.0.0.1 that counts what reaches it."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.hits = 0
        self.lock = threading.Lock()

    @property
    def port(self) -> int:
        return int(self.server_address[1])


class Handler(BaseHTTPRequestHandler):
    server: Target

    def do_GET(self) -> None:
        self.answer()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.answer()

    def answer(self) -> None:
        with self.server.lock:
            self.server.hits += 1
        body = b'{"secret": "internal"}'
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def target() -> Iterator[Target]:
    srv = Target()
    thread = threading.Thread(
        target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
    )
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(5)


@pytest.fixture
async def ws_target() -> AsyncIterator[tuple[int, list[str]]]:
    """A WebSocket server on 127.0.0.1: its port and the frames it received."""
    received: list[str] = []

    async def handler(ws: Any) -> None:
        async for frame in ws:
            received.append(frame)

    async with serve(handler, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield port, received


def request_workflow(
    url: str | None, values: list[Any] | None = None
) -> dict[str, Any]:
    config = {"url": url} if url is not None else {}
    return {
        "name": "fetch",
        "nodes": [
            {"id": "src", "type": "source.values", "config": {"values": values or [0]}},
            {"id": "get", "type": "http.request", "config": config},
            {"id": "out", "type": "sink.collect"},
        ],
        "connections": ["src -> get", "get -> out"],
    }


def sink_workflow(node_type: str, url: str) -> dict[str, Any]:
    return {
        "name": "ship",
        "nodes": [
            {"id": "src", "type": "source.values", "config": {"values": [1, 2]}},
            {"id": "send", "type": node_type, "config": url_config(node_type, url)},
        ],
        "connections": ["src -> send"],
    }


def url_config(node_type: str, url: str) -> dict[str, Any]:
    if node_type == "ws.sink":
        return {"mode": "client", "url": url, "reconnect": {"max_attempts": 1}}
    return {"url": url, "max_attempts": 1}


async def put(client: httpx.AsyncClient, doc: dict[str, Any]) -> httpx.Response:
    return await client.put(f"/api/workflows/{doc['name']}", json=doc, headers=AUTH)


async def run(client: httpx.AsyncClient, doc: dict[str, Any]) -> dict[str, Any]:
    r = await put(client, doc)
    assert r.status_code == 200, r.text
    r = await client.post(f"/api/workflows/{doc['name']}/runs", headers=AUTH)
    assert r.status_code == 201, r.text
    return await wait_for_run(client, r.json()["run_id"], finished)


def problems_of(r: httpx.Response) -> list[dict[str, Any]]:
    assert r.status_code == 422, r.text
    problems: list[dict[str, Any]] = r.json()["problems"]
    return problems


# --- validation: nothing is reachable unless allowed ----------------------------


async def test_outbound_urls_are_refused_without_allow_net(
    tmp_path: Path, target: Target
) -> None:
    url = f"http://127.0.0.1:{target.port}/"
    async with open_client(create_app(make_config(tmp_path))) as client:
        (p,) = problems_of(await put(client, request_workflow(url)))
        assert (p["node"], p["field"]) == ("get", "config.url")
        assert "--allow-net 127.0.0.1" in p["message"]
        for node_type, scheme in [
            ("http.sink", "http"),
            ("ws.sink", "ws"),
        ]:
            doc = sink_workflow(node_type, f"{scheme}://example.com/in")
            (p,) = problems_of(await put(client, doc))
            assert (p["node"], p["field"]) == ("send", "config.url")
            assert "allowed: nothing" in p["message"]
        source = {
            "name": "poll",
            "nodes": [
                {"id": "poll", "type": "http.source", "config": {"url": url}},
                {"id": "out", "type": "sink.collect"},
            ],
            "connections": ["poll -> out"],
        }
        (p,) = problems_of(await put(client, source))
        assert (p["node"], p["field"]) == ("poll", "config.url")
    assert target.hits == 0


@pytest.mark.parametrize(
    ("node_type", "config", "kind"),
    [
        ("kafka.source", {"topics": ["t"], "servers": ["10.0.0.5:9092"]}, "private"),
        ("kafka.sink", {"topic": "t", "servers": ["127.0.0.1:9092"]}, "loopback"),
        (
            "nats.source",
            {"stream": "s", "servers": ["nats://192.168.1.2:4222"]},
            "private",
        ),
        ("nats.sink", {"subject": "s", "servers": ["tls://127.0.0.1"]}, "loopback"),
    ],
)
async def test_broker_servers_are_outbound_urls(
    tmp_path: Path, node_type: str, config: dict[str, Any], kind: str
) -> None:
    # Brokers are reached like any URL: an upload naming a private host is
    # refused at validation, before any connection is tried, even where
    # every public host is allowed.
    source = node_type.endswith(".source")
    doc = {
        "name": "brokers",
        "mode": "stream",
        "nodes": [
            {"id": "io", "type": node_type, "config": config},
            {"id": "other", "type": "sink.null" if source else "source.timer"},
        ],
        "connections": ["io -> other" if source else "other -> io"],
    }
    async with open_client(create_app(make_config(tmp_path, allow_net=("*",)))) as c:
        (p,) = problems_of(await put(c, doc))
    assert (p["node"], p["field"]) == ("io", "config.servers[0]")
    assert f"is a {kind} address" in p["message"]


async def test_listening_nodes_bind_loopback_only(tmp_path: Path) -> None:
    doc: dict[str, Any] = {
        "name": "ingest",
        "mode": "stream",
        "nodes": [
            {
                "id": "in",
                "type": "ws.source",
                "config": {"mode": "server", "host": "0.0.0.0"},
            },
            {"id": "out", "type": "sink.null"},
        ],
        "connections": ["in -> out"],
    }
    async with open_client(create_app(make_config(tmp_path))) as client:
        (p,) = problems_of(await put(client, doc))
        assert (p["node"], p["field"]) == ("in", "config.host")
        assert "--allow-listen 0.0.0.0" in p["message"]
        doc["nodes"][0]["config"]["host"] = "127.0.0.1"
        assert (await put(client, doc)).status_code == 200
    config = make_config(tmp_path, allow_listen=("0.0.0.0",))
    async with open_client(create_app(config)) as client:
        doc["nodes"][0]["config"]["host"] = "0.0.0.0"
        assert (await put(client, doc)).status_code == 200


# --- runs: addresses are checked after DNS resolution ----------------------------


async def test_a_name_that_resolves_to_loopback_is_refused(
    tmp_path: Path, target: Target
) -> None:
    # The name is allowed; what it resolves to is not: the check is on the
    # address the socket connects to, as it would be after DNS rebinding.
    config = make_config(tmp_path, allow_net=("localhost",))
    async with open_client(create_app(config)) as client:
        detail = await run(client, request_workflow(f"http://localhost:{target.port}/"))
    assert detail["status"] == "failed", detail
    assert "loopback address" in detail["error"]
    assert "--allow-private-net" in detail["error"]
    assert "internal" not in str(detail["outputs"])
    assert target.hits == 0


async def test_an_items_url_is_checked_too(tmp_path: Path, target: Target) -> None:
    config = make_config(tmp_path, allow_net=("api.example.com",))
    item = {"url": f"http://127.0.0.1:{target.port}/"}
    async with open_client(create_app(config)) as client:
        detail = await run(client, request_workflow(None, [item]))
    assert detail["status"] == "failed", detail
    assert "not allowed by this server's network policy" in detail["error"]
    assert target.hits == 0


@pytest.mark.parametrize("node_type", ["http.sink", "ws.sink"])
async def test_sinks_are_refused_loopback(
    tmp_path: Path,
    target: Target,
    ws_target: tuple[int, list[str]],
    node_type: str,
) -> None:
    ws_port, received = ws_target
    url = (
        f"ws://localhost:{ws_port}/"
        if node_type == "ws.sink"
        else f"http://localhost:{target.port}/"
    )
    config = make_config(tmp_path, allow_net=("localhost",))
    async with open_client(create_app(config)) as client:
        detail = await run(client, sink_workflow(node_type, url))
    assert detail["status"] == "failed", detail
    assert "loopback address" in detail["error"]
    assert (target.hits, received) == (0, [])


async def test_http_source_is_refused_loopback(tmp_path: Path, target: Target) -> None:
    doc = {
        "name": "poll",
        "nodes": [
            {
                "id": "poll",
                "type": "http.source",
                "config": {"url": f"http://localhost:{target.port}/", "count": 1},
            },
            {"id": "out", "type": "sink.collect"},
        ],
        "connections": ["poll -> out"],
    }
    config = make_config(tmp_path, allow_net=("localhost",))
    async with open_client(create_app(config)) as client:
        detail = await run(client, doc)
    assert detail["status"] == "failed", detail
    assert "loopback address" in detail["error"]
    assert target.hits == 0


@pytest.mark.parametrize(
    "allow",
    [
        {"allow_net": ("127.0.0.1:{port}",)},
        {"allow_net": ("localhost",), "allow_private_net": True},
    ],
    ids=["address-pattern", "allow-private-net"],
)
async def test_loopback_is_reachable_when_explicitly_allowed(
    tmp_path: Path, target: Target, allow: dict[str, Any]
) -> None:
    allow = {
        k: tuple(p.format(port=target.port) for p in v) if isinstance(v, tuple) else v
        for k, v in allow.items()
    }
    host = "127.0.0.1" if "allow_private_net" not in allow else "localhost"
    async with open_client(create_app(make_config(tmp_path, **allow))) as client:
        detail = await run(client, request_workflow(f"http://{host}:{target.port}/"))
    assert detail["status"] == "completed", detail
    assert detail["outputs"]["out"]["out"][0]["body"] == {"secret": "internal"}
    assert target.hits == 1


async def test_an_address_pattern_names_its_port_only(
    tmp_path: Path, target: Target
) -> None:
    config = make_config(tmp_path, allow_net=(f"127.0.0.1:{target.port + 1}",))
    async with open_client(create_app(config)) as client:
        r = await put(client, request_workflow(f"http://127.0.0.1:{target.port}/"))
        (p,) = problems_of(r)
        assert p["field"] == "config.url"


# --- the command line is trusted -------------------------------------------------


async def test_cli_runs_are_not_confined(target: Target) -> None:
    workflow = parse_workflow(request_workflow(f"http://127.0.0.1:{target.port}/"))
    graph = validate(workflow, default_registry())
    result = await WorkflowExecutor(graph).run()
    assert result.status == "completed", result.error
    assert target.hits == 1


# --- the socket check, whichever library connects --------------------------------


async def test_every_socket_of_a_run_is_checked(target: Target) -> None:
    with enforce(NetPolicy(allow=("*",))):
        with pytest.raises(NetworkDenied, match="loopback"):
            await asyncio.open_connection("localhost", target.port)
        # asyncio re-raises a refused bind as a plain OSError with the reason.
        with pytest.raises(OSError, match=r"listening on '0\.0\.0\.0'"):
            await asyncio.start_server(lambda r, w: None, "0.0.0.0", 0)
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        server.close()
        await server.wait_closed()
        # Tasks started under the policy inherit it.
        task = asyncio.create_task(asyncio.open_connection("127.0.0.1", target.port))
        with pytest.raises(NetworkDenied):
            await task
    # Outside the policy (the command line), nothing is checked.
    _, writer = await asyncio.open_connection("127.0.0.1", target.port)
    writer.close()
    await writer.wait_closed()


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("10.1.2.3", "private"),
        ("192.168.0.1", "private"),
        ("172.16.0.1", "private"),
        ("100.64.0.1", "private"),
        ("fc00::1", "private"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("240.0.0.1", "reserved"),
    ],
)
def test_special_addresses_are_refused(address: str, kind: str) -> None:
    ip = ipaddress.ip_address(address)
    with pytest.raises(NetworkDenied, match=f"a {kind} address"):
        NetPolicy(allow=("*",)).check_address(ip, 80)
    NetPolicy(allow=("*",), allow_private=True).check_address(ip, 80)


def test_public_addresses_need_a_pattern() -> None:
    public = ipaddress.ip_address("93.184.216.34")
    with pytest.raises(NetworkDenied, match="allowed: nothing"):
        NetPolicy().check_address(public, 443)
    NetPolicy(allow=("example.com",)).check_address(public, 443)
    NetPolicy(allow=("93.184.216.0/24:443",)).check_address(public, 443)
    with pytest.raises(NetworkDenied):
        NetPolicy(allow=("93.184.216.0/24:443",)).check_address(public, 80)


@pytest.mark.parametrize(
    ("pattern", "url", "ok"),
    [
        ("example.com", "https://example.com/x", True),
        ("example.com", "https://api.example.com/x", False),
        ("*.example.com", "https://api.example.com/x", True),
        ("*.example.com", "https://example.com/x", False),
        ("example.com:8443", "https://example.com/x", False),
        ("example.com:443", "https://EXAMPLE.com./x", True),
        ("[::1]:8080", "http://[::1]:8080/", True),
        ("*", "ws://anything.test/", True),
    ],
)
async def test_allow_patterns(pattern: str, url: str, ok: bool) -> None:
    with enforce(NetPolicy(allow=(pattern,), allow_private=True)):
        if ok:
            check_url(url)
        else:
            with pytest.raises(NetworkDenied):
                check_url(url)


@pytest.mark.parametrize("pattern", ["", "[::1", "host:99999", "10.0.0.0/33", "a/b"])
def test_bad_patterns_are_refused_at_start(tmp_path: Path, pattern: str) -> None:
    with pytest.raises(ValueError, match="allow pattern"):
        make_config(tmp_path, allow_net=(pattern,))


async def test_ws_source_client_is_refused_loopback(
    tmp_path: Path, ws_target: tuple[int, list[str]]
) -> None:
    port, _ = ws_target
    doc = {
        "name": "listen",
        "mode": "stream",
        "nodes": [
            {
                "id": "in",
                "type": "ws.source",
                "config": {
                    "mode": "client",
                    "url": f"ws://localhost:{port}/",
                    "reconnect": {"max_attempts": 1},
                },
            },
            {"id": "out", "type": "sink.null"},
        ],
        "connections": ["in -> out"],
    }
    config = make_config(tmp_path, allow_net=("localhost",))
    async with open_client(create_app(config)) as client:
        detail = await run(client, doc)
    assert detail["status"] == "failed", detail
    assert "loopback address" in detail["error"]
