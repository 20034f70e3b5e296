from __future__ import annotations

import asyncio
import socket
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import parse_qsl, urlsplit

import httpx
import msgspec
import pytest

from examples.http_fanout_server import running as fanout_server
from flowstream import FlowRuntime
from flowstream.core.events import NodeFailed
from flowstream.core.node import node
from flowstream.core.workflow import (
    ContinueOnError,
    RetryPolicy,
    Workflow,
    load_workflow,
)
from flowstream.nodes import http, transform
from flowstream.testing import run_nodes, run_workflow

from .test_control import docstring_example, problems, registry

if TYPE_CHECKING:
    from collections.abc import Iterator

    from flowstream.runtime.registry import NodeRegistry

ROOT = Path(__file__).resolve().parents[2]

# --- a real local server --------------------------------------------------------------


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.lock = threading.Lock()
        self.hits: dict[str, int] = {}
        self.release = threading.Event()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that timed out and left: expected here, not news


class Handler(BaseHTTPRequestHandler):
    server: Server

    def do_GET(self) -> None:
        self.handle_any()

    def do_POST(self) -> None:
        self.handle_any()

    def do_PUT(self) -> None:
        self.handle_any()

    def handle_any(self) -> None:
        url = urlsplit(self.path)
        size = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(size).decode() if size else None
        parts = url.path.strip("/").split("/")
        route = parts[0]
        if route == "hello":
            self.reply(200, {"hello": "world"})
        elif route == "text":
            self.reply(200, b"plain text", "text/plain; charset=utf-8")
        elif route == "echo":
            self.reply(
                200,
                {
                    "method": self.command,
                    "query": dict(parse_qsl(url.query)),
                    "body": body,
                    "content_type": self.headers.get("Content-Type"),
                    "token": self.headers.get("X-Token"),
                },
            )
        elif route == "flaky":
            # /flaky/<name>?fail=N: N answers 503, then 200.
            fail = int(dict(parse_qsl(url.query)).get("fail", "1"))
            with self.server.lock:
                hits = self.server.hits[parts[1]] = (
                    self.server.hits.get(parts[1], 0) + 1
                )
            if hits <= fail:
                self.reply(503, {"error": "busy"})
            else:
                self.reply(200, {"name": parts[1], "hits": hits})
        elif route == "status":
            self.reply(int(parts[1]), {"code": int(parts[1])})
        elif route == "hang":
            self.server.release.wait(5.0)
            self.reply(200, {"late": True})
        elif route == "badjson":
            self.reply(200, b"{nope", "application/json")
        elif route == "problem":
            self.reply(422, {"title": "bad"}, "application/problem+json")
        elif route == "empty":
            self.reply(200, b"", "application/json")
        else:
            self.reply(404, {"error": "not found"})

    def reply(self, status: int, body: Any, kind: str = "application/json") -> None:
        data = body if isinstance(body, bytes) else msgspec.json.encode(body)
        self.send_response(HTTPStatus(status))
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server()
    thread = threading.Thread(
        target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
    )
    thread.start()
    try:
        yield srv
    finally:
        srv.release.set()
        srv.shutdown()
        srv.server_close()
        thread.join()


