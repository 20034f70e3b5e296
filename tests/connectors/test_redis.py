"""redis.source and redis.sink against a real redis-server (see servers.py)."""

from __future__ import annotations

import asyncio
import random
import sqlite3
import subprocess
import sys
from contextlib import closing
from typing import TYPE_CHECKING, Any

import msgspec
import pytest
import redis.asyncio as aioredis

from connectors.redis import RedisSinkConfig, RedisSourceConfig
from flowstream import FlowRuntime, Workflow, default_registry, node
from tests.checkpoints import kill_at_random

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from tests.connectors.servers import Server


def url(server: Server) -> str:
    return f"redis://127.0.0.1:{server.port}"


def stream_name(request: pytest.FixtureRequest) -> str:
    return f"s-{request.node.name}-{random.randrange(1 << 30)}"


async def fill(server: Server, stream: str, records: list[Any]) -> None:
    client = aioredis.Redis.from_url(url(server))
    try:
        pipe = client.pipeline(transaction=False)
        for i, record in enumerate(records):
            pipe.xadd(stream, {"data": msgspec.json.encode(record)}, id=f"{i + 1}-0")
        await pipe.execute()
    finally:
        await client.aclose()


async def entries(server: Server, stream: str) -> list[Any]:
    client = aioredis.Redis.from_url(url(server))
    try:
        found: Any = await client.xrange(stream)
    finally:
        await client.aclose()
    return [msgspec.json.decode(fields[b"data"]) for _, fields in found]


def read_all(server: Server, stream: str, **config: Any) -> Workflow:
    return Workflow("read").node(
        "src",
        "redis.source",
        url=url(server),
        stream=stream,
        stop_at_end=True,
        **config,
    )


async def test_source_reads_a_stream_to_its_end_and_dead_letters_bad_entries(
    redis: Server, request: pytest.FixtureRequest
) -> None:
    stream = stream_name(request)
    await fill(redis, stream, [{"n": i} for i in range(1000)])
    client = aioredis.Redis.from_url(url(redis))
    await client.xadd(stream, {"data": b"{not json"}, id="2000-0")
    await client.xadd(stream, {"other": b"1"}, id="2001-0")
    await client.xadd(stream, {"data": b'[{"n": 1000}, {"n": 1001}]'}, id="2002-0")
    await client.aclose()
    result = await FlowRuntime().arun(read_all(redis, stream, batch_size=64))
    assert result.ok, result.error
    assert result.outputs["src"]["out"] == [{"n": i} for i in range(1002)]
    reasons = [(d.item["position"], d.reason) for d in result.dead_letters]
    assert reasons[0][0] == "2000-0"
    assert reasons[0][1].startswith("malformed json")
    assert reasons[1] == ("2001-0", "entry 2001-0 has no field 'data'")


async def test_source_of_an_empty_stream_with_stop_at_end_finishes(
    redis: Server, request: pytest.FixtureRequest
) -> None:
    result = await FlowRuntime().arun(read_all(redis, stream_name(request)))
    assert result.ok, result.error
    assert result.outputs["src"]["out"] == []


async def test_group_acknowledges_what_it_handed_on_and_resumes_after_it(
    redis: Server, request: pytest.FixtureRequest
) -> None:
    stream = stream_name(request)
    await fill(redis, stream, [{"n": i} for i in range(300)])
    wf = read_all(redis, stream, group="g", batch_size=50)
    first = await FlowRuntime().arun(wf)
    assert first.ok, first.error
    assert len(first.outputs["src"]["out"]) == 300
    client = aioredis.Redis.from_url(url(redis))
    summary: Any = await client.xpending(stream, "g")
    assert summary["pending"] == 0  # every entry handed on was acknowledged
    await fill_more(client, stream, range(300, 310))
    await client.aclose()
    second = await FlowRuntime().arun(read_all(redis, stream, group="g"))
    assert second.outputs["src"]["out"] == [{"n": i} for i in range(300, 310)]


