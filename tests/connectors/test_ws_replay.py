"""ws.source across restarts: resuming a client from its checkpointed sequence,
and the ingest journal that replays frames after a crash (kill -9 included).

Servers bind 127.0.0.1 on free ports and are stopped by the test that started
them; nothing sleeps to let things settle (tests poll a condition with a
deadline).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import closing
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

import msgspec
import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as connect_sync

from connectors.sqlite import sqlite_sink
from connectors.websocket import WebSocketSource, WebSocketSourceConfig, ws_source
from connectors.websocket._source_config import _fill, _with_query
from flowstream import FlowRuntime, RunResult, Workflow, default_registry, node
from flowstream.core.workflow import Checkpoint
from flowstream.errors import WorkflowValidationError
from tests.checkpoints import latest_epoch
from tests.local import local

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable
    from pathlib import Path

    from flowstream import WorkflowExecutor

FAST_RECONNECT = {"delay_ms": 10, "max_delay_ms": 50}
SOURCES: list[WebSocketSource] = []
GATES: dict[str, asyncio.Event] = {}


class RecordedSource(WebSocketSource):
    """ws.source, remembered so that a test can read its statistics."""

    def __init__(self, config: WebSocketSourceConfig) -> None:
        super().__init__(config)
        SOURCES.append(self)


class Named(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: str


@node("test.hold_until_open", config=Named, batched=True)
async def hold_until_open(
    inp: AsyncIterator[list[Any]], *, config: Named
) -> AsyncIterator[Any]:
    """Pass batches on only once the test opens the gate (a stalled graph)."""
    event = GATES[config.name]
    async for batch in inp:
        await event.wait()
        yield batch


@pytest.fixture
def runtime() -> FlowRuntime:
    registry = default_registry(entry_points=False)
    registry.register(msgspec.structs.replace(ws_source, fn=RecordedSource))
    registry.register(sqlite_sink)
    registry.register(hold_until_open)
    SOURCES.clear()
    GATES.clear()
    return FlowRuntime(registry)


@pytest.fixture
async def servers() -> AsyncIterator[Callable[..., Awaitable[tuple[Server, int]]]]:
    """Start websockets servers on 127.0.0.1; all are closed at the end."""
    started: list[Server] = []

    async def start(
        handler: Callable[[ServerConnection], Awaitable[None]],
    ) -> tuple[Server, int]:
        server = await serve(handler, "127.0.0.1", 0, compression=None)
        started.append(server)
        return server, server.sockets[0].getsockname()[1]

    yield start
    for server in started:
        server.close()
        await server.wait_closed()


async def until(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    """Poll ``condition`` until it holds, failing after ``seconds``."""
    async with asyncio.timeout(seconds):
        while not condition():  # noqa: ASYNC110 - bounded polling, on purpose
            await asyncio.sleep(0.002)


def wait_for(condition: Callable[[], bool], what: str, seconds: float = 10.0) -> None:
    """`until` for synchronous tests (a subprocess runs the workflow)."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


@contextlib.asynccontextmanager
async def running(
    runtime: FlowRuntime, wf: Workflow
) -> AsyncIterator[tuple[WorkflowExecutor, asyncio.Future[RunResult]]]:
    """Run a workflow in the background; cancel it if the test leaves early."""
    executor = local(runtime.executor(wf))
    run = asyncio.ensure_future(executor.run())
    try:
        yield executor, run
    finally:
        if not run.done():
            executor.cancel()
            with contextlib.suppress(Exception):
                await run


def query(db: Path, sql: str) -> list[Any]:
    """Rows of ``sql`` in ``db``, read as an outside observer would ([] if absent)."""
    if not db.exists():
        return []
    try:
        with closing(sqlite3.connect(db, timeout=1)) as conn:
            return conn.execute(sql).fetchall()
    except sqlite3.OperationalError:  # table not created yet
        return []


def count(db: Path, table: str) -> int:
    rows = query(db, f"select count(*) from {table}")
    return int(rows[0][0]) if rows else 0


def committed_state(store: Path, node_id: str) -> dict[str, Any]:
    """The node's state in the store's last committed epoch ({} if none)."""
    state: dict[str, Any] = latest_epoch(store)[1].get(node_id, {})
    return state


# --- resume (client mode) -------------------------------------------------------------


