from __future__ import annotations

import asyncio
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import httpx
import msgspec
import pytest

from connectors.http import http_nodes, http_sink, http_source
from flowstream import (
    ContinueOnError,
    FlowRuntime,
    NodeEvent,
    Workflow,
    WorkflowExecutor,
    default_registry,
)
from flowstream.errors import WorkflowValidationError
from tests.local import local

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

URL = "http://api.test/items"


def mocked(handler: Callable[[httpx.Request], httpx.Response]) -> FlowRuntime:
    """A runtime whose HTTP nodes talk to ``handler`` through a MockTransport."""
    transport = httpx.MockTransport(handler)
    registry = default_registry(entry_points=False)
    registry.register_all(http_nodes(lambda: httpx.AsyncClient(transport=transport)))
    return FlowRuntime(registry)


def events(runtime: FlowRuntime, name: str) -> list[Any]:
    seen: list[Any] = []
    runtime.bus.add_listener(
        lambda e: (
            seen.append(e.data) if isinstance(e, NodeEvent) and e.name == name else None
        )
    )
    return seen


def poll(count: int = 1, **config: Any) -> Workflow:
    return (
        Workflow("poll")
        .node("src", "http.source", url=URL, count=count, interval_ms=1, **config)
        .node("out", "sink.collect")
        .connect("src -> out")
    )


def send(values: list[Any], **config: Any) -> Workflow:
    return (
        Workflow("send")
        .node("src", "source.values", values=values)
        .node("dst", "http.sink", url=URL, backoff_ms=1, **config)
        .connect("src -> dst")
    )


# --- http.source ------------------------------------------------------------------


async def test_source_sends_validators_and_emits_nothing_on_304() -> None:
    requests: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        if request.headers.get("if-none-match") == '"v1"':
            return httpx.Response(304)
        return httpx.Response(
            200,
            json=[{"a": 1}, {"a": 2}],
            headers={"ETag": '"v1"', "Last-Modified": "Wed, 21 Oct 2015 07:28:00 GMT"},
        )

    runtime = mocked(handler)
    executor = local(runtime.executor(poll(count=3, headers={"X-Token": "t"})))
    result = await executor.run()
    assert result.ok, result.error
    assert result.output("out") == [{"a": 1}, {"a": 2}]
    assert len(requests) == 3
    assert "if-none-match" not in requests[0].headers
    assert requests[1].headers["if-none-match"] == '"v1"'
    assert requests[2].headers["if-modified-since"] == "Wed, 21 Oct 2015 07:28:00 GMT"
    assert all(r.headers["x-token"] == "t" for r in requests)
    state = executor.state.for_node("src")
    assert state["etag"] == '"v1"'
    assert state["polls"] == 3


async def test_source_emits_again_when_the_resource_changes() -> None:
    versions = iter([("v1", [1]), ("v1", None), ("v2", [2, 3])])

    def handler(request: httpx.Request) -> httpx.Response:
        tag, body = next(versions)
        if body is None:
            return httpx.Response(304)
        return httpx.Response(200, json=body, headers={"ETag": tag})

    result = await mocked(handler).arun(poll(count=3))
    assert result.output("out") == [1, 2, 3]


async def test_source_survives_failed_polls_and_reports_them() -> None:
    answers = iter([500, 200])

    def handler(request: httpx.Request) -> httpx.Response:
        status = next(answers)
        return httpx.Response(status, json={"ok": status == 200})

    runtime = mocked(handler)
    failures = events(runtime, "poll_failed")
    result = await runtime.arun(poll(count=1))
    assert result.ok, result.error
    assert result.output("out") == [{"ok": True}]
    assert len(failures) == 1
    assert failures[0]["error"].startswith("HTTP 500 Internal Server Error")


async def test_source_fails_after_max_failures_in_a_row() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        msg = "refused"
        raise httpx.ConnectError(msg, request=request)

    result = await mocked(handler).arun(poll(count=1, max_failures=3))
    assert result.status == "failed"
    assert result.error is not None
    assert f"3 polls of {URL} in a row failed; last: ConnectError: refused" in (
        result.error
    )