async def fill_more(client: Any, stream: str, numbers: range) -> None:
    for i in numbers:
        await client.xadd(stream, {"data": msgspec.json.encode({"n": i})})


async def test_sink_appends_records_and_source_reads_them_back(
    redis: Server, request: pytest.FixtureRequest
) -> None:
    stream = stream_name(request)
    wf = (
        Workflow("write")
        .node("seq", "source.range", stop=2000)
        .node("rec", "transform.map", expr="{'v': x}")
        .node("out", "redis.sink", url=url(redis), stream=stream)
        .connect("seq -> rec")
        .connect("rec -> out")
    )
    result = await FlowRuntime().arun(wf)
    assert result.ok, result.error
    assert await entries(redis, stream) == [{"v": i} for i in range(2000)]
    back = await FlowRuntime().arun(read_all(redis, stream))
    assert back.outputs["src"]["out"] == [{"v": i} for i in range(2000)]


async def test_keyed_sink_keeps_the_latest_record_per_key(
    redis: Server, request: pytest.FixtureRequest
) -> None:
    prefix = stream_name(request) + ":"
    wf = (
        Workflow("write")
        .node("seq", "source.range", stop=100)
        .node("rec", "transform.map", expr="{'user': {'id': x % 10}, 'n': x}")
        .node(
            "out",
            "redis.sink",
            url=url(redis),
            mode="hset",
            key_field="user.id",
            key_prefix=prefix,
            encoding="msgpack",
        )
        .connect("seq -> rec")
        .connect("rec -> out")
    )
    result = await FlowRuntime().arun(wf)
    assert result.ok, result.error
    client = aioredis.Redis.from_url(url(redis))
    for k in range(10):
        raw: Any = await client.hget(f"{prefix}{k}", "data")
        assert msgspec.msgpack.decode(raw) == {"user": {"id": k}, "n": 90 + k}
    await client.aclose()


async def test_keyed_sink_dead_letters_records_without_the_key(
    redis: Server, request: pytest.FixtureRequest
) -> None:
    wf = (
        Workflow("write")
        .node("seq", "source.range", stop=4)
        .node("rec", "transform.map", expr="x % 2 == 0 ? {'id': x} : {'other': x}")
        .node(
            "out",
            "redis.sink",
            url=url(redis),
            mode="set",
            key_field="id",
            key_prefix=stream_name(request),
        )
        .connect("seq -> rec")
        .connect("rec -> out")
    )
    result = await FlowRuntime().arun(wf)
    assert result.ok, result.error
    assert [d.item for d in result.dead_letters] == [{"other": 1}, {"other": 3}]
    assert all("no field 'id'" in d.reason for d in result.dead_letters)


def test_configs_refuse_what_cannot_work() -> None:
    with pytest.raises(ValueError, match="needs a group"):
        RedisSourceConfig(stream="s", start="committed")
    with pytest.raises(ValueError, match="needs a key_field"):
        RedisSinkConfig(mode="hset")
    with pytest.raises(ValueError, match="needs a stream"):
        RedisSinkConfig()
    with pytest.raises(ValueError, match="url must start with redis://"):
        RedisSourceConfig(stream="s", url="http://x")


# --- a broker restarted mid-stream -------------------------------------------------