class Upstream:
    """A feed that numbers its records (``seq``) and resumes after ``since``.

    It honours the query parameter and checks the resume message against it,
    and replays a bit too much (the three records up to ``since``, which the
    source must drop), plus a heartbeat without a sequence.
    """

    OVERLAP = 3

    def __init__(self) -> None:
        self.limit = 0
        self.requests: list[tuple[str | None, Any, Any]] = []

    async def handler(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        since = dict(parse_qsl(urlsplit(ws.request.path).query)).get("since")
        subscribe = msgspec.json.decode(await ws.recv())
        resume = msgspec.json.decode(await ws.recv()) if since is not None else None
        self.requests.append((since, subscribe, resume))
        seq = max(int(since) - self.OVERLAP, 0) if since is not None else 0
        try:
            if since is not None:
                await ws.send(msgspec.json.encode({"heartbeat": True}))
            while seq < self.limit:
                seq += 1
                await ws.send(msgspec.json.encode({"seq": seq, "v": seq * 10}))
            await ws.wait_closed()
        except ConnectionClosed:
            pass


def follow(url: str, store: Path, db: Path) -> Workflow:
    wf = (
        Workflow("follow", mode="stream")
        .node(
            "src",
            "ws.source",
            mode="client",
            url=url,
            subscribe={"op": "subscribe", "topic": "ticks"},
            seq_field="seq",
            resume_query="since",
            resume_message={"op": "resume", "after": "{seq}"},
            reconnect=FAST_RECONNECT,
        )
        .node("rows", "sqlite.sink", path=str(db), table="records", key="seq")
        .node("count", "transform.scan", op="count", key="x.seq")
        .node("counts", "sqlite.sink", path=str(db), table="counts", key="key")
        .node("errors", "sink.collect")
        .connect("src -> rows")
        .connect("src -> count")
        .connect("count -> counts")
        .connect("src.error -> errors")
    )
    wf.checkpoint = Checkpoint(path=str(store), interval_ms=20)
    return wf


async def test_a_client_resumes_from_its_checkpointed_seq_and_counts_each_once(
    runtime: FlowRuntime, servers: Any, tmp_path: Path
) -> None:
    upstream = Upstream()
    _, port = await servers(upstream.handler)
    store, db = tmp_path / "ckpt.db", tmp_path / "out.db"
    wf = follow(f"ws://127.0.0.1:{port}/ticks", store, db)

    # First run: a fresh start asks for no resume; aborted midway (like a
    # crash: what came after the last committed epoch is not in the store).
    upstream.limit = 600
    async with running(runtime, wf) as (executor, run):
        await until(
            lambda: (
                count(db, "records") >= 300
                and committed_state(store, "src").get("seq", 0) >= 100
            )
        )
        executor.cancel()
        first = await run
    assert first.status == "cancelled"
    checkpointed = committed_state(store, "src")["seq"]
    assert checkpointed >= 100

    # Second run: resumes after the checkpointed seq, by query and message.
    upstream.limit = 1000
    async with running(runtime, wf) as (executor, run):
        await until(lambda: count(db, "records") == 1000)
        executor.stop()
        second = await run
    assert second.ok, second.error

    subscribe = {"op": "subscribe", "topic": "ticks"}
    assert upstream.requests == [
        (None, subscribe, None),
        (str(checkpointed), subscribe, {"op": "resume", "after": checkpointed}),
    ]
    seqs = [r[0] for r in query(db, "select seq from records order by seq")]
    assert seqs == list(range(1, 1001))
    # The keyed count lives in checkpointed state: a record counted twice
    # (taken again after the restore) would show 2.
    counts = dict(query(db, "select key, value from counts"))
    assert counts == dict.fromkeys(range(1, 1001), 1)
    # The three records replayed at or below the checkpoint were dropped.
    assert SOURCES[-1].statistics().duplicates == Upstream.OVERLAP
    (heartbeat,) = second.output("errors")
    assert "no sequence: field 'seq'" in heartbeat["reason"]
    assert heartbeat["item"]["peer"] == f"ws://127.0.0.1:{port}/ticks"


def test_resume_helpers_fill_the_template_and_the_query() -> None:
    template = {"op": "resume", "after": "{seq}", "note": "from {seq}", "n": [1]}
    assert _fill(template, 42) == {
        "op": "resume",
        "after": 42,
        "note": "from 42",
        "n": [1],
    }
    assert _fill("resume {seq}", "a7") == "resume a7"
    assert _with_query("ws://h:1/feed", "since", 42) == "ws://h:1/feed?since=42"
    assert (
        _with_query("ws://h:1/feed?topic=a&since=3", "since", 42)
        == "ws://h:1/feed?topic=a&since=42"
    )


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"mode": "client", "url": "ws://h/", "resume_query": "since"}, "seq_field"),
        ({"mode": "server", "seq_field": "seq"}, "mode 'client'"),
        (
            {"mode": "client", "url": "ws://h/", "seq_field": "seq", "encoding": "raw"},
            "encoding 'raw'",
        ),
        ({"mode": "client", "url": "ws://h/", "seq_field": "a..b"}, "dotted"),
        (
            {
                "mode": "client",
                "url": "ws://h/",
                "seq_field": "seq",
                "resume_message": {"op": "resume"},
            },
            "{seq}",
        ),
        ({"mode": "server", "journal": " "}, "journal"),
        ({"mode": "server", "journal": "j.db", "journal_max_frames": 0}, "journal"),
    ],
)
def test_resume_and_journal_config_errors_name_the_field(
    runtime: FlowRuntime, config: dict[str, Any], message: str
) -> None:
    wf = Workflow("bad", mode="stream").node("n", "ws.source", config)
    wf.node("out", "sink.null").connect("n -> out")
    with pytest.raises(WorkflowValidationError) as raised:
        runtime.validate(wf)
    assert message in str(raised.value)


