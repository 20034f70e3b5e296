"""kafka.source and kafka.sink against a real Kafka-compatible broker (Tansu).

Tansu (memory storage) supports producing, fetching, consumer groups and
offset commits; it refuses InitProducerId, so neither the idempotent
producer nor transactions can be used against it (tested below).
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import subprocess
import sys
from collections import Counter
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from connectors.kafka import KafkaSinkConfig, KafkaSourceConfig
from flowstream import FlowRuntime, Workflow, read_workflow
from tests.checkpoints import kill_at_random

if TYPE_CHECKING:
    from tests.connectors.servers import Server


def servers(server: Server) -> list[str]:
    return [f"127.0.0.1:{server.port}"]


async def make_topic(server: Server, partitions: int = 3) -> str:
    topic = f"t{random.randrange(1 << 30)}"
    admin = AIOKafkaAdminClient(bootstrap_servers=servers(server))
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(topic, num_partitions=partitions, replication_factor=1)]
        )
    finally:
        await admin.close()
    return topic


async def produce(server: Server, topic: str, values: list[bytes | None]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=servers(server), linger_ms=5)
    await producer.start()
    try:
        futures = [
            await producer.send(topic, value, key=str(i % 5).encode())
            for i, value in enumerate(values)
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def consume_all(server: Server, topic: str) -> list[Any]:
    """Every record of the topic: (key, value, headers), partition by partition."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=servers(server), enable_auto_commit=False
    )
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic)
        if partitions is None:
            await consumer.topics()
            partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        got: list[Any] = []
        for tp in tps:
            while await consumer.position(tp) < ends[tp]:
                batch = await consumer.getmany(tp, timeout_ms=2000)
                got += [
                    (r.key, msgspec.json.decode(r.value), dict(r.headers))
                    for r in batch.get(tp, [])
                ]
        return got
    finally:
        await consumer.stop()


def read_all(server: Server, topic: str, **config: Any) -> Workflow:
    return Workflow("read").node(
        "src",
        "kafka.source",
        servers=servers(server),
        topics=[topic],
        stop_at_end=True,
        **config,
    )


def by_partition_order(records: list[Any]) -> list[int]:
    return sorted(r["n"] for r in records)


async def test_source_reads_every_partition_to_its_end(kafka: Server) -> None:
    topic = await make_topic(kafka)
    values: list[bytes | None] = [msgspec.json.encode({"n": i}) for i in range(3000)]
    values[100] = b"{bad"
    values[200] = None  # a tombstone
    await produce(kafka, topic, values)
    result = await FlowRuntime().arun(read_all(kafka, topic, batch_size=100))
    assert result.ok, result.error
    out = result.outputs["src"]["out"]
    assert by_partition_order(out) == [i for i in range(3000) if i not in (100, 200)]
    # Within a key (one partition) the order is the produced one.
    for k in range(5):
        ns = [r["n"] for r in out if r["n"] % 5 == k]
        assert ns == sorted(ns)
    reasons = sorted(d.reason.split(":")[0].split(" (")[0] for d in result.dead_letters)
    assert reasons == ["malformed json", "tombstone"]


async def test_group_commits_the_offsets_it_handed_on(kafka: Server) -> None:
    topic = await make_topic(kafka, partitions=2)
    await produce(kafka, topic, [msgspec.json.encode({"n": i}) for i in range(500)])
    # One run only: Tansu takes seconds to form a group, and longer to let a
    # new member in after one left, so the resume is checked on the offsets.
    # Batches far smaller than a partition: the end must be the log's end,
    # not the broker's ListOffsets answer (see KafkaSource.caught_up).
    wf = read_all(kafka, topic, group="g1", start="committed", batch_size=50)
    result = await FlowRuntime().arun(wf)
    assert result.ok, result.error
    assert by_partition_order(result.outputs["src"]["out"]) == list(range(500))
    await assert_committed_at_end(kafka, topic, "g1", 2, 500)


async def assert_committed_at_end(
    server: Server, topic: str, group: str, partitions: int, records: int
) -> None:
    """The group's committed offsets reached the ends (lag tools see 0 lag).

    Summed: Tansu's ListOffsets answers the last record batch's base offset
    + 1, not the end, so the ends are known only as the record count.
    """
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    member = AIOKafkaConsumer(bootstrap_servers=servers(server), group_id=group)
    await member.start()
    try:
        assert sum([await member.committed(tp) or 0 for tp in tps]) == records
    finally:
        await member.stop()


