"""nats.source and nats.sink against a real nats-server with JetStream."""

from __future__ import annotations

import asyncio
import random
import sqlite3
import subprocess
import sys
from contextlib import closing
from typing import TYPE_CHECKING, Any

import msgspec
import nats
import pytest

from connectors.nats import NatsSinkConfig, NatsSourceConfig
from flowstream import FlowRuntime, Workflow, default_registry, node
from tests.checkpoints import kill_at_random
from tests.connectors.test_redis import wait_for_rows

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from nats.aio.client import Client

    from tests.connectors.servers import Server


def url(server: Server) -> str:
    return f"nats://127.0.0.1:{server.port}"


def stream_name() -> str:
    return f"S{random.randrange(1 << 30)}"


async def connect(server: Server) -> Client:
    return await nats.connect(url(server))


async def make_stream(server: Server, name: str) -> None:
    nc = await connect(server)
    try:
        await nc.jetstream().add_stream(name=name, subjects=[f"{name}.>"])
    finally:
        await nc.close()


async def fill(
    server: Server, stream: str, payloads: list[bytes], subject: str = "in"
) -> None:
    nc = await connect(server)
    try:
        js = nc.jetstream()
        for start in range(0, len(payloads), 1000):
            futures = [
                await js.publish_async(f"{stream}.{subject}", p)
                for p in payloads[start : start + 1000]
            ]
            await asyncio.gather(*futures)
    finally:
        await nc.close()


def records(numbers: range) -> list[bytes]:
    return [msgspec.json.encode({"n": i}) for i in numbers]


async def stream_records(server: Server, stream: str, subject: str) -> list[Any]:
    nc = await connect(server)
    try:
        js = nc.jetstream()
        sub = await js.subscribe(subject, ordered_consumer=True)
        info = await js.stream_info(stream, subjects_filter=subject)
        count = (info.state.subjects or {}).get(subject, 0)
        got = []
        for _ in range(count):
            msg = await sub.next_msg(timeout=5)
            got.append(msgspec.json.decode(msg.data))
        return got
    finally:
        await nc.close()


def read_all(server: Server, stream: str, **config: Any) -> Workflow:
    return Workflow("read").node(
        "src",
        "nats.source",
        servers=[url(server)],
        stream=stream,
        stop_at_end=True,
        **config,
    )


async def test_source_reads_a_stream_to_its_end_and_dead_letters_bad_payloads(
    nats: Server,
) -> None:
    stream = stream_name()
    await make_stream(nats, stream)
    await fill(nats, stream, [*records(range(500)), b"{bad", *records(range(500, 600))])
    result = await FlowRuntime().arun(read_all(nats, stream, batch_size=64))
    assert result.ok, result.error
    assert result.outputs["src"]["out"] == [{"n": i} for i in range(600)]
    (letter,) = result.dead_letters
    assert letter.item["position"] == 501
    assert letter.reason.startswith("malformed json")


async def test_a_fetch_that_times_out_is_not_the_end_of_the_stream(
    nats: Server,
) -> None:
    # A fetch may time out with messages left (a busy server, a 1 ms poll):
    # stop_at_end must go on until the consumer has nothing pending.
    stream = stream_name()
    await make_stream(nats, stream)
    await fill(nats, stream, records(range(5000)))
    wf = read_all(nats, stream, batch_size=50, poll_ms=1)
    result = await FlowRuntime().arun(wf)
    assert result.ok, result.error
    assert result.outputs["src"]["out"] == [{"n": i} for i in range(5000)]


async def test_filtered_subject_stops_at_end_and_durable_resumes(
    nats: Server,
) -> None:
    stream = stream_name()
    await make_stream(nats, stream)
    await fill(nats, stream, records(range(100)), subject="a")
    await fill(nats, stream, records(range(100, 110)), subject="b")
    wf = read_all(nats, stream, subject=f"{stream}.a", durable="d")
    first = await FlowRuntime().arun(wf)
    assert first.ok, first.error
    assert first.outputs["src"]["out"] == [{"n": i} for i in range(100)]
    await fill(nats, stream, records(range(200, 205)), subject="a")
    second = await FlowRuntime().arun(wf)
    # The durable's acks followed the batches handed on: only the new ones.
    assert second.outputs["src"]["out"] == [{"n": i} for i in range(200, 205)]


async def test_sink_publishes_with_ids_the_stream_deduplicates(nats: Server) -> None:
    stream = stream_name()
    await make_stream(nats, stream)
    wf = (
        Workflow("write")
        .node("seq", "source.range", stop=2000)
        .node("rec", "transform.map", expr="{'n': x % 1500}")
        .node(
            "out",
            "nats.sink",
            servers=[url(nats)],
            subject=f"{stream}.out",
            stream=stream,
            id_field="n",
        )
        .connect("seq -> rec")
        .connect("rec -> out")
    )
    result = await FlowRuntime().arun(wf)
    assert result.ok, result.error
    # Records 1500..1999 repeat the ids of 0..499: dropped by the stream.
    got = await stream_records(nats, stream, f"{stream}.out")
    assert got == [{"n": i} for i in range(1500)]
    back = await FlowRuntime().arun(read_all(nats, stream))
    assert back.outputs["src"]["out"] == got


