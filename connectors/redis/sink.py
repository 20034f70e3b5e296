"""The ``redis.sink`` node: records appended to a stream (XADD) or kept by key.

`RedisSink` is a `connectors.base.LogSink` over redis-py's asyncio client: one
pipeline per batch. In ``xadd`` mode under checkpoints it notes the stream's
last id at each barrier and deletes what a lost epoch appended after it; in
``hset``/``set`` mode replays rewrite the same keys.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from flowstream import OutboundUrl, node

from ..base import LogSink, LogSinkConfig, missing_client

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from flowstream import NodeContext

__all__ = ["RedisSink", "RedisSinkConfig", "redis_sink"]

DELETE_PAGE = 1000


class RedisSinkConfig(
    LogSinkConfig, frozen=True, kw_only=True, forbid_unknown_fields=True
):
    """Config of ``redis.sink`` (plus `connectors.base.LogSinkConfig`'s).

    Attributes:
        url: The server, ``redis://host:port/db``.
        mode: ``xadd`` appends each record to ``stream``; ``hset`` writes
            it to field ``field`` of the hash ``key_prefix + key``; ``set``
            sets the string key ``key_prefix + key``.
        stream: The stream (``xadd``).
        field: The entry (or hash) field holding the encoded record.
        key_field: The record field whose value names the key (``hset``,
            ``set``); dots reach into nested records (``user.id``).
        key_prefix: Put before every key.
        maxlen: ``xadd`` only: trim the stream to about this many entries
            (``MAXLEN ~``). Trimming deletes the oldest entries whether
            anyone read them or not, so it is never on unless set.
    """

    url: OutboundUrl = "redis://127.0.0.1:6379"
    mode: Literal["xadd", "hset", "set"] = "xadd"
    stream: str | None = None
    field: str = "data"
    key_field: str | None = None
    key_prefix: str = ""
    maxlen: int | None = None

    def __post_init__(self) -> None:
        if not self.url.startswith(("redis://", "rediss://", "unix://")):
            msg = (
                f"url must start with redis://, rediss:// or unix://, got {self.url!r}"
            )
            raise ValueError(msg)
        if self.mode == "xadd":
            if not self.stream:
                msg = "mode 'xadd' needs a stream"
                raise ValueError(msg)
            if self.key_field is not None:
                msg = "key_field is for modes 'hset' and 'set'"
                raise ValueError(msg)
        else:
            if not self.key_field:
                msg = f"mode {self.mode!r} needs a key_field (the record's key)"
                raise ValueError(msg)
            if self.maxlen is not None or self.stream is not None:
                msg = "stream and maxlen are for mode 'xadd'"
                raise ValueError(msg)
        if self.maxlen is not None and self.maxlen < 1:
            msg = f"maxlen must be >= 1, got {self.maxlen}"
            raise ValueError(msg)


class RedisSink(LogSink[RedisSinkConfig]):
    """Write records to Redis: a stream (XADD) or one key per record.

    Each batch goes in one pipeline and the sink waits for its replies (so
    a batch is acknowledged before the next is taken: backpressure). A
    record that cannot be encoded, or has no ``key_field``, goes to
    ``error``.

    Delivery under stream checkpoints: exactly once. ``xadd``: each
    checkpoint keeps the stream's last entry id (``last_id``); a restart
    first deletes (XDEL) the entries after it, written by an epoch that
    never committed and about to be replayed. This assumes the sink is the
    stream's only writer; readers may see those entries before they are
    deleted. ``hset``/``set``: a replayed record rewrites the same key
    (idempotent, even without checkpoints). Without checkpoints ``xadd`` is
    at least once (a batch cut by a lost connection is sent again).

    Example:
        ``{id: out, type: redis.sink, config: {stream: results}}``
    """

    def __init__(self, config: RedisSinkConfig) -> None:
        super().__init__(config)
        self._client: Redis | None = None
        self._keys = tuple(config.key_field.split(".")) if config.key_field else ()

    async def initialize(self, ctx: NodeContext) -> None:
        """Load redis-py, connect, and roll the stream back to the checkpoint.

        Raises:
            flowstream.errors.ConnectorError: redis-py is not installed.
        """
        try:
            import redis.asyncio  # noqa: F401
            from redis.exceptions import ConnectionError, TimeoutError
        except ImportError as exc:
            error = missing_client("redis.sink", "redis", "redis")
            raise error from exc
        self.transient = (ConnectionError, TimeoutError, OSError)
        await super().initialize(ctx)
        if ctx.checkpointing and self.config.mode == "xadd":
            last = ctx.state.get("last_id")
            if last is not None:
                deleted = await self._retrying(self._roll_back, last)
                if deleted:
                    ctx.logger.info(
                        "stream %r: deleted %d entries written after checkpoint %d",
                        self.config.stream,
                        deleted,
                        ctx.restored_epoch,
                    )

            async def note_last_id(epoch: int) -> None:
                ctx.state["last_id"] = await self._retrying(self._last_id)

            ctx.on_barrier(note_last_id)

    async def connect(self) -> None:
        """Connect and check the server answers."""
        from redis.asyncio import Redis

        client = self._client = Redis.from_url(self.config.url, protocol=2)
        await client.ping()

    async def send(self, items: list[tuple[Any, bytes]]) -> None:
        """One pipeline per batch; waits for every reply."""
        client = self._client
        assert client is not None
        config = self.config
        field = config.field
        pipe = client.pipeline(transaction=False)
        if config.mode == "xadd":
            assert config.stream is not None
            for _, payload in items:
                pipe.xadd(
                    config.stream,
                    {field: payload},
                    maxlen=config.maxlen,
                    approximate=True,
                )
        else:
            prefix = config.key_prefix
            for record, payload in items:
                key = prefix + str(self._key(record))
                if config.mode == "hset":
                    pipe.hset(key, field, payload)
                else:
                    pipe.set(key, payload)
        await pipe.execute()

    def encode(self, record: Any) -> bytes:
        """Refuse a record without its key (keyed modes) before encoding it."""
        if self._keys:
            self._key(record)
        return super().encode(record)

    async def flush(self) -> None:
        """Nothing to wait for: `send` waited for the replies."""

    async def disconnect(self) -> None:
        """Close the client."""
        client, self._client = self._client, None
        if client is not None:
            try:
                await client.aclose()
            except Exception as exc:  # closing a dead connection
                if self._ctx is not None:
                    self._ctx.logger.debug("closing the client: %s", exc)

    def _key(self, record: Any) -> Any:
        value = record
        for part in self._keys:
            if type(value) is not dict or part not in value:
                msg = f"no key: the record has no field {self.config.key_field!r}"
                raise ValueError(msg)
            value = value[part]
        if type(value) not in (str, int, bytes):
            msg = f"key {self.config.key_field!r} must be a string or an integer"
            raise ValueError(msg)
        return value.decode() if type(value) is bytes else value

    async def _last_id(self) -> str:
        client = self._client
        assert client is not None
        assert self.config.stream is not None
        last: Any = await client.xrevrange(self.config.stream, count=1)
        return last[0][0].decode() if last else "0-0"

    async def _roll_back(self, last: str) -> int:
        """XDEL the entries after ``last``; return how many."""
        client = self._client
        assert client is not None
        stream = self.config.stream
        assert stream is not None
        deleted = 0
        while True:
            entries: Any = await client.xrange(
                stream, min=f"({last}", count=DELETE_PAGE
            )
            if not entries:
                return deleted
            deleted += await client.xdel(stream, *[e[0] for e in entries])


redis_sink = node("redis.sink", config=RedisSinkConfig, batched=True)(RedisSink)