async def test_sink_produces_keys_and_headers_from_fields(kafka: Server) -> None:
    topic = await make_topic(kafka)
    wf = (
        Workflow("write")
        .node("seq", "source.range", stop=1000)
        .node(
            "rec",
            "transform.map",
            expr="x == 7 ? {'n': x} : {'n': x, 'user': {'id': x % 4}, 'tag': 't'}",
        )
        .node(
            "out",
            "kafka.sink",
            servers=servers(kafka),
            topic=topic,
            key_field="user.id",
            headers={"tag": "x.tag"},
            idempotent=False,
        )
        .connect("seq -> rec")
        .connect("rec -> out")
    )
    result = await FlowRuntime().arun(wf)
    assert result.ok, result.error
    (letter,) = result.dead_letters  # no key
    assert letter.item == {"n": 7}
    assert "no key: the field 'user.id' gives none" in letter.reason
    got = await consume_all(kafka, topic)
    assert sorted(v["n"] for _, v, _ in got) == [i for i in range(1000) if i != 7]
    assert all(k == str(v["n"] % 4).encode() for k, v, _ in got)
    assert all(h == {"tag": b"t"} for _, _, h in got)


async def test_sink_keys_and_headers_from_cel(kafka: Server) -> None:
    topic = await make_topic(kafka)
    wf = (
        Workflow("write-cel")
        .node("seq", "source.range", stop=50)
        .node("rec", "transform.map", expr="{'n': x, 'user': 'u' + string(x % 3)}")
        .node(
            "out",
            "kafka.sink",
            servers=servers(kafka),
            topic=topic,
            key="x.n == 5 ? x.missing : x.user + '-' + string(x.n % 2)",
            headers={"parity": "x.n % 2 == 0 ? 'even' : 'odd'", "gone": "x.nope"},
            idempotent=False,
        )
        .connect("seq -> rec")
        .connect("rec -> out")
    )
    result = await FlowRuntime().arun(wf)
    assert result.ok, result.error
    (letter,) = result.dead_letters  # its key expression fails
    assert letter.item["n"] == 5
    assert "no key: the key" in letter.reason
    got = await consume_all(kafka, topic)
    assert sorted(v["n"] for _, v, _ in got) == [i for i in range(50) if i != 5]
    for k, v, h in got:
        assert k == f"u{v['n'] % 3}-{v['n'] % 2}".encode()
        assert h == {"parity": b"even" if v["n"] % 2 == 0 else b"odd"}
    back = await FlowRuntime().arun(read_all(kafka, topic))
    assert by_partition_order(back.outputs["src"]["out"]) == sorted(
        v["n"] for _, v, _ in got
    )


async def test_idempotent_producer_refused_by_the_broker_fails_clearly(
    kafka: Server,
) -> None:
    wf = (
        Workflow("write")
        .node("seq", "source.range", stop=1)
        .node("out", "kafka.sink", servers=servers(kafka), topic="x")
        .connect("seq -> out")
    )
    result = await FlowRuntime().arun(wf)
    assert not result.ok
    assert result.error is not None
    assert "refused an idempotent producer" in result.error
    assert "set idempotent: false" in result.error


def test_configs_refuse_what_cannot_work() -> None:
    with pytest.raises(ValueError, match="either topics"):
        KafkaSourceConfig()
    with pytest.raises(ValueError, match="pattern needs a group"):
        KafkaSourceConfig(pattern="t.*")
    with pytest.raises(ValueError, match="must be host:port"):
        KafkaSinkConfig(topic="t", servers=["localhost"])


RUNNER = """
import sys
from flowstream import FlowRuntime, Workflow, read_workflow
from flowstream.core.workflow import Checkpoint

store, out, server, topic = sys.argv[1:5]
wf = (
    Workflow("kafka-to-sqlite", mode="stream")
    .node("src", "kafka.source", servers=[server], topics=[topic],
          stop_at_end=True, batch_size=200)
    .node("table", "sqlite.sink", path=out + "/out.db", table="records")
    .node("copy", "kafka.sink", servers=[server], topic=topic + "-copy",
          idempotent=False)
    .connect("src -> table")
    .connect("src -> copy")
)
wf.checkpoint = Checkpoint(path=store, interval_ms=20)
result = FlowRuntime().run(wf, fuse=False)
print(result.status, result.stats["src"].items_out, result.error)
sys.exit(0 if result.ok else 1)
"""


