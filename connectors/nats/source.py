"""The ``nats.source`` node: records from a JetStream stream, exactly once.

`NatsSource` is a `connectors.base.LogSource` over nats-py: a durable pull
consumer (ack policy ``all``), the stream sequence of the last message
handed on in the checkpoint, an ack of the last message each committed
epoch covers, and redeliveries at or below that sequence dropped.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any, Literal

import msgspec

from flowstream import OutboundUrl, node

from ..base import LogSource, LogSourceConfig, Message, missing_client

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.js import JetStreamContext

    from flowstream import NodeContext

__all__ = ["NatsSource", "NatsSourceConfig", "nats_source"]


def _check_servers(servers: list[str]) -> None:
    if not servers:
        msg = "servers must name at least one server, e.g. nats://127.0.0.1:4222"
        raise ValueError(msg)
    for server in servers:
        if not server.startswith(("nats://", "tls://", "ws://", "wss://")):
            msg = f"server {server!r} must start with nats://, tls://, ws:// or wss://"
            raise ValueError(msg)


class NatsSourceConfig(
    LogSourceConfig, frozen=True, kw_only=True, forbid_unknown_fields=True
):
    """Config of ``nats.source`` (plus `connectors.base.LogSourceConfig`'s).

    Attributes:
        servers: The NATS servers, ``nats://host:port``.
        stream: The JetStream stream to read.
        subject: Read only the messages of this subject (wildcards allowed);
            None reads the whole stream.
        durable: The durable consumer's name (default: the node id).
        start: Where a consumer the run creates starts: ``earliest``,
            ``latest`` (messages from now on) or ``committed`` (same as
            ``earliest`` for a new consumer). An existing durable without a
            checkpoint resumes after its last acknowledged message.
        ack_wait_s: How long the server waits for an ack before it
            redelivers; longer than a checkpoint interval.
        max_ack_pending: Most messages delivered and not yet acknowledged;
            the server stops delivering past it (a bound on what a
            checkpoint interval may take in).
    """

    stream: str
    servers: list[OutboundUrl] = msgspec.field(
        default_factory=lambda: ["nats://127.0.0.1:4222"]
    )
    subject: str | None = None
    durable: str | None = None
    start: Literal["earliest", "latest", "committed"] = "earliest"
    ack_wait_s: float = 60.0
    max_ack_pending: int = 100_000

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_servers(self.servers)
        if not self.stream:
            msg = "stream must not be empty"
            raise ValueError(msg)
        if not self.ack_wait_s > 0:
            msg = f"ack_wait_s must be > 0, got {self.ack_wait_s}"
            raise ValueError(msg)
        if self.max_ack_pending < self.batch_size:
            msg = (
                f"max_ack_pending ({self.max_ack_pending}) must be at least "
                f"batch_size ({self.batch_size})"
            )
            raise ValueError(msg)


class NatsSource(LogSource[NatsSourceConfig]):
    """Records from a JetStream stream; stream-safe, or finite with ``stop_at_end``.

    Each message's payload holds one record or an array of records
    (``encoding``); a payload that does not decode goes to ``error`` with
    its stream sequence, and is counted.

    Delivery: exactly-once state under stream checkpoints. The checkpoint
    keeps the stream sequence of the last message handed on
    (``positions``); a restart (and every reconnect) recreates the durable
    consumer to start right after it, so nothing is skipped or repeated.
    After each committed epoch the last message it covers is acknowledged
    (ack policy ``all``), so the consumer's ack floor follows the
    checkpoints. A redelivered message at or below the last sequence handed
    on is dropped (counted in ``duplicates``). Without checkpoints: at least
    once (each batch is acknowledged once the graph took it).

    Memory: one fetch of at most ``batch_size`` messages at a time, and only
    once the graph took the previous batch; the server holds back past
    ``max_ack_pending`` unacknowledged messages.

    Example:
        ``{id: orders, type: nats.source, config: {servers:
        ["nats://127.0.0.1:4222"], stream: ORDERS, subject: "orders.>"}}``
    """

    def __init__(self, config: NatsSourceConfig) -> None:
        super().__init__(config)
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._sub: Any = None
        self._durable = config.durable or ""
        self._last = 0
        self._replies: deque[tuple[int, str]] = deque()
        self._empty = False
        self.duplicates = 0

    async def initialize(self, ctx: NodeContext) -> None:
        """Load nats-py, then connect (see `LogSource.initialize`).

        Raises:
            flowstream.errors.ConnectorError: nats-py is not installed.
        """
        try:
            import nats  # noqa: F401
            from nats.errors import ConnectionClosedError, NoServersError
        except ImportError as exc:
            error = missing_client("nats.source", "nats", "nats")
            raise error from exc
        self.transient = (
            ConnectionClosedError,
            NoServersError,
            OSError,
            TimeoutError,
        )
        self._durable = self.config.durable or ctx.node_id
        await super().initialize(ctx)

    async def connect(self, positions: dict[str, Any] | None) -> None:
        """Connect; (re)create the durable consumer to start after ``positions``."""
        import nats
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
        from nats.js.errors import NotFoundError

        config = self.config
        nc = self._nc = await nats.connect(
            servers=config.servers,
            allow_reconnect=False,
            connect_timeout=2,
            max_reconnect_attempts=0,
        )
        js = self._js = nc.jetstream()
        await js.stream_info(config.stream)  # fails clearly if it is missing
        after = positions.get(config.stream) if positions else None
        consumer = ConsumerConfig(
            durable_name=self._durable,
            ack_policy=AckPolicy.ALL,
            ack_wait=config.ack_wait_s,
            max_ack_pending=config.max_ack_pending,
            filter_subject=config.subject,
        )
        if after is not None:
            # Exactly where the checkpoint (or the last batch) left off.
            try:
                await js.delete_consumer(config.stream, self._durable)
            except NotFoundError:
                pass
            consumer.deliver_policy = DeliverPolicy.BY_START_SEQUENCE
            consumer.opt_start_seq = after + 1
            self._last = after
        else:
            try:
                await js.consumer_info(config.stream, self._durable)
            except NotFoundError:
                consumer.deliver_policy = (
                    DeliverPolicy.NEW if config.start == "latest" else DeliverPolicy.ALL
                )
        self._replies.clear()
        self._sub = await js.pull_subscribe(
            config.subject or "",
            durable=self._durable,
            stream=config.stream,
            config=consumer,
        )

    async def fetch(self, limit: int, timeout_s: float) -> list[Message]:
        """Pull up to ``limit`` messages; drop redeliveries already handed on."""
        from nats.errors import TimeoutError as FetchTimeout

        sub = self._sub
        assert sub is not None
        try:
            msgs = await sub.fetch(limit, timeout=timeout_s)
        except FetchTimeout:
            # A fetch can time out with messages left (a busy server, a short
            # poll): empty only if the consumer has none to deliver, and none
            # out with another client (a killed run's) awaiting redelivery.
            info = await sub.consumer_info()
            self._empty = info.num_pending == 0 and (info.num_ack_pending or 0) <= len(
                self._replies
            )
            return []
        self._empty = False
        stream = self.config.stream
        replies = self._replies
        messages: list[Message] = []
        last = self._last
        for msg in msgs:
            seq = msg.metadata.sequence.stream
            replies.append((seq, msg.reply))
            if seq <= last:
                self.duplicates += 1
                continue
            last = seq
            messages.append((stream, seq, msg.data))
        self._last = last
        if not messages and msgs:
            self._empty = False
        return messages

    async def acknowledge(self, positions: dict[str, Any]) -> None:
        """Ack (policy ``all``) the last delivered message up to the position."""
        nc = self._nc
        upto = positions.get(self.config.stream)
        if nc is None or upto is None:
            return
        replies = self._replies
        reply = None
        while replies and replies[0][0] <= upto:
            reply = replies.popleft()[1]
        if reply is not None:
            await nc.publish(reply, b"+ACK")
            await nc.flush()

    async def end_positions(self) -> dict[str, Any]:
        """The stream's last sequence now."""
        js = self._js
        assert js is not None
        info = await js.stream_info(self.config.stream)
        last = info.state.last_seq
        return {self.config.stream: last} if last else {}

    def caught_up(self, end: dict[str, Any]) -> bool:
        """Past the end, or nothing left for this consumer.

        (A filtered subject may have no message at the stream's last sequence.)
        """
        return self._empty or super().caught_up(end)

    async def disconnect(self) -> None:
        """Close the connection."""
        nc, self._nc, self._js, self._sub = self._nc, None, None, None
        if nc is not None:
            try:
                await nc.close()
            except Exception as exc:  # closing a dead connection
                if self._ctx is not None:
                    self._ctx.logger.debug("closing the connection: %s", exc)


nats_source = node(
    "nats.source", config=NatsSourceConfig, batched=True, stops_itself=True
)(NatsSource)
