"""ws.source and ws.sink against real websockets servers and clients on 127.0.0.1.

Every server binds a free port and is stopped by the test that started it.
Nothing sleeps to let things settle: tests wait on node events, on futures,
or poll a condition with a deadline (`until`).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import TYPE_CHECKING, Any

import msgspec
import pytest
import yaml
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed, InvalidStatus

from connectors._records import MAX_RAW_IN_ERROR
from connectors.websocket import (
    Reconnect,
    WebSocketSink,
    WebSocketSinkConfig,
    WebSocketSource,
    WebSocketSourceConfig,
    ws_sink,
    ws_source,
)
from flowstream import (
    ExecutionEvent,
    FlowRuntime,
    NodeEvent,
    RunResult,
    Workflow,
    WorkflowExecutor,
    WorkflowStarted,
    default_registry,
    node,
)
from flowstream.errors import WorkflowValidationError
from tests.local import local

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

FAST_RECONNECT = {"delay_ms": 10, "max_delay_ms": 50}


# --- test nodes and helpers -----------------------------------------------------------

SOURCES: list[WebSocketSource] = []
SINKS: list[WebSocketSink] = []
GATES: dict[str, asyncio.Event] = {}
FEEDS: dict[str, asyncio.Queue[list[Any] | None]] = {}


class RecordedSource(WebSocketSource):
    """ws.source, remembered so that a test can read its statistics."""

    def __init__(self, config: WebSocketSourceConfig) -> None:
        super().__init__(config)
        SOURCES.append(self)


class RecordedSink(WebSocketSink):
    def __init__(self, config: WebSocketSinkConfig) -> None:
        super().__init__(config)
        SINKS.append(self)


class Named(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: str


@node("test.gate", config=Named, batched=True)
async def gate(inp: AsyncIterator[list[Any]], *, config: Named) -> AsyncIterator[Any]:
    """Pass batches on only once the test opens the gate (a stalled pipeline)."""
    event = GATES[config.name]
    async for batch in inp:
        await event.wait()
        yield batch


@node("test.feed", config=Named, batched=True)
async def feed(*, config: Named) -> AsyncIterator[list[Any]]:
    """Emit the batches a test puts in FEEDS[name]; None ends the source."""
    queue = FEEDS[config.name]
    while (batch := await queue.get()) is not None:
        yield batch


@pytest.fixture
def runtime() -> FlowRuntime:
    registry = default_registry(entry_points=False)
    registry.register(msgspec.structs.replace(ws_source, fn=RecordedSource))
    registry.register(msgspec.structs.replace(ws_sink, fn=RecordedSink))
    registry.register(gate)
    registry.register(feed)
    SOURCES.clear()
    SINKS.clear()
    GATES.clear()
    FEEDS.clear()
    return FlowRuntime(registry)


class Events:
    """Node events of a runtime's bus, with waits on them."""

    def __init__(self, runtime: FlowRuntime) -> None:
        self.all: list[ExecutionEvent] = []
        self._changed = asyncio.Event()
        runtime.bus.add_listener(self._seen)

    def _seen(self, event: ExecutionEvent) -> None:
        self.all.append(event)
        self._changed.set()

    def named(self, name: str) -> list[NodeEvent]:
        return [e for e in self.all if isinstance(e, NodeEvent) and e.name == name]

    async def wait(self, name: str, count: int = 1) -> NodeEvent:
        async with asyncio.timeout(10):
            while len(self.named(name)) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.named(name)[count - 1]

    async def port(self) -> int:
        port = (await self.wait("listening")).data["port"]
        assert isinstance(port, int)
        return port


@pytest.fixture
def events(runtime: FlowRuntime) -> Events:
    return Events(runtime)