@pytest.fixture
def closed_port() -> int:
    """A loopback port nobody listens on (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def no_sleep(seconds: float) -> None:
    await asyncio.sleep(0)


def get(url: str, **options: Any) -> Workflow:
    return (
        Workflow("h")
        .node("src", "source.values", values=[None])
        .node("get", "http.request", url=url, **options)
        .connect("src -> get")
    )


# --- requests and responses -----------------------------------------------------------


async def test_json_body_is_decoded(server: Server) -> None:
    got = await run_nodes(
        http.http_request,
        [None, None],
        {"url": server.url("/hello")},
        registry=registry(),
    )
    assert [r["body"] for r in got["out"]] == [{"hello": "world"}] * 2
    response = got["out"][0]
    assert response["status"] == 200
    assert response["headers"]["content-type"] == "application/json"
    assert response["headers"]["content-length"] == "17"


@pytest.mark.parametrize(
    ("path", "body"),
    [("/text", "plain text"), ("/empty", None), ("/problem", {"title": "bad"})],
)
async def test_body_is_text_unless_the_response_is_json(
    server: Server, path: str, body: Any
) -> None:
    got = await run_nodes(
        http.http_request,
        [None],
        {"url": server.url(path), "raise_for_status": False},
        registry=registry(),
    )
    assert got["out"][0]["body"] == body


async def test_items_override_the_config(server: Server) -> None:
    echo = server.url("/echo")
    config = {
        "method": "POST",
        "url": echo,
        "params": {"a": "1"},
        "json": {"cfg": True},
        "headers": {"X-Token": "t0k"},
    }
    items = [
        f"{echo}?from=item",
        {"url": echo, "params": {"b": 2, "a": "item"}, "json": {"x": [1, 2]}},
        {"body": "hi there", "other": "ignored"},
        {"json": None},
        7,
    ]
    got = await run_nodes(http.http_request, items, config, registry=registry())
    bodies = [r["body"] for r in got["out"]]
    json_type = "application/json"
    assert bodies == [
        {
            "method": "POST",
            "query": {"from": "item", "a": "1"},
            "body": '{"cfg":true}',
            "content_type": json_type,
            "token": "t0k",
        },
        {
            "method": "POST",
            "query": {"a": "item", "b": "2"},
            "body": '{"x":[1,2]}',
            "content_type": json_type,
            "token": "t0k",
        },
        {
            "method": "POST",
            "query": {"a": "1"},
            "body": "hi there",
            "content_type": None,
            "token": "t0k",
        },
        {
            "method": "POST",
            "query": {"a": "1"},
            "body": "null",
            "content_type": json_type,
            "token": "t0k",
        },
        {
            "method": "POST",
            "query": {"a": "1"},
            "body": '{"cfg":true}',
            "content_type": json_type,
            "token": "t0k",
        },
    ]


async def test_5xx_is_retried_by_the_nodes_policy_then_succeeds(server: Server) -> None:
    runtime = FlowRuntime(registry())
    seen: list[Any] = []
    runtime.bus.add_listener(seen.append)
    wf = (
        Workflow("h")
        .node("src", "source.values", values=["a", "b"])
        .node("url", "transform.map", expr=f'"{server.url("/flaky/")}" + x + "?fail=2"')
        .node("get", "http.request", retry=RetryPolicy(max_attempts=3, delay_ms=10))
        .connect("src -> url")
        .connect("url -> get")
    )
    delays: list[float] = []

    async def sleep(seconds: float) -> None:
        delays.append(seconds)

    result = await runtime.arun(wf, sleep=sleep)
    assert result.ok, result.error
    assert [r["body"] for r in result.output("get")] == [
        {"name": "a", "hits": 3},
        {"name": "b", "hits": 3},
    ]
    failed = [e for e in seen if isinstance(e, NodeFailed)]
    assert len(failed) == 4
    assert all(e.will_retry and e.error_type == "HTTPStatusError" for e in failed)
    assert "HTTP 503 Service Unavailable" in failed[0].error
    assert delays == [0.01, 0.02, 0.01, 0.02]


async def test_continue_on_error_puts_failed_requests_in_dead_letters(
    server: Server, closed_port: int
) -> None:
    items = [
        server.url("/hello"),
        server.url("/flaky/x?fail=5"),
        server.url("/status/404"),
        f"http://127.0.0.1:{closed_port}/",
        server.url("/hang"),
        server.url("/badjson"),
        "ftp://127.0.0.1/nope",
        {"url": server.url("/echo"), "json": 1j},
        server.url("/hello"),
    ]
    wf = (
        Workflow("h")
        .node("src", "source.values", values=items)
        .node(
            "get",
            "http.request",
            timeout_s=0.15,
            retry=RetryPolicy(max_attempts=2, delay_ms=0),
            error_handling=ContinueOnError(),
        )
        .connect("src -> get")
    )
    result = await run_workflow(wf, registry(), sleep=no_sleep)
    assert result.ok, result.error
    assert [r["body"] for r in result.output("get")] == [{"hello": "world"}] * 2
    letters = result.dead_letters
    assert [d.item for d in letters] == items[1:-1]
    assert [d.error_type for d in letters] == [
        "HTTPStatusError",
        "HTTPStatusError",
        "ConnectError",
        "TimeoutError",
        "DecodeError",
        "ValueError",
        "TypeError",
    ]
    reasons = [d.reason for d in letters]
    assert reasons[0].startswith("HTTPStatusError: GET http://127.0.0.1:")
    assert "HTTP 503 Service Unavailable" in reasons[0]
    assert "HTTP 404 Not Found" in reasons[1]
    assert f"127.0.0.1:{closed_port}/: cannot connect" in reasons[2]
    assert "no answer within 0.15 s (ReadTimeout)" in reasons[3]
    assert "says it is JSON but is not" in reasons[4]
    assert "must start with http:// or https://" in reasons[5]
    assert server.hits["x"] == 2  # retried once, per the policy


async def test_status_errors_fail_the_run_by_default(server: Server) -> None:
    result = await run_workflow(get(server.url("/status/500")), registry())
    assert result.status == "failed"
    assert result.error is not None
    assert "node 'get' (http.request) failed" in result.error
    assert "HTTP 500 Internal Server Error" in result.error


async def test_raise_for_status_false_emits_error_responses(server: Server) -> None:
    result = await run_workflow(
        get(server.url("/status/404"), raise_for_status=False), registry()
    )
    assert result.ok, result.error
    [response] = result.output("get")
    assert response["status"] == 404
    assert response["body"] == {"code": 404}


async def test_docstring_example_runs(server: Server) -> None:
    example = docstring_example(http.http_request)
    config = example.decl["config"]
    assert config["url"].startswith("http://127.0.0.1:8080/")
    config["url"] = config["url"].replace("http://127.0.0.1:8080", server.url(""))
    got = await run_nodes(
        http.http_request, example.inputs, config, registry=registry()
    )
    trimmed = [{"status": r["status"], "body": r["body"]} for r in got["out"]]
    assert trimmed == example.outputs["out"]


class Link(msgspec.Struct, frozen=True, kw_only=True):
    url: str


@node("test.link", config=Link)
async def link(*, config: Link) -> str:
    return config.url


async def test_request_after_a_one_shot_node_is_called_directly(
    server: Server,
) -> None:
    reg = registry()
    reg.register(link)
    wf = (
        Workflow("h")
        .node("where", "test.link", url=server.url("/hello"))
        .node("get", "http.request")
        .connect("where -> get")
    )
    result = await run_workflow(wf, reg)
    assert result.ok, result.error
    assert [r["body"] for r in result.output("get")] == [{"hello": "world"}]


# --- the client's life ---------------------------------------------------------------


class Recording(http.HttpRequestNode):
    """http.request over a mock transport, remembering its clients."""

    clients: ClassVar[list[httpx.AsyncClient]] = []
    entered: ClassVar[asyncio.Event | None] = None

    def __init__(self, config: http.HttpRequest) -> None:
        super().__init__(config, transport=httpx.MockTransport(self.answer))

    async def answer(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/forever":
            assert self.entered is not None
            self.entered.set()
            await asyncio.Event().wait()
        if request.url.path == "/fail":
            return httpx.Response(500)
        return httpx.Response(200, json={"path": request.url.path})

    async def initialize(self, ctx: Any) -> None:
        await super().initialize(ctx)
        assert self._client is not None
        self.clients.append(self._client)


recording = node("http.request", config=http.HttpRequest)(Recording)


def recording_registry() -> NodeRegistry:
    reg = registry()
    reg.register(recording, replace=True)
    return reg


@pytest.mark.parametrize("path", ["/ok", "/fail"])
async def test_the_client_is_closed_when_the_run_ends(path: str) -> None:
    Recording.clients = []
    result = await run_workflow(get(f"http://example.test{path}"), recording_registry())
    assert result.ok == (path == "/ok")
    [client] = Recording.clients
    assert client.is_closed


async def test_the_client_is_closed_when_the_run_is_cancelled() -> None:
    Recording.clients = []
    Recording.entered = asyncio.Event()
    wf = get("http://example.test/forever")
    wf.mode = "stream"
    executor = FlowRuntime(recording_registry()).executor(wf)
    async with asyncio.TaskGroup() as tg:
        run = tg.create_task(executor.run())
        await Recording.entered.wait()
        executor.cancel()
    assert run.result().status == "cancelled"
    [client] = Recording.clients
    assert client.is_closed


async def test_one_client_per_node_per_run() -> None:
    Recording.clients = []
    wf = (
        Workflow("h")
        .node("src", "source.values", values=["http://a.test/1", "http://a.test/2"])
        .node("one", "http.request")
        .node("two", "http.request")
        .connect("src -> one")
        .connect("src -> two")
    )
    result = await run_workflow(wf, recording_registry())
    assert result.ok, result.error
    assert len(result.output("one")) == len(result.output("two")) == 2
    assert len(Recording.clients) == 2
    assert all(c.is_closed for c in Recording.clients)


async def test_execute_needs_initialize() -> None:
    config = http.HttpRequest(url="http://a.test/")
    instance = http.HttpRequestNode(
        config, transport=httpx.MockTransport(lambda r: httpx.Response(204))
    )
    with pytest.raises(RuntimeError, match="before initialize"):
        await instance.execute(None)
    await instance.initialize(None)  # type: ignore[arg-type]
    assert (await instance.execute(None))["status"] == 204
    await instance.shutdown()
    await instance.shutdown()
    with pytest.raises(RuntimeError, match="after shutdown"):
        await instance.execute(None)


def test_config_problems() -> None:
    assert any(
        "config.method" in p for p in problems("http.request", {"method": "get"})
    )
    found = problems("http.request", {"url": "ftp://x"})
    assert any("url must start with http:// or https://" in p for p in found)
    found = problems("http.request", {"json": {"a": 1}, "body": "b"})
    assert any("set json or body, not both" in p for p in found)
    found = problems("http.request", {"timeout_s": 0})
    assert any("timeout_s must be a finite number > 0, got 0" in p for p in found)
    found = problems("http.request", {"params": {"a": {"nested": 1}}})
    assert any("config.params" in p and "got `object`" in p for p in found)
    found = problems("http.request", {"bogus": 1})
    assert any("config.bogus" in p for p in found)


# --- examples/batch_http.yaml -------------------------------------------------------


async def test_batch_http_example_runs_end_to_end() -> None:
    reg = registry()
    if "transform.reduce" not in reg:
        reg.register(transform.reduce)
    runtime = FlowRuntime(reg)
    seen: list[Any] = []
    runtime.bus.add_listener(seen.append)
    text = (ROOT / "examples" / "batch_http.yaml").read_text()
    assert "http://127.0.0.1:8765/" in text
    with fanout_server() as base:
        wf = load_workflow(text.replace("http://127.0.0.1:8765", base), "yaml")
        result = await runtime.arun(wf)
    assert result.ok, result.error
    assert result.output("total") == [{"key": None, "value": 3000}]
    assert result.output("lines") == [
        {"sku": "A1", "value_cents": 1000},
        {"sku": "B2", "value_cents": 1000},
        {"sku": "C3", "value_cents": 1000},
        {"sku": "D4", "value_cents": 0},
    ]
    per_service = sorted(result.output("per_service"), key=lambda r: r["key"])
    assert per_service == [{"key": "prices", "value": 4}, {"key": "stock", "value": 4}]
    retried = [e for e in seen if isinstance(e, NodeFailed)]
    assert [(e.node_id, e.will_retry) for e in retried] == [("stock", True)]