def test_configs_refuse_what_cannot_work() -> None:
    with pytest.raises(ValueError, match="must start with nats://"):
        NatsSourceConfig(stream="S", servers=["127.0.0.1:4222"])
    with pytest.raises(ValueError, match="one concrete subject"):
        NatsSinkConfig(subject="a.>")
    with pytest.raises(ValueError, match="at least batch_size"):
        NatsSourceConfig(stream="S", max_ack_pending=10, batch_size=20)


async def test_source_reconnects_after_a_restart_and_loses_nothing(
    own_nats: Server, tmp_path: Path
) -> None:
    stream = stream_name()
    n = 20_000
    await make_stream(own_nats, stream)
    await fill(own_nats, stream, records(range(n)))
    db = tmp_path / "out.db"
    wf = (
        Workflow("read", mode="stream")
        .node(
            "src",
            "nats.source",
            servers=[url(own_nats)],
            stream=stream,
            stop_at_end=True,
            batch_size=100,
            reconnect={"delay_ms": 20},
        )
        .node("out", "sqlite.sink", path=str(db), table="t")
        .connect("src -> out", capacity=1)
    )
    run = asyncio.ensure_future(FlowRuntime().arun(wf))
    try:
        await wait_for_rows(db, run)
        own_nats.restart()
        assert not run.done(), "the run ended before the restart: make it longer"
        result = await asyncio.wait_for(run, 60)
    finally:
        run.cancel()
    assert result.ok, result.error
    with closing(sqlite3.connect(db)) as conn:
        got = [row[0] for row in conn.execute("select n from t order by rowid")]
    assert got == list(range(n))


async def test_slow_sink_keeps_prefetch_bounded(nats: Server) -> None:
    stream = stream_name()
    n, batch_size, capacity = 3000, 20, 2
    await make_stream(nats, stream)
    await fill(nats, stream, records(range(n)))
    nc = await connect(nats)
    js = nc.jetstream()
    ahead: list[int] = []

    @node("test.slow_nats", batched=True)
    async def slow(inp: AsyncIterator[list[Any]]) -> AsyncIterator[list[Any]]:
        seen = 0
        async for batch in inp:
            seen += len(batch)
            info = await js.consumer_info(stream, "src")
            assert info.delivered.stream_seq is not None
            ahead.append(info.delivered.stream_seq - seen)
            await asyncio.sleep(0.001)  # the slow consumer
            yield []

    registry = default_registry()
    registry.register(slow)
    wf = read_all(nats, stream, batch_size=batch_size)
    wf.node("slow", "test.slow_nats").connect("src -> slow", capacity=capacity)
    try:
        result = await FlowRuntime(registry).arun(wf, fuse=False)
    finally:
        await nc.close()
    assert result.ok, result.error
    assert len(ahead) >= n // batch_size
    assert max(ahead) <= batch_size * (capacity + 3)


RUNNER = """
import sys
from flowstream import FlowRuntime, Workflow
from flowstream.core.workflow import Checkpoint

store, out, url, stream = sys.argv[1:5]
wf = (
    Workflow("nats-to-sqlite", mode="stream")
    .node("src", "nats.source", servers=[url], stream=stream, subject=stream + ".in",
          stop_at_end=True, batch_size=200)
    .node("table", "sqlite.sink", path=out + "/out.db", table="records")
    .node("copy", "nats.sink", servers=[url], subject=stream + ".copy")
    .connect("src -> table")
    .connect("src -> copy")
)
wf.checkpoint = Checkpoint(path=store, interval_ms=20)
result = FlowRuntime().run(wf, fuse=False)
print(result.status, result.stats["src"].items_out, result.error)
sys.exit(0 if result.ok else 1)
"""


async def test_kill_9_leaves_each_message_exactly_once_in_sqlite_and_nats(
    nats: Server, tmp_path: Path
) -> None:
    stream = stream_name()
    n = 20_000
    await make_stream(nats, stream)
    await fill(nats, stream, records(range(n)))
    script = tmp_path / "runner.py"
    script.write_text(RUNNER)
    store, out = tmp_path / "ckpt.db", tmp_path / "out"
    out.mkdir()
    args = [sys.executable, str(script), str(store), str(out), url(nats), stream]
    kills = await asyncio.to_thread(
        kill_at_random, args, store, random.Random(78), 2, 0.2
    )
    done = await asyncio.to_thread(
        subprocess.run, args, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert kills >= 1, "no kill landed mid-run: make the run longer"
    status, emitted, _ = done.stdout.split(maxsplit=2)
    assert status == "completed"
    assert int(emitted) < n  # resumed from a checkpoint, not from the start
    with closing(sqlite3.connect(out / "out.db")) as conn:
        got = [row[0] for row in conn.execute("select n from records order by rowid")]
    assert got == list(range(n))
    copy = await stream_records(nats, stream, f"{stream}.copy")
    assert copy == [{"n": i} for i in range(n)]