async def until(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    """Poll ``condition`` until it holds, failing after ``seconds``.

    For states that publish no event (socket buffers, node counters).
    """
    async with asyncio.timeout(seconds):
        while not condition():  # noqa: ASYNC110 - bounded polling, on purpose
            await asyncio.sleep(0.002)


@contextlib.asynccontextmanager
async def running(
    runtime: FlowRuntime, wf: Workflow, **options: Any
) -> AsyncIterator[tuple[WorkflowExecutor, asyncio.Future[RunResult]]]:
    """Run a workflow in the background; cancel it if the test leaves early."""
    executor = local(runtime.executor(wf, **options))
    run = asyncio.ensure_future(executor.run())
    try:
        yield executor, run
    finally:
        if not run.done():
            executor.cancel()
            with contextlib.suppress(Exception):
                await run


def items_in(executor: WorkflowExecutor, node_id: str) -> int:
    stats = executor.statistics().get(node_id)
    return stats.items_in if stats is not None else 0


@pytest.fixture
async def servers() -> AsyncIterator[Callable[..., Awaitable[tuple[Server, int]]]]:
    """Start websockets servers on 127.0.0.1; all are closed at the end."""
    started: list[Server] = []

    async def start(
        handler: Callable[[ServerConnection], Awaitable[None]], port: int = 0
    ) -> tuple[Server, int]:
        server = await serve(handler, "127.0.0.1", port, compression=None)
        started.append(server)
        return server, server.sockets[0].getsockname()[1]

    yield start
    for server in started:
        server.close()
        await server.wait_closed()


def ingest(**config: Any) -> Workflow:
    """ws.source (server) -> out, its errors -> errors; stream mode."""
    return (
        Workflow("ingest", mode="stream")
        .node("src", "ws.source", {"mode": "server", **config})
        .node("out", "sink.collect")
        .node("errors", "sink.collect")
        .connect("src -> out")
        .connect("src.error -> errors")
    )


# --- ws.source, server mode -----------------------------------------------------------


async def test_server_source_takes_frames_from_many_clients(
    runtime: FlowRuntime, events: Events
) -> None:
    clients, frames = 5, 40
    async with running(runtime, ingest()) as (executor, run):
        listening = await events.wait("listening")
        port = await events.port()
        # Bound before the run started: a client may connect on WorkflowStarted.
        started = next(e for e in events.all if isinstance(e, WorkflowStarted))
        assert events.all.index(listening) < events.all.index(started)
        assert listening.data["url"] == f"ws://127.0.0.1:{port}/"

        async def client(c: int) -> None:
            async with connect(f"ws://127.0.0.1:{port}/any/path") as ws:
                for i in range(0, frames, 2):
                    # One record, then an array of one: both framings.
                    await ws.send(msgspec.json.encode({"c": c, "i": i}))
                    await ws.send(msgspec.json.encode([{"c": c, "i": i + 1}]))

        async with asyncio.TaskGroup() as tg:
            for c in range(clients):
                tg.create_task(client(c))
        await until(lambda: items_in(executor, "out") == clients * frames)
        executor.stop()
        result = await run
    assert result.ok, result.error
    got = result.output("out")
    for c in range(clients):
        assert [r["i"] for r in got if r["c"] == c] == list(range(frames))
    assert result.output("errors") == []
    assert len(events.named("client_connected")) == clients
    assert SOURCES[0].statistics().frames == clients * frames


@pytest.mark.parametrize("encoding", ["msgpack", "raw"])
async def test_server_source_encodings(
    runtime: FlowRuntime, events: Events, encoding: str
) -> None:
    records = [{"sensor": "s1", "value": 1.5}, {"sensor": "s2", "value": -2.0}]
    async with running(runtime, ingest(encoding=encoding)) as (executor, run):
        port = await events.port()
        async with connect(f"ws://127.0.0.1:{port}") as ws:
            await ws.send(msgspec.msgpack.encode(records[0]))
            await ws.send(msgspec.msgpack.encode(records))
        want = 3 if encoding == "msgpack" else 2
        await until(lambda: items_in(executor, "out") == want)
        executor.stop()
        result = await run
    assert result.ok, result.error
    if encoding == "msgpack":
        assert result.output("out") == [records[0], *records]
    else:  # a raw record is the frame's bytes
        assert result.output("out") == [
            msgspec.msgpack.encode(records[0]),
            msgspec.msgpack.encode(records),
        ]


async def test_bad_json_frames_go_to_error_and_the_connection_stays_up(
    runtime: FlowRuntime, events: Events
) -> None:
    wf = ingest(schema={"sensor": "str", "value": "float"}, max_frame_bytes=200)
    async with running(runtime, wf) as (executor, run):
        port = await events.port()
        async with connect(f"ws://127.0.0.1:{port}") as ws:
            await ws.send('{"sensor": "a", "value": 1}')
            await ws.send('{"sensor": "b", "value"')  # malformed
            await ws.send('[{"sensor": "c", "value": 3}, {"sensor": 4, "value": 4}]')
            await ws.send('{"sensor": "' + "x" * 300 + '", "value": 5}')  # too big
            await ws.send('{"sensor": "e", "value": 6}')
            await until(lambda: items_in(executor, "out") == 3)
            await until(lambda: items_in(executor, "errors") == 3)
            # Still the same connection, still open.
            await ws.send('{"sensor": "f", "value": 7}')
            await until(lambda: items_in(executor, "out") == 4)
        executor.stop()
        result = await run
    assert result.ok, result.error
    assert [r["sensor"] for r in result.output("out")] == ["a", "c", "e", "f"]
    errors = result.output("errors")
    reasons = [e["reason"] for e in errors]
    assert reasons[0].startswith("malformed json")
    assert "record 1: schema violation" in reasons[1]
    assert "exceeds max_frame_bytes=200" in reasons[2]
    assert errors[0]["item"]["raw"] == b'{"sensor": "b", "value"'
    assert errors[1]["item"]["raw"] == b'{"sensor":4,"value":4}'
    assert len(errors[2]["item"]["raw"]) == MAX_RAW_IN_ERROR  # bounded
    assert all(e["item"]["peer"].startswith("127.0.0.1:") for e in errors)
    assert result.stats["src"].dead_letters == 3
    assert len(events.named("client_connected")) == 1


async def test_bad_msgpack_frames_go_to_error(
    runtime: FlowRuntime, events: Events
) -> None:
    wf = ingest(encoding="msgpack", schema={"n": "int"})
    async with running(runtime, wf) as (executor, run):
        port = await events.port()
        async with connect(f"ws://127.0.0.1:{port}") as ws:
            await ws.send(msgspec.msgpack.encode({"n": 1}))
            await ws.send(b"\xc1")  # a byte MessagePack never uses
            await ws.send('{"n": 2}')  # JSON is not MessagePack
            await ws.send(msgspec.msgpack.encode([{"n": 3}, {"n": "three"}]))
            await ws.send(msgspec.msgpack.encode({"n": 4}))
            await until(lambda: items_in(executor, "out") == 3)
            await until(lambda: items_in(executor, "errors") == 3)
        executor.stop()
        result = await run
    assert result.ok, result.error
    assert result.output("out") == [{"n": 1}, {"n": 3}, {"n": 4}]
    reasons = [e["reason"] for e in result.output("errors")]
    assert reasons[0].startswith("malformed msgpack")
    assert reasons[1].startswith("malformed msgpack")
    assert "schema violation" in reasons[2]


async def test_frame_above_the_hard_limit_closes_only_its_connection(
    runtime: FlowRuntime, events: Events
) -> None:
    wf = ingest(max_frame_bytes=100, hard_max_frame_bytes=1000)
    async with running(runtime, wf) as (executor, run):
        port = await events.port()
        async with connect(f"ws://127.0.0.1:{port}") as good:
            async with connect(f"ws://127.0.0.1:{port}") as bad:
                await bad.send(b'"' + b"x" * 2000 + b'"')
                with pytest.raises(ConnectionClosed) as closed:
                    await bad.recv()
                assert closed.value.rcvd is not None
                assert closed.value.rcvd.code == 1009
            await good.send(b'{"still": "here"}')
            await until(lambda: items_in(executor, "out") == 1)
            await until(lambda: items_in(executor, "errors") == 1)
        executor.stop()
        result = await run
    assert result.ok, result.error
    assert result.output("out") == [{"still": "here"}]
    (error,) = result.output("errors")
    assert "hard_max_frame_bytes=1000" in error["reason"]
    assert "1009" in error["reason"]


async def test_path_filter(runtime: FlowRuntime, events: Events) -> None:
    async with running(runtime, ingest(path="/ingest")) as (executor, run):
        port = await events.port()
        with pytest.raises(InvalidStatus) as refused:
            await connect(f"ws://127.0.0.1:{port}/other")
        assert refused.value.response.status_code == 404
        async with connect(f"ws://127.0.0.1:{port}/ingest?token=1") as ws:
            await ws.send("[1, 2]")
        await until(lambda: items_in(executor, "out") == 2)
        executor.stop()
        result = await run
    assert result.output("out") == [1, 2]
    assert (await events.wait("listening")).data["url"].endswith("/ingest")


async def test_a_stalled_pipeline_blocks_the_sender_and_memory_stays_bounded(
    runtime: FlowRuntime, events: Events
) -> None:
    GATES["g"] = asyncio.Event()
    frame = msgspec.json.encode(["x" * 16_000])
    frames = 2000  # 32 MB: far more than the socket buffers hold
    wf = (
        Workflow("stall", mode="stream")
        .node(
            "src",
            "ws.source",
            mode="server",
            queue_frames=4,
            queue_bytes=40_000,
            read_buffer_frames=4,
        )
        .node("gate", "test.gate", name="g")
        .node("out", "sink.null")
        .connect("src -> gate")
        .connect("gate -> out")
    )
    async with running(runtime, wf) as (executor, run):
        port = await events.port()
        sent = 0
        async with connect(f"ws://127.0.0.1:{port}", write_limit=16_384) as ws:

            async def send_all() -> None:
                nonlocal sent
                for _ in range(frames):
                    await ws.send(frame)
                    sent += 1

            async with asyncio.TaskGroup() as tg:
                sender = tg.create_task(send_all())
                source = SOURCES[0]
                # Stalled: the source's queue is full, its reader waits (not
                # reading), and the sender's socket buffer grows past its limit.
                await until(
                    lambda: (
                        source.statistics().waiting_readers == 1
                        and ws.transport.get_write_buffer_size() > 16_384
                    )
                )
                stats = source.statistics()
                assert stats.peak_frames <= 4
                assert stats.peak_bytes <= 40_000
                assert not sender.done()
                assert sent < frames
                assert items_in(executor, "out") == 0
                GATES["g"].set()
            assert sent == frames
        await until(lambda: items_in(executor, "out") == frames)
        executor.stop()
        result = await run
    assert result.ok, result.error
    assert source.statistics().peak_frames <= 4


async def test_graceful_stop_delivers_every_frame_the_source_read(
    runtime: FlowRuntime, events: Events
) -> None:
    GATES["g"] = asyncio.Event()
    n = 500
    wf = (
        Workflow("drain", mode="stream")
        .node("src", "ws.source", mode="server", queue_frames=8)
        .node("gate", "test.gate", name="g")
        .node("out", "sink.collect")
        .connect("src -> gate")
        .connect("gate -> out")
    )
    async with running(runtime, wf) as (executor, run):
        port = await events.port()
        async with connect(f"ws://127.0.0.1:{port}") as ws:
            for i in range(n):
                await ws.send(msgspec.json.encode({"i": i}))
            source = SOURCES[0]
            # Frames are in the pipeline, in the source's queue, in websockets'
            # buffer and in the socket when the stop comes.
            await until(lambda: source.statistics().waiting_readers == 1)
            executor.stop()
            GATES["g"].set()
            result = await run
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            assert ws.close_code == 1001
    assert result.ok, result.error
    assert result.output("out") == [{"i": i} for i in range(n)]


async def test_a_port_in_use_fails_the_run_at_start(runtime: FlowRuntime) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = await runtime.arun(ingest(port=port))
    assert result.status == "failed"
    assert result.error is not None
    assert "node 'src' (ws.source) failed to start" in result.error
    assert str(port) in result.error


# --- ws.source, client mode -----------------------------------------------------------


async def test_client_source_subscribes_and_survives_a_server_restart(
    runtime: FlowRuntime, events: Events, servers: Any
) -> None:
    subscriptions: list[Any] = []

    def publisher(first: int) -> Callable[[ServerConnection], Awaitable[None]]:
        async def handler(ws: ServerConnection) -> None:
            subscriptions.append(msgspec.json.decode(await ws.recv()))
            for i in range(first, first + 10):
                await ws.send(msgspec.json.encode({"i": i}))
            await ws.wait_closed()

        return handler

    server, port = await servers(publisher(0))
    wf = (
        Workflow("follow", mode="stream")
        .node(
            "src",
            "ws.source",
            mode="client",
            url=f"ws://127.0.0.1:{port}/feed",
            subscribe={"subscribe": "sensors"},
            reconnect=FAST_RECONNECT,
        )
        .node("out", "sink.collect")
        .connect("src -> out")
    )
    async with running(runtime, wf) as (executor, run):
        await events.wait("connected")
        await until(lambda: items_in(executor, "out") == 10)
        server.close()
        await server.wait_closed()
        await servers(publisher(10), port)  # same port
        reconnected = await events.wait("reconnected")
        assert reconnected.data == {
            "url": f"ws://127.0.0.1:{port}/feed",
            "connections": 2,
        }
        await until(lambda: items_in(executor, "out") == 20)
        executor.stop()
        result = await run
    assert result.ok, result.error
    assert result.output("out") == [{"i": i} for i in range(20)]
    assert subscriptions == [{"subscribe": "sensors"}] * 2
    assert len(events.named("disconnected")) == 1


async def test_client_source_gives_up_after_max_attempts(
    runtime: FlowRuntime,
) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        wf = (
            Workflow("nowhere", mode="stream")
            .node(
                "src",
                "ws.source",
                mode="client",
                url=f"ws://127.0.0.1:{port}",
                reconnect={**FAST_RECONNECT, "max_attempts": 3},
            )
            .node("out", "sink.collect")
            .connect("src -> out")
        )
        result = await runtime.arun(wf)
    assert result.status == "failed"
    assert result.error is not None
    assert f"cannot connect to ws://127.0.0.1:{port} (3 attempts)" in result.error


# --- ws.sink, client mode -------------------------------------------------------------


def sink_to(url: str, **config: Any) -> Workflow:
    FEEDS["in"] = asyncio.Queue()
    return (
        Workflow("send")
        .node("in", "test.feed", name="in")
        .node(
            "ws", "ws.sink", mode="client", url=url, reconnect=FAST_RECONNECT, **config
        )
        .connect("in -> ws")
    )


def first_seen(records: list[Any]) -> list[Any]:
    """Records in order of first arrival (at least once: resent ones repeat)."""
    return list(dict.fromkeys(records))


async def test_client_sink_batches_records_into_frames(
    runtime: FlowRuntime, servers: Any
) -> None:
    frames: list[Any] = []

    async def collect(ws: ServerConnection) -> None:
        async for frame in ws:
            frames.append(msgspec.json.decode(frame))

    _, port = await servers(collect)
    wf = sink_to(f"ws://127.0.0.1:{port}", records_per_frame=4)
    FEEDS["in"].put_nowait(list(range(10)))
    FEEDS["in"].put_nowait([{"not": object()}, 10])  # no JSON form
    FEEDS["in"].put_nowait(None)
    wf.connect("ws.error -> errors").node("errors", "sink.collect")
    result = await runtime.arun(wf)
    assert result.ok, result.error
    # Delivered and confirmed before the run ended (the sink flushes on drain).
    assert frames == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9], [10]]
    (error,) = result.output("errors")
    assert "cannot encode as json" in error["reason"]
    assert result.stats["ws"].items_in == 12


