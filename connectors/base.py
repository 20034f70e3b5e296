"""Bases for connector authors: a source that reads a log, a sink that writes one.

What every broker connector must get right lives here once, so that a new one
only says how to talk to its broker:

`LogSource` (subclass it, implement ``connect``/``fetch``/``acknowledge``/
``end_positions``/``disconnect``):

* **Offsets in checkpointed state.** ``ctx.state["positions"]`` maps each
  partition (a Kafka partition, a Redis stream, a JetStream stream) to the
  position of the last message handed on. It is updated just before each
  batch leaves, with no await in between, so a snapshot taken at any point
  the source waits records exactly what it handed on.
* **Seeking on restore.** ``connect(positions)`` gets the restored positions
  (None on a fresh start, where ``start`` applies) and must resume after
  them; reconnecting passes the current ones, so a reconnect neither loses
  nor repeats a message.
* **Acknowledging after commit.** With checkpoints, ``acknowledge`` gets the
  positions an epoch is sure to cover once it commits (those of the previous
  commit: a source cannot see when its snapshot is taken, but it is taken
  after the previous commit), and the final positions after a drain. Without
  checkpoints, each batch is acknowledged once the graph took it and the
  source asks for the next (at least once).
* **Stopping by itself.** It ends when the run is asked to stop (after at
  most one ``poll_ms``), or with ``stop_at_end`` once it has handed on
  everything up to the log's end as it was at start.
* **Reconnecting.** A `transient` error (the connection dropped, the broker
  restarted) disconnects, waits out the shared `Reconnect` backoff and
  connects again at the current positions; ``max_attempts`` failures in a
  row fail the node with `flowstream.errors.ConnectError`.
* **Bounded prefetch.** It fetches at most ``batch_size`` messages, and only
  once the graph has taken the previous batch: a full pipeline stops the
  fetching (the client library's own buffer is bounded by its config).
* **Dead letters.** Payloads are decoded by `connectors._records.RecordDecoder`
  (``encoding``, ``schema``); a bad one goes to ``error`` as ``{reason, raw,
  partition, position}`` and is counted, and its position still counts as
  handed on.
* **Metrics.** `statistics` (records, bad records, fetches, reconnects,
  acknowledged) and node events ``connected``, ``reconnected``,
  ``disconnected``, ``caught_up``.

`LogSink` (implement ``connect``/``send``/``flush``/``disconnect``): encodes
records (``encoding``), sends each batch, flushes (waits for the broker's
acknowledgements) at each checkpoint barrier and at the end, reconnects on
`transient` errors and resends the batch, and dead-letters records it cannot
encode.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

import msgspec

from flowstream.errors import ConnectError, ConnectorError

from ._reconnect import Reconnect, pause
from ._records import BadRecord, Encoding, RecordDecoder, record_type

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from flowstream import NodeContext

__all__ = [
    "LogSink",
    "LogSinkConfig",
    "LogSinkStatistics",
    "LogSource",
    "LogSourceConfig",
    "LogSourceStatistics",
    "Message",
    "BadRecord",
    "missing_client",
]

SinkEncoding = Literal["json", "msgpack", "raw"]


def missing_client(node_type: str, module: str, extra: str) -> ConnectorError:
    """The error for a family whose client library is not installed."""
    msg = (
        f"{node_type} needs the {module!r} client library, which is not "
        f"installed: pip install 'flowstream[{extra}]'"
    )
    return ConnectorError(msg)


class LogSourceConfig(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True
):
    """What every log source takes (broker configs extend it).

    Attributes:
        encoding: How a message's payload is decoded: ``json``, ``msgpack``
            or ``raw`` (the payload bytes are the record).
        schema: Field name -> type name: records that break it go to
            ``error`` (see `connectors._records`).
        max_frame_bytes: Larger payloads go to ``error`` whole.
        stop_at_end: End once everything up to the log's end as it was at
            start has been handed on (so a DAG run can drain a topic).
        batch_size: Most messages fetched at once; one fetch is in flight
            only after the graph took the previous batch (bounded prefetch).
        poll_ms: How long one fetch waits for new messages (a stop request
            is seen within it).
        reconnect: The backoff between connection attempts.
    """

    encoding: Encoding = "json"
    schema: dict[str, str] | None = None
    max_frame_bytes: int = 1 << 20
    stop_at_end: bool = False
    batch_size: int = 512
    poll_ms: int = 200
    reconnect: Reconnect = msgspec.field(default_factory=Reconnect)

    def __post_init__(self) -> None:
        if self.schema is not None:
            record_type(self.schema)
        for name in ("batch_size", "poll_ms", "max_frame_bytes"):
            value = getattr(self, name)
            if value < 1:
                msg = f"{name} must be >= 1, got {value}"
                raise ValueError(msg)


class LogSourceStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """A log source's counters (`LogSource.statistics`)."""

    records: int
    bad_records: int
    fetches: int
    reconnects: int
    acknowledged: int
    peak_batch: int
    """The most messages one fetch returned (never above ``batch_size``)."""


