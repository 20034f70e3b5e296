"""Broker connectors against their bare client library, on real local servers.

For Redis (redis-server), NATS JetStream (nats-server) and Kafka (Tansu):

* source: records/s from a log of N small JSON records through
  ``<broker>.source`` (``stop_at_end``) into ``sink.null``, against the bare
  client reading the same log in the same batches and decoding each payload
  with one msgspec decoder (Kafka: ``getmany`` + decode; Redis: ``XREAD``;
  NATS: pull ``fetch`` + ack);
* sink: records/s from ``source.range`` into ``<broker>.sink``, against the
  bare client writing the same N records, JSON-encoded, in batches of the
  same size, waiting for each batch's acknowledgements.

Both sides connect inside the timed region. Rounds are paired (bare, then
flowstream, in one process); the table gives the median and [min..max] of the
per-round ratios. Target: flowstream >= 0.8x the bare client.

``python -m benchmarks.bench_brokers [--quick] [--repeat N]``; in ``python -m
benchmarks`` as workload ``brokers``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from flowstream import FlowRuntime, Workflow

from . import _harness as h

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator

    from tests.connectors.servers import Server

NAME = "brokers"
TARGET = 0.8
BATCH = 512
RECORD = {"sensor": "s3", "value": 1.5, "ts": 1700000000.125}


def _payloads(n: int) -> list[bytes]:
    enc = msgspec.json.Encoder()
    return [enc.encode({**RECORD, "n": i}) for i in range(n)]


def _name() -> str:
    return f"b{random.randrange(1 << 30)}"


# --- Redis ---------------------------------------------------------------------------


async def redis_fill(server: Server, n: int) -> str:
    import redis.asyncio as aioredis

    stream = _name()
    client = aioredis.Redis.from_url(f"redis://127.0.0.1:{server.port}")
    payloads = _payloads(n)
    for start in range(0, n, 5000):
        pipe = client.pipeline(transaction=False)
        for p in payloads[start : start + 5000]:
            pipe.xadd(stream, {"data": p})
        await pipe.execute()
    await client.aclose()
    return stream


async def redis_bare_read(server: Server, stream: str, n: int) -> int:
    import redis.asyncio as aioredis

    dec = msgspec.json.Decoder()
    client = aioredis.Redis.from_url(f"redis://127.0.0.1:{server.port}", protocol=2)
    after, count = "0-0", 0
    while count < n:
        reply: Any = await client.xread({stream: after}, count=BATCH, block=200)
        batch = [dec.decode(fields[b"data"]) for _, fields in reply[0][1]]
        count += len(batch)
        after = reply[0][1][-1][0]
    await client.aclose()
    return count


async def redis_bare_write(server: Server, n: int) -> int:
    import redis.asyncio as aioredis

    stream = _name()
    enc = msgspec.json.Encoder()
    client = aioredis.Redis.from_url(f"redis://127.0.0.1:{server.port}", protocol=2)
    for start in range(0, n, BATCH):
        pipe = client.pipeline(transaction=False)
        for i in range(start, min(start + BATCH, n)):
            pipe.xadd(stream, {"data": enc.encode(i)})
        await pipe.execute()
    await client.delete(stream)
    await client.aclose()
    return n


def redis_source_node(server: Server, stream: str) -> dict[str, Any]:
    return {"url": f"redis://127.0.0.1:{server.port}", "stream": stream}


def redis_sink_node(server: Server) -> dict[str, Any]:
    return {"url": f"redis://127.0.0.1:{server.port}", "stream": _name()}


# --- NATS ----------------------------------------------------------------------------


async def nats_fill(server: Server, n: int) -> str:
    import nats

    stream = _name().upper()
    nc = await nats.connect(f"nats://127.0.0.1:{server.port}")
    js = nc.jetstream()
    await js.add_stream(name=stream, subjects=[f"{stream}.>"])
    payloads = _payloads(n)
    for start in range(0, n, 1000):
        futures = [
            await js.publish_async(f"{stream}.in", p)
            for p in payloads[start : start + 1000]
        ]
        await asyncio.gather(*futures)
    await nc.close()
    return stream


async def nats_bare_read(server: Server, stream: str, n: int) -> int:
    import nats
    import nats.errors
    from nats.js.api import AckPolicy, ConsumerConfig

    dec = msgspec.json.Decoder()
    nc = await nats.connect(f"nats://127.0.0.1:{server.port}")
    js = nc.jetstream()
    durable = _name()
    sub = await js.pull_subscribe(
        "",
        durable=durable,
        stream=stream,
        config=ConsumerConfig(
            durable_name=durable, ack_policy=AckPolicy.ALL, max_ack_pending=100_000
        ),
    )
    count = 0
    while count < n:
        try:
            msgs = await sub.fetch(BATCH, timeout=0.2)
        except nats.errors.TimeoutError:
            continue  # nothing within the poll (a loaded machine): poll again
        batch = [dec.decode(m.data) for m in msgs]
        count += len(batch)
        await nc.publish(msgs[-1].reply, b"+ACK")
    await js.delete_consumer(stream, durable)
    await nc.close()
    return count


async def nats_bare_write(server: Server, n: int) -> int:
    import nats

    stream = _name().upper()
    enc = msgspec.json.Encoder()
    nc = await nats.connect(f"nats://127.0.0.1:{server.port}")
    js = nc.jetstream()
    await js.add_stream(name=stream, subjects=[f"{stream}.>"])
    for start in range(0, n, BATCH):
        futures = [
            await js.publish_async(
                f"{stream}.out", enc.encode(i), headers={"Nats-Msg-Id": f"x-{i}"}
            )
            for i in range(start, min(start + BATCH, n))
        ]
        await asyncio.gather(*futures)
    await js.delete_stream(stream)
    await nc.close()
    return n


def nats_source_node(server: Server, stream: str) -> dict[str, Any]:
    return {
        "servers": [f"nats://127.0.0.1:{server.port}"],
        "stream": stream,
        "durable": _name(),
    }


async def nats_sink_stream(server: Server) -> str:
    import nats

    stream = _name().upper()
    nc = await nats.connect(f"nats://127.0.0.1:{server.port}")
    await nc.jetstream().add_stream(name=stream, subjects=[f"{stream}.>"])
    await nc.close()
    return stream


# --- Kafka ---------------------------------------------------------------------------


async def kafka_fill(server: Server, n: int) -> str:
    from aiokafka import AIOKafkaProducer

    topic = _name()
    producer = AIOKafkaProducer(
        bootstrap_servers=f"127.0.0.1:{server.port}", linger_ms=5
    )
    await producer.start()
    payloads = _payloads(n)
    for start in range(0, n, 5000):
        futures = [
            await producer.send(topic, p) for p in payloads[start : start + 5000]
        ]
        await asyncio.gather(*futures)
    await producer.stop()
    return topic


async def kafka_bare_read(server: Server, topic: str, n: int) -> int:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    dec = msgspec.json.Decoder()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=f"127.0.0.1:{server.port}", enable_auto_commit=False
    )
    await consumer.start()
    await consumer.topics()
    tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    count = 0
    while count < n:
        fetched = await consumer.getmany(timeout_ms=200, max_records=BATCH)
        for records in fetched.values():
            batch = [dec.decode(r.value) for r in records]
            count += len(batch)
    await consumer.stop()
    return count


async def kafka_bare_write(server: Server, n: int) -> int:
    from aiokafka import AIOKafkaProducer

    enc = msgspec.json.Encoder()
    topic = _name()
    producer = AIOKafkaProducer(
        bootstrap_servers=f"127.0.0.1:{server.port}", linger_ms=5
    )
    await producer.start()
    for start in range(0, n, BATCH):
        futures = [
            await producer.send(topic, enc.encode(i))
            for i in range(start, min(start + BATCH, n))
        ]
        await asyncio.gather(*futures)
    await producer.stop()
    return n


# --- rounds --------------------------------------------------------------------------


async def flowstream_read(node_type: str, config: dict[str, Any], n: int) -> int:
    wf = (
        Workflow("bench")
        .node("src", node_type, stop_at_end=True, batch_size=BATCH, **config)
        .node("null", "sink.null")
        .connect("src -> null")
    )
    result = await FlowRuntime().arun(wf)
    assert result.ok, result.error
    count = result.stats["src"].items_out
    assert count == n, f"{node_type} read {count} records, not {n}"
    return count


async def flowstream_write(node_type: str, config: dict[str, Any], n: int) -> int:
    wf = (
        Workflow("bench")
        .node("seq", "source.range", stop=n)
        .node("out", node_type, **config)
        .connect("seq -> out")
    )
    result = await FlowRuntime().arun(wf)
    assert result.ok, result.error
    return n


async def _timed(call: Callable[[], Awaitable[int]]) -> float:
    started = time.perf_counter()
    count = await call()
    return count / (time.perf_counter() - started)


@contextlib.contextmanager
def servers() -> Iterator[dict[str, Server | str]]:
    """Start the three servers (a missing one is reported, not fatal)."""
    from tests.connectors import servers as s

    made: dict[str, Server | str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, make in (
            ("redis", s.redis_server),
            ("nats", s.nats_server),
            ("kafka", s.kafka_server),
        ):
            try:
                server = make(Path(tmp))
                server.start()
                made[name] = server
            except BaseException as exc:  # pytest.skip's exception included
                made[name] = f"{type(exc).__name__}: {exc}"
        try:
            yield made
        finally:
            for server in made.values():
                if not isinstance(server, str):
                    server.stop()


def _case(
    cfg: h.Config,
    label: str,
    n: int,
    bare: Callable[[], Awaitable[int]],
    fs: Callable[[], Awaitable[int]],
) -> list[h.Row]:
    rates: dict[str, list[float]] = {"bare": [], "fs": []}
    for i in range(cfg.repeat):
        rates["bare"].append(asyncio.run(_timed(bare)))
        rates["fs"].append(asyncio.run(_timed(fs)))
        h.log(
            f"  {label} round {i + 1}/{cfg.repeat}: bare {rates['bare'][-1]:,.0f}/s,"
            f" flowstream {rates['fs'][-1]:,.0f}/s"
        )
    ratios = [f / b for f, b in zip(rates["fs"], rates["bare"], strict=True)]
    floor = h.Row(
        name=f"bare client ({label})",
        role="ceiling",
        n=n,
        unit="records/s",
        value=statistics.median(rates["bare"]),
        times_s=[n / r for r in rates["bare"]],
    )
    floor.vs_floor = 1.0
    row = h.Row(
        name=f"{h.FLOWSTREAM} ({label})",
        role="flowstream",
        n=n,
        unit="records/s",
        value=statistics.median(rates["fs"]),
        times_s=[n / r for r in rates["fs"]],
        target=f">= {TARGET:.1f}x bare",
        note=f"ratio per round [{min(ratios):.2f}..{max(ratios):.2f}]",
        extra={"ratios": ratios},
    )
    row.vs_floor = statistics.median(ratios)
    row.status = "PASS" if row.vs_floor >= TARGET else "MISS"
    return [floor, row]


def run(cfg: h.Config) -> h.Workload:
    """Every broker, source and sink, paired rounds of bare and flowstream."""
    # Fewer than the 1M: the three servers and both loops share two
    # cores with the rest of the machine, where a 1M round takes minutes.
    n = cfg.size(100_000, 20_000)
    h.log(f"[{NAME}] broker connectors vs their bare clients, {n:,} records")
    rows: list[h.Row] = []
    notes: list[str] = []
    with servers() as found:
        for broker, server in found.items():
            if isinstance(server, str):
                notes.append(f"{broker}: not measured ({server})")
                continue
            if broker == "redis":
                log = asyncio.run(redis_fill(server, n))
                src_cfg = redis_source_node(server, log)
                rows += _case(
                    cfg,
                    "redis.source",
                    n,
                    lambda s=server, log=log: redis_bare_read(s, log, n),
                    lambda c=src_cfg: flowstream_read("redis.source", c, n),
                )
                rows += _case(
                    cfg,
                    "redis.sink",
                    n,
                    lambda s=server: redis_bare_write(s, n),
                    lambda s=server: flowstream_write(
                        "redis.sink", redis_sink_node(s), n
                    ),
                )
            elif broker == "nats":
                log = asyncio.run(nats_fill(server, n))
                rows += _case(
                    cfg,
                    "nats.source",
                    n,
                    lambda s=server, log=log: nats_bare_read(s, log, n),
                    lambda s=server, log=log: flowstream_read(
                        "nats.source", nats_source_node(s, log), n
                    ),
                )
                out = asyncio.run(nats_sink_stream(server))
                url = f"nats://127.0.0.1:{server.port}"
                rows += _case(
                    cfg,
                    "nats.sink",
                    n,
                    lambda s=server: nats_bare_write(s, n),
                    lambda url=url, out=out: flowstream_write(
                        "nats.sink", {"servers": [url], "subject": f"{out}.out"}, n
                    ),
                )
            else:
                log = asyncio.run(kafka_fill(server, n))
                bootstrap = [f"127.0.0.1:{server.port}"]
                rows += _case(
                    cfg,
                    "kafka.source",
                    n,
                    lambda s=server, log=log: kafka_bare_read(s, log, n),
                    lambda b=bootstrap, log=log: flowstream_read(
                        "kafka.source", {"servers": b, "topics": [log]}, n
                    ),
                )
                rows += _case(
                    cfg,
                    "kafka.sink",
                    n,
                    lambda s=server: kafka_bare_write(s, n),
                    lambda b=bootstrap: flowstream_write(
                        "kafka.sink",
                        {"servers": b, "topic": _name(), "idempotent": False},
                        n,
                    ),
                )
    w = h.Workload(
        name=NAME,
        title="(h) brokers: each connector vs its bare client library",
        unit="records/s",
        rows=rows,
    )
    w.notes.append(
        f"{n:,} records of ~60 bytes JSON per run, batches of {BATCH}; median of "
        f"{cfg.repeat} paired rounds (bare, then flowstream), ratio per round "
        "[min..max]; servers on 127.0.0.1 (redis-server 6.2, nats-server with "
        "JetStream file storage, Tansu with memory storage)"
    )
    w.notes += notes
    return w


if __name__ == "__main__":
    import sys

    p = h.parser("broker connector benchmark")
    cfg = h.config_from(p.parse_args(sys.argv[1:]))
    h.print_workload(run(cfg))
