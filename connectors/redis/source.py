"""The ``redis.source`` node: records from a Redis stream, exactly once.

`RedisSource` is a `connectors.base.LogSource` over redis-py's asyncio client:
XREAD from the checkpointed entry id, or with a ``group`` XREADGROUP (this
consumer's pending entries after the checkpointed id first, then new ones)
and XACK once an epoch is committed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from flowstream import OutboundUrl, node

from .._records import BadRecord
from ..base import LogSource, LogSourceConfig, Message, missing_client

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from flowstream import NodeContext

__all__ = ["RedisSource", "RedisSourceConfig", "redis_source"]


class RedisSourceConfig(
    LogSourceConfig, frozen=True, kw_only=True, forbid_unknown_fields=True
):
    """Config of ``redis.source`` (plus `connectors.base.LogSourceConfig`'s).

    Attributes:
        url: The server, ``redis://host:port/db`` (``rediss://`` for TLS).
        stream: The stream key to read.
        field: The entry field holding the encoded record.
        group: A consumer group: entries are read with XREADGROUP and
            acknowledged (XACK) after each committed epoch. None reads with
            XREAD and acknowledges nothing.
        consumer: This reader's name in the group (default: the node id).
        start: Where a run with no checkpoint starts: ``earliest`` (the
            stream's first entry), ``latest`` (entries added from now on) or,
            with a group, ``committed`` (after the group's last delivered
            entry, plus this consumer's pending ones). A group created by the
            run starts at ``earliest`` or ``latest``.
    """

    stream: str
    url: OutboundUrl = "redis://127.0.0.1:6379"
    field: str = "data"
    group: str | None = None
    consumer: str | None = None
    start: Literal["earliest", "latest", "committed"] = "earliest"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.stream:
            msg = "stream must not be empty"
            raise ValueError(msg)
        if not self.url.startswith(("redis://", "rediss://", "unix://")):
            msg = (
                f"url must start with redis://, rediss:// or unix://, got {self.url!r}"
            )
            raise ValueError(msg)
        if self.start == "committed" and self.group is None:
            msg = "start 'committed' needs a group (a plain XREAD has no position)"
            raise ValueError(msg)
        if self.consumer is not None and self.group is None:
            msg = "consumer is for a group; set group too"
            raise ValueError(msg)


def entry_id(text: str) -> tuple[int, int]:
    """A stream entry id ``ms-seq`` as a comparable pair."""
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


class RedisSource(LogSource[RedisSourceConfig]):
    """Records from a Redis stream; stream-safe, or finite with ``stop_at_end``.

    Each entry's ``field`` holds one record or an array of records
    (``encoding``); an entry without it, or whose payload does not decode,
    goes to ``error`` with its id, and is counted.

    Delivery: exactly-once state under stream checkpoints. The checkpoint
    keeps the id of the last entry handed on (``positions``); a restart
    reads on after it, so every entry counts once downstream. With a
    ``group``, a restart first re-reads this consumer's pending entries
    after that id (read by the lost run but never acknowledged), and
    entries up to it that are still pending are acknowledged at start.
    Without checkpoints: at least once with a group (each batch is
    acknowledged once the graph took it), otherwise from ``start`` each run.

    Reconnects with the ``reconnect`` backoff, at the last id handed on.
    Memory: one fetch of at most ``batch_size`` entries at a time, and only
    once the graph took the previous batch.

    Example:
        ``{id: orders, type: redis.source, config: {url:
        "redis://127.0.0.1:6379", stream: orders, group: billing}}``
    """

    def __init__(self, config: RedisSourceConfig) -> None:
        super().__init__(config)
        self._client: Redis | None = None
        self._after = "0-0"
        self._history = False
        self._delivered: list[str] = []
        self._consumer = config.consumer or ""

    async def initialize(self, ctx: NodeContext) -> None:
        """Load redis-py, then connect (see `LogSource.initialize`).

        Raises:
            flowstream.errors.ConnectorError: redis-py is not installed.
        """
        try:
            import redis.asyncio  # noqa: F401
            from redis.exceptions import ConnectionError, TimeoutError
        except ImportError as exc:
            error = missing_client("redis.source", "redis", "redis")
            raise error from exc
        self.transient = (ConnectionError, TimeoutError, OSError)
        self._consumer = self.config.consumer or ctx.node_id
        await super().initialize(ctx)

    async def connect(self, positions: dict[str, Any] | None) -> None:
        """Connect; create the group if needed; find where to read from."""
        from redis.asyncio import Redis
        from redis.exceptions import ResponseError

        config = self.config
        client = self._client = Redis.from_url(config.url, protocol=2)
        await client.ping()
        after = positions.get(config.stream) if positions else None
        if config.group is None:
            if after is not None:
                self._after = after
            elif config.start == "latest":
                self._after = await self._last_id(client) or "0-0"
            else:
                self._after = "0-0"
            return
        try:
            await client.xgroup_create(
                config.stream,
                config.group,
                id="$" if config.start == "latest" else "0",
                mkstream=True,
            )
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        # This consumer's pending entries after the position come first: the
        # lost run read them but its checkpoint does not cover them.
        self._after = after or "0-0"
        self._history = True
        self._delivered = []
        if after is not None:
            await self._ack_pending_upto(client, after)

    async def fetch(self, limit: int, timeout_s: float) -> list[Message]:
        """XREAD (or XREADGROUP) up to ``limit`` entries after the last one."""
        client = self._client
        assert client is not None
        config = self.config
        stream = config.stream
        reply: Any
        if config.group is None:
            reply = await client.xread(
                {stream: self._after}, count=limit, block=int(timeout_s * 1000)
            )
        elif self._history:
            reply = await client.xreadgroup(
                config.group, self._consumer, {stream: self._after}, count=limit
            )
            if not reply or not reply[0][1]:
                self._history = False
                return []
        else:
            reply = await client.xreadgroup(
                config.group,
                self._consumer,
                {stream: ">"},
                count=limit,
                block=int(timeout_s * 1000),
            )
        if not reply:
            return []
        field = config.field.encode()
        messages: list[Message] = []
        delivered = self._delivered if config.group is not None else None
        for raw_id, fields in reply[0][1]:
            eid = raw_id.decode()
            if delivered is not None:
                delivered.append(eid)
            payload = fields.get(field) if fields else None
            if payload is None:
                reason = (
                    f"entry {eid} has no field {config.field!r}"
                    if fields
                    else f"entry {eid} was deleted while pending"
                )
                messages.append((stream, eid, BadRecord(reason, b"")))
            else:
                messages.append((stream, eid, payload))
        self._after = messages[-1][1]
        return messages

    async def acknowledge(self, positions: dict[str, Any]) -> None:
        """XACK the delivered entries up to the position (groups only)."""
        client = self._client
        group = self.config.group
        upto = positions.get(self.config.stream)
        if group is None or client is None or upto is None:
            return
        limit = entry_id(upto)
        delivered = self._delivered
        n = 0
        while n < len(delivered) and entry_id(delivered[n]) <= limit:
            n += 1
        if n:
            await client.xack(self.config.stream, group, *delivered[:n])
            del delivered[:n]

    async def end_positions(self) -> dict[str, Any]:
        """The stream's last entry id now (none for an empty stream)."""
        client = self._client
        assert client is not None
        last = await self._last_id(client)
        return {} if last is None else {self.config.stream: last}

    def reached(self, position: Any, end: Any) -> bool:
        """Compare entry ids numerically."""
        return entry_id(position) >= entry_id(end)

    async def disconnect(self) -> None:
        """Close the client."""
        client, self._client = self._client, None
        if client is not None:
            try:
                await client.aclose()
            except Exception as exc:  # closing a dead connection
                if self._ctx is not None:
                    self._ctx.logger.debug("closing the client: %s", exc)

    async def _last_id(self, client: Redis) -> str | None:
        last: Any = await client.xrevrange(self.config.stream, count=1)
        return last[0][0].decode() if last else None

    async def _ack_pending_upto(self, client: Redis, upto: str) -> None:
        """Acknowledge this consumer's entries the checkpoint covers."""
        config = self.config
        assert config.group is not None
        while True:
            pending: Any = await client.xpending_range(
                config.stream,
                config.group,
                min="-",
                max=upto,
                count=1000,
                consumername=self._consumer,
            )
            if not pending:
                return
            ids = [p["message_id"] for p in pending]
            await client.xack(config.stream, config.group, *ids)
            if len(pending) < 1000:
                return


redis_source = node(
    "redis.source", config=RedisSourceConfig, batched=True, stops_itself=True
)(RedisSource)