async def test_client_sink_loses_nothing_across_a_server_restart(
    runtime: FlowRuntime, events: Events, servers: Any
) -> None:
    received: list[int] = []

    async def collect(ws: ServerConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for frame in ws:
                received.extend(msgspec.json.decode(frame))

    server, port = await servers(collect)
    wf = sink_to(f"ws://127.0.0.1:{port}", records_per_frame=5)
    async with running(runtime, wf) as (_, run):
        for i in range(0, 500, 50):
            FEEDS["in"].put_nowait(list(range(i, i + 50)))
        await until(lambda: len(received) >= 100)
        server.close()  # while the sink is still sending
        await server.wait_closed()
        for i in range(500, 1000, 50):
            FEEDS["in"].put_nowait(list(range(i, i + 50)))
        await servers(collect, port)
        FEEDS["in"].put_nowait(None)
        result = await run
    assert result.ok, result.error
    assert first_seen(received) == list(range(1000))
    assert events.named("reconnected")
    assert SINKS[0].statistics().unacked_frames == 0


async def test_client_sink_resends_what_an_aborted_connection_did_not_confirm(
    runtime: FlowRuntime, events: Events, servers: Any
) -> None:
    received: list[int] = []
    connections = 0
    pad = "x" * 1000  # 1 MB in all: more than one socket read of the server

    async def crash_once(ws: ServerConnection) -> None:
        nonlocal connections
        connections += 1
        count = 0
        with contextlib.suppress(ConnectionClosed):
            async for frame in ws:
                received.append(int(msgspec.json.decode(frame).partition(":")[0]))
                count += 1
                if connections == 1 and count == 50:
                    # No closing handshake. The server's flow control stopped
                    # reading after its first read, so the ping that follows
                    # the last frame was never answered: the rest is unconfirmed.
                    ws.transport.abort()

    _, port = await servers(crash_once)
    wf = sink_to(f"ws://127.0.0.1:{port}", records_per_frame=1)
    FEEDS["in"].put_nowait([f"{i}:{pad}" for i in range(1000)])
    FEEDS["in"].put_nowait(None)
    result = await runtime.arun(wf)
    assert result.ok, result.error
    assert first_seen(received) == list(range(1000))
    reconnected = await events.wait("reconnected")
    assert reconnected.data["resent"] > 0


# --- ws.sink, server mode -------------------------------------------------------------


def broadcast(**config: Any) -> Workflow:
    FEEDS["in"] = asyncio.Queue()
    return (
        Workflow("broadcast")
        .node("in", "test.feed", name="in")
        .node("ws", "ws.sink", mode="server", close_timeout=2.0, **config)
        .connect("in -> ws")
    )


async def read_records(ws: ClientConnection, want: int) -> list[Any]:
    got: list[Any] = []
    while len(got) < want:
        value = msgspec.json.decode(await ws.recv(decode=False))
        got += value if isinstance(value, list) else [value]
    return got


async def test_server_sink_broadcasts_to_every_subscriber(
    runtime: FlowRuntime, events: Events
) -> None:
    async with running(runtime, broadcast(records_per_frame=10)) as (_, run):
        port = await events.port()
        async with (
            connect(f"ws://127.0.0.1:{port}") as a,
            connect(f"ws://127.0.0.1:{port}") as b,
        ):
            await events.wait("subscriber_connected", 2)
            for i in range(0, 100, 25):
                FEEDS["in"].put_nowait(list(range(i, i + 25)))
            FEEDS["in"].put_nowait(None)
            got_a, got_b = await read_records(a, 100), await read_records(b, 100)
            result = await run
    assert result.ok, result.error
    assert got_a == got_b == list(range(100))


def tiny_receive_buffer() -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return sock


@pytest.mark.parametrize("slow", ["drop_subscriber", "drop_oldest"])
async def test_server_sink_slow_subscriber_never_blocks_the_others(
    runtime: FlowRuntime, events: Events, slow: str
) -> None:
    n = 3000
    record = "x" * 1000
    wf = broadcast(records_per_frame=1, subscriber_queue=4, slow=slow)
    async with running(runtime, wf) as (_, run):
        port = await events.port()
        url = f"ws://127.0.0.1:{port}"
        sock = tiny_receive_buffer()
        sock.connect(("127.0.0.1", port))
        async with (
            connect(url) as fast,
            connect(url, sock=sock, max_queue=1) as laggard,
        ):
            await events.wait("subscriber_connected", 2)
            for i in range(0, n, 100):
                FEEDS["in"].put_nowait([f"{j}:{record}" for j in range(i, i + 100)])
            FEEDS["in"].put_nowait(None)
            got = await read_records(fast, n)  # the laggard reads nothing yet
            assert [int(r.partition(":")[0]) for r in got] == list(range(n))
            if slow == "drop_subscriber":
                await events.wait("subscriber_dropped")
            else:
                await events.wait("frames_dropped")
            late: list[int] = []
            with contextlib.suppress(ConnectionClosed):
                while True:
                    record = msgspec.json.decode(await laggard.recv(decode=False))
                    late.append(int(record.partition(":")[0]))
            result = await run
    assert result.ok, result.error
    stats = SINKS[0].statistics()
    assert len(late) < n
    assert late == sorted(late)
    if slow == "drop_subscriber":
        assert stats.dropped_subscribers == 1
        assert stats.dropped_frames == 0
    else:
        assert stats.dropped_subscribers == 0
        assert stats.dropped_frames == n - len(late)
        assert late[-1] == n - 1  # the newest frames are the ones kept


# --- config and docs ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("node_type", "config", "message"),
    [
        ("ws.source", {"mode": "client"}, "mode 'client' needs a url"),
        ("ws.source", {"mode": "client", "url": "http://x"}, "needs a url"),
        ("ws.source", {"mode": "server", "url": "ws://x"}, "url is for mode 'client'"),
        ("ws.source", {"mode": "server", "port": 70000}, "port must be between"),
        ("ws.source", {"mode": "server", "path": "x"}, "path must start with '/'"),
        ("ws.source", {"mode": "server", "schema": {"a": "text"}}, "unknown type"),
        ("ws.source", {"mode": "server", "encoding": "xml"}, "encoding"),
        ("ws.source", {"mode": "server", "queue_frames": 0}, "queue_frames"),
        (
            "ws.source",
            {"mode": "server", "max_frame_bytes": 10, "hard_max_frame_bytes": 5},
            "hard_max_frame_bytes",
        ),
        ("ws.sink", {"mode": "server", "slow": "block"}, "slow"),
        ("ws.sink", {"mode": "server", "records_per_frame": 0}, "records_per_frame"),
        (
            "ws.sink",
            {"mode": "client", "url": "ws://x", "reconnect": {"jitter": 2}},
            "jitter",
        ),
        ("ws.sink", {"mode": "server", "prot": 1}, "prot"),
    ],
)
def test_config_errors_name_the_field(
    runtime: FlowRuntime, node_type: str, config: dict[str, Any], message: str
) -> None:
    wf = Workflow("bad", mode="stream").node("n", node_type, config)
    if node_type == "ws.sink":
        wf.node("src", "source.values", values=[1]).connect("src -> n")
    with pytest.raises(WorkflowValidationError) as raised:
        runtime.validate(wf)
    assert message in str(raised.value)