# --- journal, in process ------------------------------------------------------------


def journaled(journal: Path, store: Path, **config: Any) -> Workflow:
    """ws.source (server, journal) -> gate -> out; its errors -> errors."""
    wf = (
        Workflow("journaled", mode="stream")
        .node("src", "ws.source", mode="server", journal=str(journal), **config)
        .node("gate", "test.hold_until_open", name="gate")
        .node("out", "sink.collect")
        .node("errors", "sink.collect")
        .connect("src -> gate", capacity=1)  # a stuck gate holds few batches
        .connect("gate -> out")
        .connect("src.error -> errors")
    )
    wf.checkpoint = Checkpoint(path=str(store), interval_ms=20)
    return wf


async def port_of(source_index: int) -> int:
    await until(
        lambda: (
            len(SOURCES) > source_index and SOURCES[source_index]._server is not None
        )
    )
    server = SOURCES[source_index]._server
    assert server is not None
    port: int = server.sockets[0].getsockname()[1]
    return port


async def test_malformed_frames_replayed_from_the_journal_go_to_error_like_live_ones(
    runtime: FlowRuntime, tmp_path: Path
) -> None:
    journal, store = tmp_path / "journal.db", tmp_path / "ckpt.db"
    wf = journaled(journal, store, schema={"i": "int"}, max_frame_bytes=64)
    frames = [
        b'{"i": 0}',
        b'{"i": 1',  # malformed
        b'[{"i": 2}, {"i": "two"}]',  # one record breaks the schema
        b'{"i": 3, "pad": "' + b"x" * 80 + b'"}',  # over max_frame_bytes
        b'{"i": 4}',
    ]

    # First run: the graph is stuck, frames are journaled, the run aborted.
    GATES["gate"] = asyncio.Event()
    async with running(runtime, wf) as (executor, run):
        async with connect(f"ws://127.0.0.1:{await port_of(0)}/") as ws:
            for frame in frames:
                await ws.send(frame)
            await until(lambda: SOURCES[0].statistics().journaled_frames == 5)
            first_peer = "{}:{}".format(*ws.local_address[:2])
        executor.cancel()
        await run

    # Second run: the frames are replayed first, then the same frames live.
    GATES["gate"].set()
    async with running(runtime, wf) as (executor, run):
        port = await port_of(1)
        source = SOURCES[1]
        await until(lambda: source.statistics().replayed_frames == 5)
        async with connect(f"ws://127.0.0.1:{port}/") as ws:
            for frame in frames:
                await ws.send(frame)
            live_peer = "{}:{}".format(*ws.local_address[:2])
            await until(lambda: source.statistics().journaled_frames == 5)
        executor.stop()
        result = await run
    assert result.ok, result.error
    assert result.output("out") == [{"i": i} for i in (0, 2, 4)] * 2
    errors = result.output("errors")
    assert len(errors) == 6
    replayed, live = errors[:3], errors[3:]
    assert [e["item"]["peer"] for e in replayed] == [first_peer] * 3
    assert [e["item"]["peer"] for e in live] == [live_peer] * 3
    # Same reasons and same raw bytes: replayed frames decode like live ones.
    assert [(e["reason"], e["item"]["raw"]) for e in replayed] == [
        (e["reason"], e["item"]["raw"]) for e in live
    ]
    reasons = [e["reason"] for e in replayed]
    assert reasons[0].startswith("malformed json")
    assert "schema violation" in reasons[1]
    assert "exceeds max_frame_bytes=64" in reasons[2]


