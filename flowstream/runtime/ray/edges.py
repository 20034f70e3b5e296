"""An edge between processes: a sending sink, an inbox, a receiving source.

The sender encodes each micro-batch with MessagePack and calls the receiving
actor's ``push``; at most ``window`` pushes are un-acknowledged at once (the
**credit window**): before a new one it awaits the oldest. ``push`` returns
only once its batch is in the receiver's queue of one batch, and it is taken
from there only as fast as the receiving node reads, so a slow consumer
holds its senders back: backpressure across processes, and Ray's object
store holds at most ``window`` batches per edge.

Ray may start concurrent calls of an async actor's method in any order, so
every batch carries its sequence number and the inbox admits them in order.
``None`` as the payload ends the edge.

Under checkpoints, a barrier crosses the edge in-band: when it reaches the
sender (its barrier hook: every batch before it is sent), the sender pushes
it in its place in the sequence, within the same window; the receiver emits
it in its place among the batches (`checkpointing.Barrier`), where its
process's executor marks it as a source marks one (docs/scale-out.md).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import TYPE_CHECKING, Any, cast

import msgspec

from ...core.codec import decode_msgpack, encode_msgpack
from ...core.node import node
from ...errors import EncodeError
from ..checkpointing.coordinator import Barrier

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from ...core.node import NodeContext
    from ..context import NodeRuntime

__all__ = [
    "COALESCE_S",
    "SEND_COALESCE",
    "EdgeMeter",
    "Inbox",
    "Pace",
    "Receive",
    "Send",
    "receive",
    "send",
]


class Inbox:
    """The receiving end of one edge: batches in sequence order, one buffered."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes | Barrier | None] = asyncio.Queue(maxsize=1)
        self._next = 0
        self._turn = asyncio.Condition()

    async def push(self, seq: int, payload: bytes | Barrier | None) -> None:
        """Admit batch ``seq`` after every earlier one; wait for room."""
        async with self._turn:
            await self._turn.wait_for(lambda: self._next == seq)
            await self.queue.put(payload)
            self._next += 1
            self._turn.notify_all()


class EdgeMeter:
    """What one sending edge did: batches, bytes, the most pushes un-acked."""

    def __init__(self) -> None:
        self.batches = 0
        self.bytes = 0
        self.peak_unacked = 0


class Receive(msgspec.Struct, frozen=True, kw_only=True):
    """Config of ``runtime.receive`` (made by the actor, never decoded)."""

    inbox: Any


class Send(msgspec.Struct, frozen=True, kw_only=True):
    """Config of ``runtime.send`` (made by the actor, never decoded).

    Attributes:
        target: The receiving actor's handle.
        edge: The edge's number (`slots.remote_edges`).
        window: The most pushes un-acknowledged at once.
        meter: Where the sender counts.
    """

    target: Any
    edge: int
    window: int
    meter: Any


@node("runtime.receive", config=Receive, batched=True, stops_itself=True)
async def receive(
    *, config: Receive, ctx: NodeContext
) -> AsyncIterator[list[Any] | Barrier]:
    """Emit the batches another process sends on this edge, until it ends.

    A graceful stop does not end it (``stops_itself``): the sources upstream
    stop, and their end arrives here in order after their last batch. A
    barrier is emitted as it came, between two batches.
    """
    queue = config.inbox.queue
    while True:
        payload = await queue.get()
        if payload is None:
            return
        if type(payload) is Barrier:
            yield payload
            continue
        yield decode_msgpack(payload)


SEND_COALESCE = 8192
"""Most items one push carries when batches wait for credit (`NodeSpec.coalesce`)."""

COALESCE_S = 0.5
"""A push carries at most about this many seconds of the receiver's work."""


class Pace:
    """How many items one push may carry, from how fast the receiver takes them.

    Under backpressure (a full window) an ack comes when the receiver has
    taken a push, so the time between two is its time for one: a push may
    carry `COALESCE_S` of that work, up to the node's declared limit, so
    that a receiver with slow items is not held up for long by one batch
    (its loop answers statistics, health checks and stops between
    batches). Nothing is coalesced until a first pace is known.
    """

    def __init__(self, rt: NodeRuntime) -> None:
        self.rt = rt
        self.cap = rt.coalesce  # the spec's: `SEND_COALESCE`
        self.last: float | None = None
        rt.coalesce = 0

    def acked(self, items: int) -> None:
        """The oldest push, of ``items`` items, was acknowledged just now."""
        now = time.perf_counter()
        last, self.last = self.last, now
        if last is not None and items and now > last:
            per_s = items / (now - last)
            self.rt.coalesce = min(self.cap, int(per_s * COALESCE_S))


@node("runtime.send", config=Send, batched=True, coalesce=SEND_COALESCE)
async def send(
    inp: AsyncIterator[list[Any]], *, config: Send, ctx: NodeContext
) -> AsyncIterator[list[Any]]:
    """Send each batch to the actor at the other end, within the credit window.

    Batches that queue here while the window is full leave together (up to
    what `Pace` allows) in one push: pushes cost Ray's threads in both
    processes, whatever their size, so a receiver that falls behind gets
    fewer, larger pushes (a barrier still leaves in its place: the batches
    before it, then it).

    An item with no MessagePack form goes to this node's dead letters with
    the reason; the rest of its batch is sent. Under checkpoints, each
    barrier is sent after the batches before it (see the module docstring).
    """
    target, edge, window, meter = (
        config.target,
        config.edge,
        config.window,
        config.meter,
    )
    unacked: deque[tuple[Any, int]] = deque()  # (push, its items)
    seq = 0
    sending = True  # a barrier after the end has nowhere to go
    pace = Pace(cast("NodeRuntime", ctx))

    async def credit() -> None:
        if len(unacked) >= window:
            oldest, items = unacked.popleft()
            await oldest
            pace.acked(items)

    async def at_barrier(epoch: int) -> None:
        nonlocal seq
        if not sending:
            return  # the snapshot after the drain: nothing crosses any more
        await credit()
        unacked.append((target.push_barrier.remote(edge, seq, epoch), 0))
        seq += 1

    if ctx.checkpointing:
        ctx.on_barrier(at_barrier)
    push = target.push
    async for batch in inp:
        payload = _encode(batch, ctx)
        if payload is None:
            continue
        await credit()
        unacked.append((push.remote(edge, seq, payload), len(batch)))
        seq += 1
        meter.batches += 1
        meter.bytes += len(payload)
        meter.peak_unacked = max(meter.peak_unacked, len(unacked))
    sending = False
    while unacked:
        await unacked.popleft()[0]
    await push.remote(edge, seq, None)
    return
    yield  # sends only


def _encode(batch: list[Any], ctx: NodeContext) -> bytes | None:
    try:
        return encode_msgpack(batch)
    except EncodeError:
        pass
    kept = []
    for x in batch:
        try:
            encode_msgpack(x)
        except EncodeError as exc:
            ctx.dead_letter(x, f"cannot send to another process: {exc}")
        else:
            kept.append(x)
    return encode_msgpack(kept) if kept else None