def test_reconnect_backoff_grows_is_capped_and_jittered() -> None:
    policy = Reconnect(
        delay_ms=100, backoff_multiplier=2, max_delay_ms=1000, jitter=0.5
    )
    for failures, full in [(1, 0.1), (2, 0.2), (4, 0.8), (5, 1.0), (500, 1.0)]:
        delays = [policy.delay_s(failures) for _ in range(50)]
        assert all(full * 0.5 <= d <= full for d in delays)
        assert len(set(delays)) > 1
    assert Reconnect(jitter=0).delay_s(1) == 0.1


@pytest.mark.parametrize("spec", [ws_source, ws_sink])
def test_docstring_example_is_a_valid_node(runtime: FlowRuntime, spec: Any) -> None:
    doc = spec.fn.__doc__
    example = doc[doc.index("Example:") :].split("::", 1)[1]
    (decl,) = yaml.safe_load(example)
    wf = Workflow("doc", mode="stream").node(decl["id"], decl["type"], decl["config"])
    if spec.inputs:
        wf.node("src", "source.values", values=[1]).connect(f"src -> {decl['id']}")
    else:
        wf.node("out", "sink.null").connect(f"{decl['id']} -> out")
    runtime.validate(wf)


def test_auto_encoding_takes_json_and_msgpack_frames() -> None:
    from connectors._records import RecordDecoder

    decoder = RecordDecoder("auto", {"sensor": "str", "value": "float"})
    assert decoder.decode(b' {"sensor": "a", "value": 1}') == (
        [{"sensor": "a", "value": 1.0}],
        [],
    )
    packed = msgspec.msgpack.encode([{"sensor": "b", "value": 2.5}])
    assert decoder.decode(packed) == ([{"sensor": "b", "value": 2.5}], [])
    good, bad = decoder.decode(b"\xc1")
    assert good == []
    assert "malformed msgpack" in bad[0].reason


def test_schema_error_then_trailing_bytes_is_a_bad_frame_not_a_crash() -> None:
    from connectors._records import RecordDecoder

    # JSON sent to a msgpack source: '{' is the msgpack integer 123, which
    # breaks the schema before the decoder meets the trailing bytes.
    decoder = RecordDecoder("msgpack", {"sensor": "str"})
    good, bad = decoder.decode(b'{"sensor": "x"}')
    assert good == []
    assert "malformed msgpack" in bad[0].reason