async def test_a_stuck_graph_stops_the_readers_and_bounds_the_journal(
    runtime: FlowRuntime, tmp_path: Path
) -> None:
    journal, store = tmp_path / "journal.db", tmp_path / "ckpt.db"
    wf = journaled(journal, store, queue_frames=8, journal_max_frames=4)
    n = 2000
    GATES["gate"] = asyncio.Event()
    async with running(runtime, wf) as (executor, run):
        source_port = await port_of(0)
        source = SOURCES[0]
        async with connect(f"ws://127.0.0.1:{source_port}/") as ws:

            async def send_all() -> None:
                for i in range(n):
                    await ws.send(msgspec.json.encode({"i": i}))

            async with asyncio.TaskGroup() as tg:
                tg.create_task(send_all())
                # The graph is stuck: readers end up waiting for room.
                await until(lambda: source.statistics().waiting_readers == 1)
                stats = source.statistics()
                state = executor.state.nodes["src"]
                taken = state.get("journal_id", 0)
                # Journaled but not taken by the graph: the journal's own
                # frames plus the intake's, never more.
                assert stats.journaled_frames - taken <= 4 + 8
                assert stats.peak_unjournaled <= 4
                assert stats.journaled_frames < n
                GATES["gate"].set()
        # Once the gate opens everything flows, in order, within the bound.
        await until(lambda: source.statistics().journaled_frames == n)
        executor.stop()
        result = await run
    assert result.ok, result.error
    assert result.output("out") == [{"i": i} for i in range(n)]
    assert source.statistics().peak_unjournaled <= 4