async def test_source_reconnects_after_a_restart_and_loses_nothing(
    own_redis: Server, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    stream = stream_name(request)
    n = 20_000
    await fill(own_redis, stream, [{"n": i} for i in range(n)])
    db = tmp_path / "out.db"
    wf = (
        Workflow("read", mode="stream")
        .node(
            "src",
            "redis.source",
            url=url(own_redis),
            stream=stream,
            group="g",
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
        # Synchronous on purpose: the run's client finds its server gone.
        own_redis.restart()
        assert not run.done(), "the run ended before the restart: make it longer"
        result = await asyncio.wait_for(run, 60)
    finally:
        run.cancel()
    assert result.ok, result.error
    assert result.stats["src"].items_out == n
    with closing(sqlite3.connect(db)) as conn:
        got = [row[0] for row in conn.execute("select n from t order by rowid")]
    assert got == list(range(n))


async def wait_for_rows(db: Path, run: asyncio.Future[Any]) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while True:
        assert loop.time() < deadline, "no row written"
        assert not run.done(), run.result()
        if has_rows(db):
            return
        await asyncio.sleep(0.005)


def has_rows(db: Path) -> bool:
    if not db.exists():
        return False
    try:
        with closing(sqlite3.connect(db)) as conn:
            return bool(conn.execute("select count(*) from t").fetchone()[0])
    except sqlite3.OperationalError:  # the table is not there yet
        return False


# --- a slow sink keeps the source's prefetch bounded --------------------------------


async def test_slow_sink_keeps_prefetch_bounded(
    redis: Server, request: pytest.FixtureRequest
) -> None:
    stream = stream_name(request)
    n, batch_size, capacity = 3000, 20, 2
    await fill(redis, stream, [{"n": i} for i in range(n)])
    client = aioredis.Redis.from_url(url(redis))
    ahead: list[int] = []

    @node("test.slow", batched=True)
    async def slow(inp: AsyncIterator[list[Any]]) -> AsyncIterator[list[Any]]:
        seen = 0
        async for batch in inp:
            seen += len(batch)
            groups: Any = await client.xinfo_groups(stream)
            # Entry ids are "<n>-0": the last delivered id counts deliveries.
            delivered = int(groups[0]["last-delivered-id"].split(b"-")[0])
            ahead.append(delivered - seen)
            await asyncio.sleep(0.001)  # the slow consumer
            yield []

    registry = default_registry()
    registry.register(slow)
    wf = (
        Workflow("read")
        .node(
            "src",
            "redis.source",
            url=url(redis),
            stream=stream,
            group="g",
            stop_at_end=True,
            batch_size=batch_size,
        )
        .node("slow", "test.slow")
        .connect("src -> slow", capacity=capacity)
    )
    try:
        result = await FlowRuntime(registry).arun(wf, fuse=False)
    finally:
        await client.aclose()
    assert result.ok, result.error
    assert sum(1 for _ in ahead) >= n // batch_size
    # Fetched but not yet consumed: the channel's batches, the one being
    # handed over and the one just fetched, never the whole stream.
    assert max(ahead) <= batch_size * (capacity + 3)


# --- kill -9 ------------------------------------------------------------------------

RUNNER = """
import sys
from flowstream import FlowRuntime, Workflow
from flowstream.core.workflow import Checkpoint

store, out, url, stream = sys.argv[1:5]
wf = (
    Workflow("redis-to-sqlite", mode="stream")
    .node("src", "redis.source", url=url, stream=stream, group="g",
          stop_at_end=True, batch_size=200)
    .node("table", "sqlite.sink", path=out + "/out.db", table="records")
    .node("copy", "redis.sink", url=url, stream=stream + "-copy")
    .connect("src -> table")
    .connect("src -> copy")
)
wf.checkpoint = Checkpoint(path=store, interval_ms=20)
result = FlowRuntime().run(wf, fuse=False)
print(result.status, result.stats["src"].items_out, result.error)
sys.exit(0 if result.ok else 1)
"""


async def test_kill_9_leaves_each_entry_exactly_once_in_sqlite_and_redis(
    redis: Server, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    stream = stream_name(request)
    n = 20_000
    await fill(redis, stream, [{"n": i} for i in range(n)])
    script = tmp_path / "runner.py"
    script.write_text(RUNNER)
    store, out = tmp_path / "ckpt.db", tmp_path / "out"
    out.mkdir()
    args = [sys.executable, str(script), str(store), str(out), url(redis), stream]
    kills = await asyncio.to_thread(
        kill_at_random, args, store, random.Random(77), 2, 0.2
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
    assert await entries(redis, stream + "-copy") == [{"n": i} for i in range(n)]
    client = aioredis.Redis.from_url(url(redis))
    summary: Any = await client.xpending(stream, "g")
    await client.aclose()
    assert summary["pending"] == 0  # the final commit acknowledged the rest
