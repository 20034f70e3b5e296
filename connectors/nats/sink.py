"""The ``nats.sink`` node: records published to JetStream, deduplicated by id.

`NatsSink` is a `connectors.base.LogSink` over nats-py: every record is
published with a ``Nats-Msg-Id`` that a replay reproduces, and each batch
waits for its publish acks.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import TYPE_CHECKING, Any

import msgspec

from flowstream import OutboundUrl, node

from ..base import LogSink, LogSinkConfig, missing_client
from .source import _check_servers

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.js import JetStreamContext

    from flowstream import NodeContext

__all__ = ["NatsSink", "NatsSinkConfig", "nats_sink"]


class NatsSinkConfig(
    LogSinkConfig, frozen=True, kw_only=True, forbid_unknown_fields=True
):
    """Config of ``nats.sink`` (plus `connectors.base.LogSinkConfig`'s).

    Attributes:
        servers: The NATS servers, ``nats://host:port``.
        subject: The subject to publish to (a stream must capture it).
        stream: The stream expected to take the messages (checked by the
            server on each publish); None takes any.
        id_field: The record field (dots reach into nested records) whose
            value is the message id. None numbers the records (see
            `NatsSink`).
        ack_timeout_s: How long a batch may wait for its publish acks before
            the sink reconnects and publishes it again.
    """

    subject: str
    servers: list[OutboundUrl] = msgspec.field(
        default_factory=lambda: ["nats://127.0.0.1:4222"]
    )
    stream: str | None = None
    id_field: str | None = None
    ack_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        _check_servers(self.servers)
        if not self.subject or any(c in self.subject for c in "*> "):
            msg = f"subject must be one concrete subject, got {self.subject!r}"
            raise ValueError(msg)
        if not self.ack_timeout_s > 0:
            msg = f"ack_timeout_s must be > 0, got {self.ack_timeout_s}"
            raise ValueError(msg)


class NatsSink(LogSink[NatsSinkConfig]):
    """Publish records to a JetStream stream, waiting for each batch's acks.

    Every message carries a ``Nats-Msg-Id``, and the stream drops a message
    whose id it saw within its ``duplicate_window`` (2 minutes by default).
    The id is the record's ``id_field``, or else ``<lineage>-<n>``: ``n``
    counts the records this sink published, and both are in its
    checkpointed state, so a restart that replays the records after a
    checkpoint numbers them as the lost run did. A new checkpoint store
    starts a new lineage (a random token), so its ids never meet an old
    run's.

    Delivery: exactly once in the stream under stream checkpoints, for a
    replay within the duplicate window (a deterministic graph replays the
    same records in the same order); a batch published again after a lost
    connection is deduplicated the same way. Records without ``id_field``
    go to ``error``. Backpressure: a batch is acknowledged by the stream
    before the next is taken.

    Example:
        ``{id: out, type: nats.sink, config: {subject: orders.done}}``
    """

    def __init__(self, config: NatsSinkConfig) -> None:
        super().__init__(config)
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._keys = tuple(config.id_field.split(".")) if config.id_field else ()
        self._lineage = ""
        self._published = 0
        self.duplicates = 0

    async def initialize(self, ctx: NodeContext) -> None:
        """Load nats-py, restore the numbering, connect.

        Raises:
            flowstream.errors.ConnectorError: nats-py is not installed.
        """
        try:
            import nats  # noqa: F401
            from nats.errors import ConnectionClosedError, NoServersError
        except ImportError as exc:
            error = missing_client("nats.sink", "nats", "nats")
            raise error from exc
        self.transient = (ConnectionClosedError, NoServersError, OSError, TimeoutError)
        state = ctx.state
        if "lineage" not in state:
            state["lineage"] = secrets.token_hex(8)
        self._lineage = state["lineage"]
        self._published = state.get("published", 0)
        await super().initialize(ctx)

    async def connect(self) -> None:
        """Connect (nats-py's own reconnecting is off: the base reconnects)."""
        import nats

        nc = self._nc = await nats.connect(
            servers=self.config.servers,
            allow_reconnect=False,
            connect_timeout=2,
            max_reconnect_attempts=0,
        )
        self._js = nc.jetstream()

    def encode(self, record: Any) -> bytes:
        """Refuse a record without its id (with ``id_field``) before encoding."""
        if self._keys:
            self._id(record)
        return super().encode(record)

    async def send(self, items: list[tuple[Any, bytes]]) -> None:
        """Publish a batch and wait for every ack (each id fixed before sending)."""
        js = self._js
        assert js is not None
        assert self._ctx is not None
        config = self.config
        first = self._published
        futures = []
        for i, (record, payload) in enumerate(items):
            msg_id = (
                str(self._id(record)) if self._keys else f"{self._lineage}-{first + i}"
            )
            futures.append(
                await js.publish_async(
                    config.subject,
                    payload,
                    stream=config.stream,
                    headers={"Nats-Msg-Id": msg_id},
                )
            )
        async with asyncio.timeout(config.ack_timeout_s):
            acks = await asyncio.gather(*futures)
        self.duplicates += sum(1 for ack in acks if ack.duplicate)
        # Counted once acknowledged: a batch sent again keeps its ids.
        self._published = first + len(items)
        self._ctx.state["published"] = self._published

    async def flush(self) -> None:
        """Nothing to wait for: `send` waited for the acks."""

    async def disconnect(self) -> None:
        """Close the connection."""
        nc, self._nc, self._js = self._nc, None, None
        if nc is not None:
            try:
                await nc.close()
            except Exception as exc:  # closing a dead connection
                if self._ctx is not None:
                    self._ctx.logger.debug("closing the connection: %s", exc)

    def _id(self, record: Any) -> Any:
        value = record
        for part in self._keys:
            if type(value) is not dict or part not in value:
                msg = f"no message id: the record has no field {self.config.id_field!r}"
                raise ValueError(msg)
            value = value[part]
        if type(value) not in (str, int):
            msg = f"message id {self.config.id_field!r} must be a string or an integer"
            raise ValueError(msg)
        return value


nats_sink = node("nats.sink", config=NatsSinkConfig, batched=True)(NatsSink)