class Paced:
    """A feed numbering its records (``seq``) up to ``allowed``; resumes after since."""

    def __init__(self) -> None:
        self.allowed = 0

    async def handler(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        since = dict(parse_qsl(urlsplit(ws.request.path).query)).get("since")
        seq = int(since) if since is not None else 0
        with contextlib.suppress(ConnectionClosed):
            while True:
                while seq < self.allowed:
                    seq += 1
                    await ws.send(msgspec.json.encode({"seq": seq}))
                try:  # polls `allowed` until the connection closes
                    async with asyncio.timeout(0.002):
                        await ws.wait_closed()
                    return
                except TimeoutError:
                    pass


def backup(source: Path, target: Path) -> None:
    """Copy a live SQLite file consistently, replacing ``target``."""
    for stale in (
        target,
        *(target.with_name(target.name + x) for x in ("-wal", "-shm")),
    ):
        stale.unlink(missing_ok=True)
    with (
        closing(sqlite3.connect(source)) as src,
        closing(sqlite3.connect(target)) as dst,
    ):
        src.backup(dst)


async def test_a_store_older_than_its_journal_resumes_from_the_server_not_past_the_gap(
    runtime: FlowRuntime, servers: Any, tmp_path: Path
) -> None:
    # A checkpoint store restored from a copy older than its journal (or a
    # backup that copied the store before the journal): the journal was
    # pruned past the store's position, and replaying its later frames moved
    # the sequence past the pruned ones, which were then never asked for.
    feed = Paced()
    _, port = await servers(feed.handler)
    store, journal, db = (
        tmp_path / "ckpt.db",
        tmp_path / "journal.db",
        tmp_path / "o.db",
    )
    wf = (
        Workflow("gap", mode="stream")
        .node(
            "src",
            "ws.source",
            mode="client",
            url=f"ws://127.0.0.1:{port}/feed",
            seq_field="seq",
            resume_query="since",
            journal=str(journal),
            reconnect=FAST_RECONNECT,
        )
        .node("gate", "test.hold_until_open", name="gate")
        .node("rows", "sqlite.sink", path=str(db), table="records", key="seq")
        .connect("src -> gate", capacity=1)
        .connect("gate -> rows")
    )
    wf.checkpoint = Checkpoint(path=str(store), interval_ms=20)
    GATES["gate"] = asyncio.Event()
    GATES["gate"].set()
    feed.allowed = 100
    async with running(runtime, wf) as (executor, run):
        await until(lambda: committed_state(store, "src").get("seq") == 100)
        backup(store, tmp_path / "old-ckpt.db")  # the store first, then its sink
        backup(db, tmp_path / "old-o.db")
        feed.allowed = 200
        await until(lambda: committed_state(store, "src").get("seq") == 200)
        covered = committed_state(store, "src")["journal_id"]
        pruned = f"select count(*) from frames where id <= {covered}"
        await until(lambda: query(journal, pruned) == [(0,)])
        # Frames after the gap stay in the journal: the graph is stuck.
        GATES["gate"].clear()
        feed.allowed = 300
        later = f"select count(*) from frames where id > {covered}"
        await until(lambda: query(journal, later)[0][0] >= 20)
        executor.cancel()
        await run
    backup(tmp_path / "old-ckpt.db", store)
    backup(tmp_path / "old-o.db", db)

    GATES["gate"].set()
    async with running(runtime, wf) as (executor, run):
        await until(lambda: committed_state(store, "src").get("seq") == 300)
        executor.stop()
        result = await run
    assert result.ok, result.error
    seqs = [seq for (seq,) in query(db, "select seq from records order by seq")]
    assert seqs == list(range(1, 301))
    assert SOURCES[-1].statistics().replayed_frames == 0


async def test_a_journal_without_a_checkpoint_store_fails_the_run_at_start(
    runtime: FlowRuntime, tmp_path: Path
) -> None:
    wf = (
        Workflow("unchecked", mode="stream")
        .node("src", "ws.source", mode="server", journal=str(tmp_path / "j.db"))
        .node("out", "sink.collect")
        .connect("src -> out")
    )
    result = await runtime.arun(wf)
    assert result.status == "failed"
    assert result.error is not None
    assert "needs stream mode with a checkpoint store" in result.error
    assert not (tmp_path / "j.db").exists()


# --- journal, kill -9 ----------------------------------------------------------------

RUNNER = """
import asyncio, os, signal, sys
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from connectors.sqlite import sqlite_sink
from connectors.websocket import WebSocketSource, ws_source
from flowstream import FlowRuntime, NodeEvent, Workflow, node, default_registry
from flowstream.core.workflow import Checkpoint

store, db, journal = sys.argv[1:4]
HOLD_AT = int(os.environ.get("HOLD_AT", "-1"))
SOURCES = []


class Recorded(WebSocketSource):
    def __init__(self, config):
        super().__init__(config)
        SOURCES.append(self)


@node("test.hold", batched=True)
async def hold(inp: AsyncIterator[list[Any]]) -> AsyncIterator[list[Any]]:
    # With HOLD_AT set (first run only: the workflow stays the same), the
    # graph gets stuck at the first record i >= HOLD_AT.
    async for batch in inp:
        if HOLD_AT >= 0 and any(r["i"] >= HOLD_AT for r in batch):
            yield [r for r in batch if r["i"] < HOLD_AT]
            await asyncio.Event().wait()
        yield batch


def show(event):
    if isinstance(event, NodeEvent) and event.name in ("listening", "journal_opened"):
        print(event.name, msgspec.json.encode(event.data).decode(), flush=True)


async def main():
    registry = default_registry(entry_points=False)
    registry.register(msgspec.structs.replace(ws_source, fn=Recorded))
    registry.register(sqlite_sink)
    registry.register(hold)
    wf = (
        Workflow("journaled", mode="stream")
        .node("src", "ws.source", mode="server", journal=journal, journal_max_frames=16)
        .node("hold", "test.hold")
        .node("rows", "sqlite.sink", path=db, table="records", key="i")
        .node("count", "transform.scan", op="count", key="x.i")
        .node("counts", "sqlite.sink", path=db, table="counts", key="key")
        .connect("src -> hold")
        .connect("hold -> rows")
        .connect("hold -> count")
        .connect("count -> counts")
    )
    wf.checkpoint = Checkpoint(path=store, interval_ms=20)
    runtime = FlowRuntime(registry)
    runtime.bus.add_listener(show)
    executor = runtime.executor(wf)
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, executor.stop)
    result = await executor.run()
    stats = SOURCES[-1].statistics()
    print("result", result.status, msgspec.json.encode(stats).decode(), flush=True)


asyncio.run(main())
"""


class Runner:
    """The kill -9 harness: the workflow in a subprocess, its lines read by a thread.

    A context manager that kills the process if the test leaves early.
    """

    def __init__(self, tmp_path: Path, name: str, **env: str) -> None:
        script = tmp_path / "runner.py"
        script.write_text(RUNNER)
        self.store = tmp_path / "ckpt.db"
        self.db = tmp_path / "out.db"
        self.journal = tmp_path / "journal.db"
        self.stderr = tmp_path / f"{name}.err"
        args = [sys.executable, str(script)]
        args += [str(self.store), str(self.db), str(self.journal)]
        with self.stderr.open("w") as err:
            self.proc = subprocess.Popen(
                args,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                env={**os.environ, **env},
            )
        self.lines: queue.Queue[str] = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.events: dict[str, Any] = {}
        while "listening" not in self.events:
            name, _, data = self._next_line().partition(" ")
            self.events[name] = msgspec.json.decode(data)
        self.url = self.events["listening"]["url"]

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.kill()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        with self.proc.stdout:
            for line in self.proc.stdout:
                self.lines.put(line)
        self.lines.put("")  # end of output

    def _next_line(self) -> str:
        try:
            line = self.lines.get(timeout=20)
        except queue.Empty:
            line = ""
        if not line:
            msg = f"the runner printed nothing more: {self.stderr.read_text()}"
            raise AssertionError(msg)
        return line

    def send(self, numbers: range) -> None:
        with connect_sync(self.url) as ws:
            for i in numbers:
                ws.send(msgspec.json.encode({"i": i}))

    def journal_ids(self) -> list[int]:
        return [r[0] for r in query(self.journal, "select id from frames order by id")]

    def last_journaled(self) -> int:
        rows = query(self.journal, "select seq from sqlite_sequence")
        return int(rows[0][0]) if rows else 0

    def kill(self) -> None:
        self.proc.kill()  # SIGKILL
        self.proc.wait(timeout=10)
        self.reader.join(timeout=10)

    def stop(self) -> tuple[str, dict[str, Any]]:
        """SIGTERM (a graceful drain); return the run's status and statistics."""
        self.proc.send_signal(signal.SIGTERM)
        _, status, stats = self._next_line().split(" ", 2)
        assert self.proc.wait(timeout=10) == 0, self.stderr.read_text()
        self.reader.join(timeout=10)
        return status, msgspec.json.decode(stats)


def test_frames_journaled_before_a_kill_9_are_processed_once_after_restart(
    tmp_path: Path,
) -> None:
    with Runner(tmp_path, "first", HOLD_AT="100") as first:
        assert first.events["journal_opened"]["unclean"] is False
        # Frames 0-99 go through and are committed; the journal is pruned.
        first.send(range(100))
        wait_for(
            lambda: committed_state(first.store, "src").get("journal_id") == 100,
            "a checkpoint covering the first 100 frames",
        )
        wait_for(lambda: first.journal_ids() == [], "the journal to be pruned")
        # Frames 100-299 are journaled, but the graph is stuck at 100.
        first.send(range(100, 300))
        wait_for(lambda: first.last_journaled() == 300, "300 frames journaled")
        first.kill()
    assert committed_state(first.store, "src")["journal_id"] == 100
    assert first.journal_ids() == list(range(101, 301))
    assert count(first.db, "records") == 100

    with Runner(tmp_path, "second") as second:
        opened = second.events["journal_opened"]
        # The crash is reported with the most it could have lost.
        assert opened == {
            "path": str(second.journal),
            "after": 100,
            "replay": 200,
            "pruned": 0,
            "pruned_past": 0,
            "unclean": True,
            "max_unjournaled": 16,
        }
        second.send(range(300, 400))
        wait_for(lambda: count(second.db, "records") == 400, "400 records")
        wait_for(lambda: second.journal_ids() == [], "the journal to be pruned")
        status, stats = second.stop()
    assert status == "completed"
    assert stats["replayed_frames"] == 200
    assert stats["journaled_frames"] == 100
    assert stats["peak_unjournaled"] <= 16
    records = [r[0] for r in query(second.db, "select i from records order by i")]
    assert records == list(range(400))
    # Counts live in checkpointed state: a frame the checkpoint covered and
    # then replayed, or one taken twice, would count 2.
    counts = dict(query(second.db, "select key, value from counts"))
    assert counts == dict.fromkeys(range(400), 1)