Message = tuple[str, Any, "bytes | BadRecord"]
"""``(partition, position, payload)``: one message as ``fetch`` returns it.

A payload the broker handed over malformed (a Redis entry without the data
field, say) is a `BadRecord`, and goes to ``error`` as it is."""

C = TypeVar("C", bound=LogSourceConfig)


class LogSource(Generic[C]):
    """Base of a source that reads a partitioned log with positions.

    Subclasses implement the broker methods below and set ``transient``;
    the base drives them (see the module docstring for the guarantees).
    Positions must be msgspec-encodable (ints, strings) and ``fetch`` must
    return each partition's messages in log order.
    """

    def __init__(self, config: C) -> None:
        self.config = config
        self.transient: tuple[type[BaseException], ...] = (OSError, TimeoutError)
        """Errors that mean "reconnect and go on" rather than "fail the node"."""
        self._decoder = RecordDecoder(
            config.encoding, config.schema, config.max_frame_bytes
        )
        self._ctx: NodeContext | None = None
        self._positions: dict[str, Any] = {}
        self._ack_floor: dict[str, Any] | None = None
        self._finished = False
        self._connected = False
        self._records = self._bad = self._fetches = 0
        self._reconnects = self._acknowledged = self._peak = 0

    # --- what a broker implements -------------------------------------------------

    async def connect(self, positions: dict[str, Any] | None) -> None:
        """Connect and seek to just after ``positions`` (None: ``start``)."""
        raise NotImplementedError

    async def fetch(self, limit: int, timeout_s: float) -> list[Message]:
        """Return up to ``limit`` messages, waiting at most ``timeout_s``."""
        raise NotImplementedError

    async def acknowledge(self, positions: dict[str, Any]) -> None:
        """Tell the broker everything up to ``positions`` is processed."""
        raise NotImplementedError

    async def end_positions(self) -> dict[str, Any]:
        """The log's last position per partition now (for ``stop_at_end``)."""
        raise NotImplementedError

    def reached(self, position: Any, end: Any) -> bool:
        """Whether ``position`` is at or past ``end`` (plain ``>=`` here)."""
        return bool(position >= end)

    async def disconnect(self) -> None:
        """Close the connection; must not raise."""
        raise NotImplementedError

    # --- the node -----------------------------------------------------------------

    async def initialize(self, ctx: NodeContext) -> None:
        """Read the restored positions and connect there.

        Raises:
            flowstream.errors.ConnectError: The broker cannot be reached
                within ``reconnect.max_attempts``.
        """
        self._ctx = ctx
        restored = ctx.state.get("positions")
        self._positions = dict(restored) if restored else {}
        if ctx.checkpointing:
            ctx.on_commit(self._committed)
        await self._connect(dict(restored) if restored else None)

    async def execute(self) -> AsyncIterator[list[Any]]:
        """Fetch, decode and hand on batches until stopped or caught up."""
        ctx = self._ctx
        assert ctx is not None
        config = self.config
        state = ctx.state
        positions = self._positions
        limit, timeout_s = config.batch_size, config.poll_ms / 1000
        end: dict[str, Any] | None = None
        if config.stop_at_end:
            end = await self._retrying(self.end_positions)
        unacked = False
        decode = self._decoder.decode
        while not ctx.stopping.is_set():
            if end is not None and self.caught_up(end):
                ctx.event("caught_up", {"positions": dict(positions)})
                break
            if unacked and not ctx.checkpointing:
                await self._retrying(self.acknowledge, dict(positions))
                self._acknowledged += 1
                unacked = False
            messages = await self._retrying(self.fetch, limit, timeout_s)
            self._fetches += 1
            if not messages:
                continue
            self._peak = max(self._peak, len(messages))
            batch: list[Any] = []
            for partition, position, payload in messages:
                if type(payload) is bytes:
                    good, bad = decode(payload)
                else:
                    good, bad = [], [payload]
                if good:
                    batch += good
                for record in bad:
                    self._bad += 1
                    item = record.as_item()
                    item["partition"] = partition
                    item["position"] = position
                    ctx.dead_letter(item, record.reason)
                positions[partition] = position
            self._records += len(batch)
            # No await from here to the yield: the state is what was handed on.
            state["positions"] = dict(positions)
            unacked = True
            yield batch
        self._finished = True
        if unacked and not ctx.checkpointing:
            await self._retrying(self.acknowledge, dict(positions))
            self._acknowledged += 1

    async def shutdown(self) -> None:
        """Disconnect."""
        await self.disconnect()

    def statistics(self) -> LogSourceStatistics:
        """Return the node's counters now."""
        return LogSourceStatistics(
            records=self._records,
            bad_records=self._bad,
            fetches=self._fetches,
            reconnects=self._reconnects,
            acknowledged=self._acknowledged,
            peak_batch=self._peak,
        )

    # --- internals ----------------------------------------------------------------

    def caught_up(self, end: dict[str, Any]) -> bool:
        """Whether every partition of ``end`` was handed on up to its position."""
        positions = self._positions
        return all(
            p in positions and self.reached(positions[p], e) for p, e in end.items()
        )

    async def _committed(self, epoch: int) -> None:
        """Acknowledge what epoch ``epoch`` is sure to cover (see the module)."""
        if self._finished:
            floor: dict[str, Any] | None = dict(self._positions)
        else:
            floor, self._ack_floor = self._ack_floor, dict(self._positions)
        if floor:
            try:
                await self.acknowledge(floor)
            except self.transient as exc:
                assert self._ctx is not None
                self._ctx.logger.warning(
                    "cannot acknowledge epoch %d (%s); the next commit will", epoch, exc
                )
                return
            self._acknowledged += 1

    async def _connect(self, positions: dict[str, Any] | None) -> None:
        ctx = self._ctx
        assert ctx is not None
        policy = self.config.reconnect
        failures = 0
        while True:
            try:
                await self.connect(positions)
            except BaseException as exc:
                await self.disconnect()  # a failed start gets no shutdown
                if not isinstance(exc, self.transient):
                    raise
                failures += 1
                if policy.max_attempts is not None and failures >= policy.max_attempts:
                    msg = (
                        f"node {ctx.node_id!r}: cannot connect "
                        f"({failures} attempts): {exc}"
                    )
                    raise ConnectError(msg) from exc
                delay = policy.delay_s(failures)
                ctx.logger.warning(
                    "cannot connect (%s); retrying in %.2f s", exc, delay
                )
                await pause(ctx.stopping, delay)
                if ctx.stopping.is_set() and self._connected:
                    return
                continue
            name = "reconnected" if self._connected else "connected"
            self._connected = True
            ctx.event(name, {"positions": positions or {}})
            return

    async def _retrying(self, call: Any, *args: Any) -> Any:
        """Run a broker call; on a transient error reconnect and try again."""
        return await _retrying(
            self, call, args, lambda: self._connect(dict(self._positions) or None)
        )


