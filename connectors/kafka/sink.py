"""The ``kafka.sink`` node: records produced to a Kafka topic.

`KafkaSink` is a `connectors.base.LogSink` over aiokafka's producer: key and
headers taken from record fields, the idempotent producer by default, and a
flush (every send acknowledged) at each checkpoint barrier.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Literal

import msgspec

from flowstream import Expr, OutboundUrl, expr_function, node
from flowstream.errors import ConnectorError

from ..base import LogSink, LogSinkConfig, missing_client
from .source import _check_servers

if TYPE_CHECKING:
    from collections.abc import Callable

    from aiokafka import AIOKafkaProducer

    from flowstream import NodeContext

__all__ = ["KafkaSink", "KafkaSinkConfig", "kafka_sink"]


class KafkaSinkConfig(
    LogSinkConfig, frozen=True, kw_only=True, forbid_unknown_fields=True
):
    """Config of ``kafka.sink`` (plus `connectors.base.LogSinkConfig`'s).

    Attributes:
        servers: Bootstrap brokers, ``host:port``.
        topic: The topic to produce to.
        key: A CEL expression over the record ``x`` whose value is the
            message key (strings and integers as UTF-8 text, bytes as they
            are); a record it fails on goes to ``error``.
        key_field: The same from a record field (dots reach into nested
            records), instead of ``key``; neither sends no key (the producer
            spreads records over partitions).
        headers: Header name -> CEL expression over the record ``x``: each
            record's header values, as UTF-8 text (an expression that fails
            for a record, a missing field say, sends no header).
        idempotent: The idempotent producer (no duplicates from the
            producer's own retries); the broker must support it.
        acks: ``all`` (every in-sync replica) or ``1`` (the leader).
        linger_ms: How long the producer may wait to fill a batch.
        compression: ``none``, ``gzip``, ``snappy``, ``lz4`` or ``zstd``
            (the last three need their Python packages).
    """

    topic: str
    servers: list[OutboundUrl] = msgspec.field(
        default_factory=lambda: ["127.0.0.1:9092"]
    )
    key: Expr | None = None
    key_field: str | None = None
    headers: dict[str, Expr] = msgspec.field(default_factory=dict)
    idempotent: bool = True
    acks: Literal["all", "1"] = "all"
    linger_ms: int = 5
    compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = "none"

    def __post_init__(self) -> None:
        _check_servers(self.servers)
        if not self.topic:
            msg = "topic must not be empty"
            raise ValueError(msg)
        if self.linger_ms < 0:
            msg = f"linger_ms must be >= 0, got {self.linger_ms}"
            raise ValueError(msg)
        if self.key is not None and self.key_field is not None:
            msg = "key and key_field: give one of them"
            raise ValueError(msg)


def _path(field: str) -> tuple[str, ...]:
    return tuple(field.split("."))


_MISSING: Any = object()


def _field(field: str) -> Callable[[Any], Any]:
    path = _path(field)
    return lambda record: _get(record, path)


def _cel(source: str) -> Callable[[Any], Any]:
    evaluate = expr_function(source)

    def get(record: Any) -> Any:
        try:
            return evaluate(record)
        except Exception:  # a failing expression gives no value for this record
            return _MISSING

    return get


def _get(record: Any, path: tuple[str, ...]) -> Any:
    value = record
    for part in path:
        if type(value) is not dict:
            return _MISSING
        value = value.get(part, _MISSING)
        if value is _MISSING:
            return _MISSING
    return value


def _as_bytes(value: Any, what: str) -> bytes:
    if type(value) is bytes:
        return value
    if type(value) in (str, int):
        return str(value).encode()
    msg = f"{what} must be a string, an integer or bytes, got {type(value).__name__}"
    raise ValueError(msg)


class KafkaSink(LogSink[KafkaSinkConfig]):
    """Produce records to a Kafka topic; each batch waits for its acks.

    The value is the encoded record (``encoding``); the key and headers
    come from record fields. A record that cannot be encoded, or lacks its
    ``key_field``, goes to ``error``.

    Delivery: at least once. Each batch is acknowledged by the broker
    before the next is taken (backpressure), and everything is acknowledged
    before a checkpoint barrier passes, so a committed epoch never needs a
    record again; but the records of an epoch that did not commit are
    produced again by the replay after a restart (Kafka keeps no way to
    take them back without transactions). The idempotent producer removes
    the duplicates of its own retries within a run. Transactional
    exactly-once is not offered yet: the broker the tests run against
    (Tansu) supports neither transactions nor the idempotent producer.

    Example:
        ``{id: out, type: kafka.sink, config: {topic: totals, key_field:
        user}}``
    """

    def __init__(self, config: KafkaSinkConfig) -> None:
        super().__init__(config)
        self._producer: AIOKafkaProducer | None = None
        self._key: Callable[[Any], Any] | None = None
        self._key_text = ""
        if config.key is not None:
            self._key, self._key_text = _cel(config.key), f"key {config.key!r}"
        elif config.key_field is not None:
            self._key = _field(config.key_field)
            self._key_text = f"field {config.key_field!r}"
        self._headers = [(name, _cel(e)) for name, e in config.headers.items()]

    async def initialize(self, ctx: NodeContext) -> None:
        """Load aiokafka, then connect (see `LogSink.initialize`).

        Raises:
            flowstream.errors.ConnectorError: aiokafka is not installed, or
                the broker refuses the idempotent producer.
        """
        try:
            from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError
        except ImportError as exc:
            error = missing_client("kafka.sink", "aiokafka", "kafka")
            raise error from exc
        self.transient = (
            KafkaConnectionError,
            KafkaTimeoutError,
            OSError,
            TimeoutError,
        )
        await super().initialize(ctx)

    async def connect(self) -> None:
        """Start the producer."""
        from aiokafka import AIOKafkaProducer
        from aiokafka.errors import KafkaError

        config = self.config
        producer = self._producer = AIOKafkaProducer(
            bootstrap_servers=config.servers,
            enable_idempotence=config.idempotent,
            acks="all" if config.acks == "all" else 1,
            linger_ms=config.linger_ms,
            compression_type=None
            if config.compression == "none"
            else config.compression,
        )
        try:
            await producer.start()
        except KafkaError as exc:
            if isinstance(exc, self.transient) or not config.idempotent:
                raise
            msg = (
                f"the broker refused an idempotent producer ({exc!r}): it may "
                "not support InitProducerId; set idempotent: false"
            )
            raise ConnectorError(msg) from exc

    def encode(self, record: Any) -> bytes:
        """Refuse a record without a usable key or header before encoding it."""
        if self._key is not None:
            key = self._key(record)
            if key is _MISSING:
                msg = f"no key: the {self._key_text} gives none for this record"
                raise ValueError(msg)
            _as_bytes(key, "the key")
        for name, get in self._headers:
            value = get(record)
            if value is not _MISSING:
                _as_bytes(value, f"header {name!r}")
        return super().encode(record)

    async def send(self, items: list[tuple[Any, bytes]]) -> None:
        """Produce a batch and wait until the broker acknowledged all of it."""
        producer = self._producer
        assert producer is not None
        topic = self.config.topic
        key_of = self._key
        header_getters = self._headers
        futures = []
        for record, payload in items:
            key = None
            if key_of is not None:
                key = _as_bytes(key_of(record), "the key")
            headers = None
            if header_getters:
                headers = []
                for name, get in header_getters:
                    value = get(record)
                    if value is not _MISSING:
                        headers.append((name, _as_bytes(value, f"header {name!r}")))
            futures.append(
                await producer.send(topic, payload, key=key, headers=headers)
            )
        await asyncio.gather(*futures)

    async def flush(self) -> None:
        """Wait for everything sent (`send` already did, batch by batch)."""
        if self._producer is not None:
            await self._producer.flush()

    async def disconnect(self) -> None:
        """Stop the producer."""
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                await producer.stop()
            except Exception as exc:  # stopping a dead connection
                if self._ctx is not None:
                    self._ctx.logger.debug("stopping the producer: %s", exc)


kafka_sink = node("kafka.sink", config=KafkaSinkConfig, batched=True)(KafkaSink)