async def test_source_dead_letters_bad_bodies_and_records() -> None:
    bodies = iter(
        [
            b'{"n": 1}\n{"n": "two"}\nnope\n{"n": 4}\n',
            b"x" * 100,
        ]
    )

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=next(bodies))

    runtime = mocked(handler)
    workflow = poll(count=2, format="jsonl", schema={"n": "int"}, max_body_bytes=64)
    result = await runtime.arun(workflow)
    assert result.ok, result.error
    assert result.output("out") == [{"n": 1}, {"n": 4}]
    reasons = [d.reason for d in result.dead_letters]
    assert reasons[0].startswith("line 2: schema violation")
    assert reasons[1].startswith("line 3: malformed json")
    assert reasons[2] == "body exceeds max_body_bytes=64"
    assert result.dead_letters[0].item == {
        "url": URL,
        "status": 200,
        "raw": b'{"n":"two"}',
    }


async def test_source_in_stream_mode_runs_until_stopped() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"tick": True})

    runtime = mocked(handler)
    wf = (
        Workflow("poll", mode="stream")
        .node("src", "http.source", url=URL, interval_ms=2)
        .node("out", "sink.collect")
        .connect("src -> out")
    )
    executor = local(runtime.executor(wf))
    run = asyncio.ensure_future(executor.run())
    await wait_for(lambda: items_in(executor, "out") >= 3, "three polls")
    executor.stop()
    result = await run
    assert result.ok, result.error
    assert len(result.output("out")) >= 3


# --- http.sink --------------------------------------------------------------------


async def test_sink_posts_batches_split_at_max_batch() -> None:
    bodies: list[Any] = []

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.method == "POST"
        assert request.headers["content-type"] == "application/json"
        bodies.append(json.loads(request.content))
        return httpx.Response(200)

    runtime = mocked(handler)
    executor = local(runtime.executor(send(list(range(10)), max_batch=4)))
    result = await executor.run()
    assert result.ok, result.error
    assert bodies == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert executor.state.for_node("dst") == {"requests": 3, "records": 10}


@pytest.mark.parametrize(
    ("fmt", "content_type", "decode"),
    [
        ("jsonl", "application/x-ndjson", lambda b: [json.loads(x) for x in b.split()]),
        ("msgpack", "application/msgpack", msgspec.msgpack.decode),
    ],
)
async def test_sink_formats(fmt: str, content_type: str, decode: Any) -> None:
    bodies: list[Any] = []

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["content-type"] == content_type
        bodies.append(decode(request.content))
        return httpx.Response(204)

    result = await mocked(handler).arun(send([{"a": 1}, {"b": 2}], format=fmt))
    assert result.ok, result.error
    assert bodies == [[{"a": 1}, {"b": 2}]]


async def test_sink_retries_a_5xx_then_succeeds() -> None:
    answers = iter([503, 200])
    received: list[Any] = []

    def handler(request: httpx.Request) -> httpx.Response:
        status = next(answers)
        if status == 200:
            received.append(json.loads(request.content))
        return httpx.Response(status, headers={"Retry-After": "0"})

    runtime = mocked(handler)
    retries = events(runtime, "retry")
    result = await runtime.arun(send([1, 2, 3]))
    assert result.ok, result.error
    assert received == [[1, 2, 3]]  # delivered once the server took it
    assert len(retries) == 1
    assert retries[0]["attempt"] == 1
    assert retries[0]["error"].startswith("HTTP 503")


async def test_sink_retries_network_errors() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            msg = "slow"
            raise httpx.ReadTimeout(msg, request=request)
        return httpx.Response(200)

    result = await mocked(handler).arun(send([1]))
    assert result.ok, result.error
    assert calls == 2


async def test_sink_fails_when_attempts_run_out() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(502, text="bad gateway")

    result = await mocked(handler).arun(send([1], max_attempts=3))
    assert result.status == "failed"
    assert calls == 3
    assert result.error is not None
    assert "'dst'" in result.error
    assert f"POST {URL} failed 3 times; last: HTTP 502 Bad Gateway: bad gateway" in (
        result.error
    )


async def test_sink_refused_batch_fails_or_goes_to_the_error_port() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, text="no thanks")

    runtime = mocked(handler)
    result = await runtime.arun(send([1, 2]))
    assert result.status == "failed"
    assert result.error is not None
    assert "was refused: HTTP 400 Bad Request: no thanks" in result.error

    wf = send([1, 2])
    wf.get_node("dst").error_handling = ContinueOnError()
    result = await runtime.arun(wf)
    assert result.ok, result.error
    (letter,) = result.dead_letters
    assert letter.item == [1, 2]  # the batch
    assert "no thanks" in letter.reason