# --- sinks ------------------------------------------------------------------------


class LogSinkConfig(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True
):
    """What every log sink takes (broker configs extend it).

    Attributes:
        encoding: How a record becomes a payload: ``json``, ``msgpack`` or
            ``raw`` (the record must be bytes or a string).
        reconnect: The backoff between connection attempts.
    """

    encoding: SinkEncoding = "json"
    reconnect: Reconnect = msgspec.field(default_factory=Reconnect)


class LogSinkStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """A log sink's counters (`LogSink.statistics`)."""

    records: int
    bad_records: int
    batches: int
    reconnects: int
    flushes: int


S = TypeVar("S", bound=LogSinkConfig)

_json = msgspec.json.Encoder()
_msgpack = msgspec.msgpack.Encoder()


class LogSink(Generic[S]):
    """Base of a sink that appends records to a broker.

    Subclasses implement ``connect``, ``send`` (hand one batch of ``(record,
    payload)`` pairs to the broker; it may return before the broker
    acknowledged them), ``flush`` (wait until everything sent is
    acknowledged) and ``disconnect``, and set ``transient``. ``send`` must be
    safe to call again with the same batch after a reconnect (the broker's
    dedupe, or at-least-once, as the connector states).
    """

    def __init__(self, config: S) -> None:
        self.config = config
        self.transient: tuple[type[BaseException], ...] = (OSError, TimeoutError)
        self._ctx: NodeContext | None = None
        self._connected = False
        self._records = self._bad = self._batches = 0
        self._reconnects = self._flushes = 0

    async def connect(self) -> None:
        """Connect to the broker."""
        raise NotImplementedError

    async def send(self, items: list[tuple[Any, bytes]]) -> None:
        """Send one batch of ``(record, payload)`` pairs."""
        raise NotImplementedError

    async def flush(self) -> None:
        """Wait until the broker acknowledged everything sent."""
        raise NotImplementedError

    async def disconnect(self) -> None:
        """Close the connection; must not raise."""
        raise NotImplementedError

    def encode(self, record: Any) -> bytes:
        """A record's payload (TypeError/ValueError: it goes to ``error``)."""
        encoding = self.config.encoding
        if encoding == "json":
            return _json.encode(record)
        if encoding == "msgpack":
            return _msgpack.encode(record)
        if isinstance(record, bytes):
            return record
        if isinstance(record, str):
            return record.encode()
        msg = f"encoding 'raw' needs bytes or a string, got {type(record).__name__}"
        raise TypeError(msg)

    async def initialize(self, ctx: NodeContext) -> None:
        """Connect; under checkpoints, flush at every barrier.

        Raises:
            flowstream.errors.ConnectError: The broker cannot be reached
                within ``reconnect.max_attempts``.
        """
        self._ctx = ctx
        await self._connect()
        if ctx.checkpointing:
            ctx.on_barrier(self._at_barrier)

    async def execute(
        self, inp: AsyncIterator[list[Any]], *, ctx: NodeContext
    ) -> AsyncIterator[list[Any]]:
        """Encode and send each batch; flush at the end of input."""
        encode = self.encode
        for_error = (TypeError, ValueError, OverflowError)
        async for batch in inp:
            if not batch:
                continue
            items: list[tuple[Any, bytes]] = []
            refused = False
            for record in batch:
                try:
                    items.append((record, encode(record)))
                except for_error as exc:
                    self._bad += 1
                    ctx.dead_letter(record, f"cannot encode: {exc}")
                    refused = True
            if items:
                await self._retrying(self.send, items)
                self._records += len(items)
                self._batches += 1
            if refused:
                yield []  # hands the dead letters on now
        await self._retrying(self.flush)
        self._flushes += 1

    async def shutdown(self) -> None:
        """Disconnect."""
        await self.disconnect()

    def statistics(self) -> LogSinkStatistics:
        """Return the node's counters now."""
        return LogSinkStatistics(
            records=self._records,
            bad_records=self._bad,
            batches=self._batches,
            reconnects=self._reconnects,
            flushes=self._flushes,
        )

    async def _at_barrier(self, epoch: int) -> None:
        # Everything before the barrier is acknowledged by the broker before
        # the snapshot: an epoch that commits never needs what it sent again.
        await self._retrying(self.flush)
        self._flushes += 1

    async def _connect(self) -> None:
        ctx = self._ctx
        assert ctx is not None
        policy = self.config.reconnect
        failures = 0
        while True:
            try:
                await self.connect()
            except BaseException as exc:
                await self.disconnect()  # a failed start gets no shutdown
                if not isinstance(exc, self.transient):
                    raise
                failures += 1
                if policy.max_attempts is not None and failures >= policy.max_attempts:
                    msg = (
                        f"node {ctx.node_id!r}: cannot connect "
                        f"({failures} attempts): {exc}"
                    )
                    raise ConnectError(msg) from exc
                await pause(ctx.stopping, policy.delay_s(failures))
                continue
            name = "reconnected" if self._connected else "connected"
            self._connected = True
            ctx.event(name, None)
            return

    async def _retrying(self, call: Any, *args: Any) -> Any:
        """Run a broker call; on a transient error reconnect and try again."""
        return await _retrying(self, call, args, self._connect)


async def _retrying(
    node: LogSource[Any] | LogSink[Any],
    call: Any,
    args: tuple[Any, ...],
    reconnect: Callable[[], Awaitable[None]],
) -> Any:
    """Run ``call(*args)``; on a transient error, reconnect and run it again.

    Shared by sources and sinks: the disconnect is an event and a warning,
    counted, and the reconnect waits one backoff step (a stop cuts it short).
    """
    ctx = node._ctx
    assert ctx is not None
    while True:
        try:
            return await call(*args)
        except node.transient as exc:
            ctx.event("disconnected", {"reason": str(exc)})
            ctx.logger.warning("connection lost (%s); reconnecting", exc)
            await node.disconnect()
            node._reconnects += 1
            await pause(ctx.stopping, node.config.reconnect.delay_s(1))
            await reconnect()