async def test_kill_9_leaves_each_record_exactly_once_in_sqlite(
    kafka: Server, tmp_path: Path
) -> None:
    topic = await make_topic(kafka)
    n = 20_000
    await produce(kafka, topic, [msgspec.json.encode({"n": i}) for i in range(n)])
    script = tmp_path / "runner.py"
    script.write_text(RUNNER)
    store, out = tmp_path / "ckpt.db", tmp_path / "out"
    out.mkdir()
    server = servers(kafka)[0]
    args = [sys.executable, str(script), str(store), str(out), server, topic]
    kills = await asyncio.to_thread(
        kill_at_random, args, store, random.Random(79), 2, 0.2
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
        got = [row[0] for row in conn.execute("select n from records")]
    assert sorted(got) == list(range(n))  # each exactly once
    # kafka.sink is at least once: every record is there, some maybe twice.
    copy = Counter(v["n"] for _, v, _ in await consume_all(kafka, topic + "-copy"))
    assert set(copy) == set(range(n))


EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "kafka_windows.yaml"


def example_for(kafka: Server, topic: str, tmp_path: Path) -> Path:
    """The shipped example, pointed at the test broker, a topic and tmp_path."""
    text = EXAMPLE.read_text()
    server = servers(kafka)[0]
    text = (
        text.replace("127.0.0.1:9092", server)
        .replace("topics: [readings]", f"topics: [{topic}]\n      stop_at_end: true")
        .replace(
            "topic: sensor-windows\n      key_field: sensor\n",
            f"topic: {topic}-windows\n      key_field: sensor\n"
            "      idempotent: false\n",
        )
        .replace("kafka-windows", str(tmp_path / "kafka-windows"))
    )
    assert "stop_at_end" in text
    assert "idempotent: false" in text
    example = tmp_path / "example.yaml"
    example.write_text(text)
    return example


def readings_for(count: int) -> list[dict[str, Any]]:
    return [
        {"sensor": f"s{i % 4}", "value": float(i % 10), "ts": 1_000_000 + i * 10}
        for i in range(count)
    ]


def expected_windows(
    readings: list[dict[str, Any]],
) -> dict[tuple[str, float], tuple[int, float]]:
    expected: dict[tuple[str, float], tuple[int, float]] = {}
    for r in readings:
        key = (r["sensor"], float(r["ts"] // 1000 * 1000))
        n, total = expected.get(key, (0, 0.0))
        expected[key] = (n + 1, total + r["value"])
    return expected


async def test_the_kafka_windows_example_runs_against_the_broker(
    kafka: Server, tmp_path: Path
) -> None:
    server = servers(kafka)[0]
    # One partition: with allowed_lateness_ms 0, records of one window spread
    # over partitions would arrive late and be dropped.
    topic = await make_topic(kafka, partitions=1)
    example = example_for(kafka, topic, tmp_path)
    assert server in example.read_text()
    readings = readings_for(2000)
    await produce(kafka, topic, [msgspec.json.encode(r) for r in readings])
    result = await FlowRuntime().arun(read_workflow(example))
    assert result.ok, result.error
    expected = expected_windows(readings)
    with closing(sqlite3.connect(tmp_path / "kafka-windows.db")) as conn:
        rows = conn.execute("select sensor, window_start, n, total from windows")
        got = {(s, float(w)): (n, t) for s, w, n, t in rows}
    assert got == expected
    produced = await consume_all(kafka, f"{topic}-windows")
    assert {(v["sensor"], float(v["window_start"])) for _, v, _ in produced} == set(
        expected
    )


async def test_the_kafka_windows_example_survives_kill_9(
    kafka: Server, tmp_path: Path
) -> None:
    topic = await make_topic(kafka, partitions=1)
    example = example_for(kafka, topic, tmp_path)
    readings = readings_for(30_000)
    await produce(kafka, topic, [msgspec.json.encode(r) for r in readings])
    args = [sys.executable, "-m", "flowstream", "run", str(example)]
    store = tmp_path / "kafka-windows-checkpoints.db"
    kills = await asyncio.to_thread(
        kill_at_random, args, store, random.Random(11), 2, 0.3
    )
    done = await asyncio.to_thread(
        subprocess.run, args, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert kills >= 1, "no kill landed mid-run: make the run longer"
    with closing(sqlite3.connect(tmp_path / "kafka-windows.db")) as conn:
        rows = conn.execute("select sensor, window_start, n, total from windows")
        got = {(s, float(w)): (n, t) for s, w, n, t in rows}
    assert got == expected_windows(readings)  # every window, each exactly once