async def test_sink_dead_letters_items_it_cannot_encode() -> None:
    bodies: list[Any] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return httpx.Response(200)

    wf = (
        Workflow("send")
        .node("src", "source.range", stop=4)
        .node("odd", "transform.map", fn=f"{__name__}:unencodable_odd")
        .node("dst", "http.sink", url=URL)
        .connect("src -> odd")
        .connect("odd -> dst")
    )
    result = await mocked(handler).arun(wf)
    assert result.ok, result.error
    assert bodies == [[0, 2]]
    assert [d.item for d in result.dead_letters] == [1j, 3j]


def unencodable_odd(x: int) -> Any:
    return complex(0, x) if x % 2 else x


# --- a real server on 127.0.0.1 -----------------------------------------------------


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), LocalHandler)
        self.posts: list[Any] = []
        self.gets: list[str | None] = []
        self.fail_next_post = True

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}/items"


class LocalHandler(BaseHTTPRequestHandler):
    server: Server

    def do_GET(self) -> None:
        tag = self.headers.get("If-None-Match")
        self.server.gets.append(tag)
        if tag == '"v1"':
            self.send_response(304)
            self.end_headers()
            return
        body = b'[{"id": 1}, {"id": 2}]'
        self.send_response(200)
        self.send_header("ETag", '"v1"')
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        status = 503 if self.server.fail_next_post else 200
        self.server.fail_next_post = False
        if status == 200:
            self.server.posts.append(json.loads(body))
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server()
    thread = threading.Thread(
        target=srv.serve_forever, kwargs={"poll_interval": 0.01}, name="test-http"
    )
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join()


async def test_source_and_sink_against_a_real_local_server(server: Server) -> None:
    registry = default_registry(entry_points=False)
    registry.register_all([http_source, http_sink])
    runtime = FlowRuntime(registry)
    wf = (
        Workflow("real")
        .node("src", "http.source", url=server.url, count=2, interval_ms=1)
        .node("dst", "http.sink", url=server.url, backoff_ms=1)
        .connect("src -> dst")
    )
    result = await runtime.arun(wf)
    assert result.ok, result.error
    assert server.gets == [None, '"v1"']  # the second poll was a 304
    assert server.posts == [[{"id": 1}, {"id": 2}]]  # after one 503, retried


# --- config -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("node_type", "config", "field", "words"),
    [
        ("http.source", {"url": "ftp://x/y"}, "config.url", "http:// or https://"),
        ("http.source", {"url": "/relative"}, "config.url", "absolute"),
        (
            "http.source",
            {"url": URL, "interval_ms": 0},
            "config.interval_ms",
            "interval_ms",
        ),
        ("http.source", {"url": URL, "count": -1}, "config.count", "count"),
        ("http.source", {"url": URL, "format": "xml"}, "config.format", "enum"),
        (
            "http.source",
            {"url": URL, "format": "raw", "schema": {"a": "int"}},
            "config.schema",
            "raw",
        ),
        ("http.sink", {"url": URL, "max_batch": 0}, "config.max_batch", "max_batch"),
        ("http.sink", {"url": URL, "method": "GET"}, "config.method", "enum"),
        (
            "http.sink",
            {"url": URL, "backoff_multiplier": 0.5},
            "config.backoff_multiplier",
            ">= 1",
        ),
        ("http.sink", {"url": URL, "retries": 3}, "config.retries", "unknown"),
    ],
)
def test_bad_config_names_the_node_and_field(
    node_type: str, config: dict[str, Any], field: str, words: str
) -> None:
    registry = default_registry(entry_points=False)
    registry.register_all([http_source, http_sink])
    wf = Workflow("bad").node("h", node_type, config)
    if node_type == "http.sink":
        wf.node("src", "source.values", values=[]).connect("src -> h")
    with pytest.raises(WorkflowValidationError) as info:
        FlowRuntime(registry).validate(wf)
    (problem,) = info.value.problems
    assert problem.node == "h"
    assert problem.field == field
    assert words in problem.message


# --- helpers ----------------------------------------------------------------------


async def wait_for(condition: Any, what: str, limit: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not condition():
        if loop.time() > deadline:
            msg = f"timed out waiting for {what}"
            raise AssertionError(msg)
        await asyncio.sleep(0.005)


def items_in(executor: WorkflowExecutor, node_id: str) -> int:
    stats = executor.statistics().get(node_id)
    return stats.items_in if stats is not None else 0
