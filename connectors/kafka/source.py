"""The ``kafka.source`` node: records from Kafka topics, exactly once under checkpoints.

`KafkaSource` is a `connectors.base.LogSource` over aiokafka: offsets per
partition in the checkpoint, a seek there whenever a partition is assigned
(or on restore), and the offsets each committed epoch covers committed to the
consumer group so that lag tools see them.

aiokafka rather than confluent-kafka: it runs in the event loop (no
librdkafka thread whose callbacks would have to hop back into the loop), its
``getmany`` hands over a bounded batch per call, and seeking, assignment
listeners and group commits are plain coroutines.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import msgspec

from flowstream import OutboundUrl, node

from .._records import BadRecord
from ..base import LogSource, LogSourceConfig, Message, missing_client

if TYPE_CHECKING:
    from aiokafka import AIOKafkaConsumer

    from flowstream import NodeContext

__all__ = ["KafkaSource", "KafkaSourceConfig", "kafka_source"]


def _check_servers(servers: list[str]) -> None:
    if not servers:
        msg = "servers must name at least one broker, e.g. 127.0.0.1:9092"
        raise ValueError(msg)
    for server in servers:
        host, _, port = server.rpartition(":")
        if not host or not port.isdigit():
            msg = f"server {server!r} must be host:port"
            raise ValueError(msg)


def partition_key(topic: str, partition: int) -> str:
    """The key of a partition in ``positions``: ``topic:partition``."""
    return f"{topic}:{partition}"


class KafkaSourceConfig(
    LogSourceConfig, frozen=True, kw_only=True, forbid_unknown_fields=True
):
    """Config of ``kafka.source`` (plus `connectors.base.LogSourceConfig`'s).

    Attributes:
        servers: Bootstrap brokers, ``host:port``.
        topics: The topics to read.
        pattern: A regular expression of topic names instead of ``topics``
            (needs a ``group``).
        group: A consumer group: partitions are assigned by the group, and
            each committed epoch's offsets are committed to it. None reads
            every partition of ``topics`` itself and commits nothing.
        start: Where a partition with no checkpointed offset starts:
            ``earliest``, ``latest`` or ``committed`` (the group's committed
            offset, else earliest).
        max_partition_fetch_bytes: The client's prefetch per partition.
    """

    servers: list[OutboundUrl] = msgspec.field(
        default_factory=lambda: ["127.0.0.1:9092"]
    )
    topics: list[str] = msgspec.field(default_factory=list)
    pattern: str | None = None
    group: str | None = None
    start: Literal["earliest", "latest", "committed"] = "earliest"
    max_partition_fetch_bytes: int = 1 << 20

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_servers(self.servers)
        if bool(self.topics) == (self.pattern is not None):
            msg = "give either topics (a list) or a pattern"
            raise ValueError(msg)
        if self.pattern is not None and self.group is None:
            msg = "pattern needs a group (the group assigns the matching partitions)"
            raise ValueError(msg)
        if self.start == "committed" and self.group is None:
            msg = "start 'committed' needs a group"
            raise ValueError(msg)
        if self.pattern is not None and self.stop_at_end:
            msg = "stop_at_end needs topics (a pattern has no end to reach)"
            raise ValueError(msg)


class KafkaSource(LogSource[KafkaSourceConfig]):
    """Records from Kafka topics; stream-safe, or finite with ``stop_at_end``.

    Each record's value holds one record or an array of records
    (``encoding``); a value that does not decode, or a tombstone (no value),
    goes to ``error`` with its ``topic:partition`` and offset, and is
    counted. Records keep their order within a partition.

    Delivery: exactly-once state under stream checkpoints. The checkpoint
    keeps, per partition, the offset of the last record handed on
    (``positions``); on restore, and whenever the group assigns a partition,
    the consumer seeks right after it. After each committed epoch the
    offsets it covers are committed to the ``group`` (for lag tools and for
    runs without a checkpoint: ``start: committed``). Without checkpoints:
    at least once with a group (each batch is committed once the graph took
    it).

    ``stop_at_end`` reads up to each partition's end offset at start; use it
    without a group, or with a group of one member (another member's
    partitions never reach their end here).

    Memory: one ``getmany`` of at most ``batch_size`` records at a time,
    only once the graph took the previous batch, plus the client's prefetch
    (about ``max_partition_fetch_bytes`` per partition).

    Example:
        ``{id: clicks, type: kafka.source, config: {servers:
        ["127.0.0.1:9092"], topics: [clicks], group: sessions}}``
    """

    def __init__(self, config: KafkaSourceConfig) -> None:
        super().__init__(config)
        self._consumer: AIOKafkaConsumer | None = None
        # stop_at_end: the partitions to finish and the high watermarks the
        # first fetch responses gave (see `caught_up`).
        self._end_tps: dict[str, Any] = {}
        self._hw_end: dict[str, int] = {}

    async def initialize(self, ctx: NodeContext) -> None:
        """Load aiokafka, then connect (see `LogSource.initialize`).

        Raises:
            flowstream.errors.ConnectorError: aiokafka is not installed.
        """
        try:
            from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError
        except ImportError as exc:
            error = missing_client("kafka.source", "aiokafka", "kafka")
            raise error from exc
        self.transient = (
            KafkaConnectionError,
            KafkaTimeoutError,
            OSError,
            TimeoutError,
        )
        await super().initialize(ctx)

    async def connect(self, positions: dict[str, Any] | None) -> None:
        """Start the consumer; seek each partition after its position."""
        from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition

        config = self.config
        consumer = self._consumer = AIOKafkaConsumer(
            bootstrap_servers=config.servers,
            group_id=config.group,
            enable_auto_commit=False,
            auto_offset_reset="latest" if config.start == "latest" else "earliest",
            max_partition_fetch_bytes=config.max_partition_fetch_bytes,
        )
        await consumer.start()
        source = self

        class Seek(ConsumerRebalanceListener):  # type: ignore[misc]
            async def on_partitions_revoked(self, revoked: Any) -> None:
                return None

            async def on_partitions_assigned(self, assigned: Any) -> None:
                await source._seek(list(assigned))

        if config.group is None:
            tps = []
            for topic in config.topics:
                partitions = await self._partitions(topic)
                tps += [TopicPartition(topic, p) for p in partitions]
            consumer.assign(tps)
            await self._seek(tps)
        elif config.pattern is not None:
            consumer.subscribe(pattern=config.pattern, listener=Seek())
        else:
            consumer.subscribe(topics=config.topics, listener=Seek())

    async def _seek(self, tps: list[Any]) -> None:
        consumer = self._consumer
        assert consumer is not None
        start = self.config.start
        positions = self._positions
        for tp in tps:
            key = partition_key(tp.topic, tp.partition)
            if key in positions:
                consumer.seek(tp, positions[key] + 1)
            elif start == "earliest":
                await consumer.seek_to_beginning(tp)
            elif start == "latest":
                await consumer.seek_to_end(tp)
            # committed: the group's offset (or auto_offset_reset) applies

    async def fetch(self, limit: int, timeout_s: float) -> list[Message]:
        """``getmany`` up to ``limit`` records."""
        consumer = self._consumer
        assert consumer is not None
        fetched = await consumer.getmany(
            timeout_ms=int(timeout_s * 1000), max_records=limit
        )
        messages: list[Message] = []
        for tp, records in fetched.items():
            key = partition_key(tp.topic, tp.partition)
            for record in records:
                value = record.value
                if value is None:
                    reason = f"tombstone (no value) at {key} offset {record.offset}"
                    messages.append((key, record.offset, BadRecord(reason, b"")))
                else:
                    messages.append((key, record.offset, value))
        if len(self._hw_end) < len(self._end_tps):
            # Only partitions assigned now have a high watermark: the group
            # may be rebalancing (a restart after kill -9 joins while the
            # dead member's session lasts), and asking for another partition
            # fails ("Partition is not assigned").
            assigned = consumer.assignment()
            for key, tp in self._end_tps.items():
                if key in self._hw_end or tp not in assigned:
                    continue
                highwater = consumer.highwater(tp)
                if highwater is not None:
                    self._hw_end[key] = highwater - 1
        return messages

    def caught_up(self, end: dict[str, Any]) -> bool:
        """Every partition handed on up to its end at start.

        The end is the larger of the end offset asked at start and the high
        watermark of the first fetch response for the partition: some
        Kafka-compatible brokers (Tansu) answer ListOffsets with the base
        offset of the last record batch + 1, not the log's end.
        """
        positions = self._positions
        for key in self._end_tps:
            highwater = self._hw_end.get(key)
            if highwater is None:
                return False
            target = max(end.get(key, -1), highwater)
            if target >= 0 and positions.get(key, -1) < target:
                return False
        return True

    async def acknowledge(self, positions: dict[str, Any]) -> None:
        """Commit the offsets after ``positions`` to the group (if any)."""
        consumer = self._consumer
        if consumer is None or self.config.group is None:
            return
        from aiokafka import TopicPartition

        assigned = consumer.assignment()
        offsets = {}
        for key, offset in positions.items():
            topic, _, partition = key.rpartition(":")
            tp = TopicPartition(topic, int(partition))
            if tp in assigned:
                offsets[tp] = offset + 1
        if offsets:
            await consumer.commit(offsets)

    async def end_positions(self) -> dict[str, Any]:
        """Each partition's last offset now (empty partitions left out)."""
        from aiokafka import TopicPartition

        consumer = self._consumer
        assert consumer is not None
        tps = []
        for topic in self.config.topics:
            partitions = await self._partitions(topic)
            tps += [TopicPartition(topic, p) for p in partitions]
        self._end_tps = {partition_key(tp.topic, tp.partition): tp for tp in tps}
        if not tps:
            return {}
        ends = await consumer.end_offsets(tps)
        starts = await consumer.beginning_offsets(tps)
        return {
            partition_key(tp.topic, tp.partition): end - 1
            for tp, end in ends.items()
            if end > starts[tp]
        }

    async def _partitions(self, topic: str) -> list[int]:
        consumer = self._consumer
        assert consumer is not None
        partitions = consumer.partitions_for_topic(topic)
        if partitions is None:
            await consumer.topics()  # refreshes the metadata
            partitions = consumer.partitions_for_topic(topic) or set()
        return sorted(partitions)

    async def disconnect(self) -> None:
        """Stop the consumer."""
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            try:
                await consumer.stop()
            except Exception as exc:  # stopping a dead connection
                if self._ctx is not None:
                    self._ctx.logger.debug("stopping the consumer: %s", exc)


kafka_source = node(
    "kafka.source", config=KafkaSourceConfig, batched=True, stops_itself=True
)(KafkaSource)
