"""An edge between processes: a sending sink, an inbox, a receiving source.

The batches cross on a TCP connection of their own, from the sending node to
the receiving actor (each actor listens on its node's address: `Listener`),
not as Ray actor calls: a Ray call costs ~1-2 ms of CPU in each process,
whatever its size, and an edge makes one per batch. The driver still places
and wires the actors through Ray, hands each the others' addresses and a
token of the run that a connection must present first.

The sender encodes each micro-batch with MessagePack and writes it as one
frame; the receiver acknowledges a frame (one byte back) once its batch is
in the receiving node's queue of one batch. At most ``window`` frames are
un-acknowledged at once (the **credit window**): before a new one the sender
waits for the oldest's acknowledgement. A batch is taken from the queue only
as fast as the receiving node reads, so a slow consumer holds its senders
back: backpressure across processes, with at most ``window`` batches in
flight per edge.

Under checkpoints, a barrier crosses the edge in-band: when it reaches the
sender (its barrier hook: every batch before it is sent), the sender writes
it in its place among the batches, within the same window; the receiver
starts the epoch as soon as the frame arrives and emits the barrier in its
place among the batches (`checkpointing.Barrier`), where its process's
executor marks it as a source marks one (docs/scale-out.md). A last frame
ends the edge.
"""

from __future__ import annotations

import asyncio
import hmac
import struct
import time
from collections import deque
from typing import TYPE_CHECKING, Any, TypeAlias, cast

import msgspec

from ...core.codec import decode_msgpack, encode_msgpack
from ...core.node import node
from ...errors import EncodeError
from ..checkpointing.coordinator import Barrier

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from ...core.node import NodeContext
    from ..context import NodeRuntime

__all__ = [
    "COALESCE_S",
    "HORIZON_S",
    "SEND_COALESCE",
    "EdgeMeter",
    "Inbox",
    "open_inbox",
    "Listener",
    "Pace",
    "PeerGone",
    "Receive",
    "Send",
    "receive",
    "send",
]


HELLO = struct.Struct("!16sI")
"""A connection's first bytes: the run's token, the edge's number."""

FRAME = struct.Struct("!BQI")
"""Each frame's header: its kind, a barrier's epoch, the payload's length."""

BATCH, BARRIER, END = 0, 1, 2
ACK = b"\x01"
MAX_FRAME = 1 << 30
"""The longest payload a receiver reads (a sender's batch is far shorter)."""

HELLO_TIMEOUT_S = 10.0
"""How long a new connection has to present the token."""


Inbox: TypeAlias = "asyncio.Queue[bytes | Barrier | None]"
"""The receiving end of one edge: its frames in order (None: the end)."""


def open_inbox() -> Inbox:
    """An edge's inbox: one frame buffered, the rest wait in the sender's window."""
    return asyncio.Queue(maxsize=1)


class Listener:
    """The edges coming into this process: a TCP server on its node's address.

    A connection that does not start with the run's token within
    `HELLO_TIMEOUT_S`, names an edge this process does not receive, or one
    already connected, is closed unread; once every edge is connected the
    server takes no more connections.
    """

    def __init__(
        self,
        token: bytes,
        inboxes: dict[int, Inbox],
        on_barrier: Callable[[int], None],
    ) -> None:
        self.token = token
        self.inboxes = inboxes
        self.on_barrier = on_barrier
        self.server: asyncio.Server | None = None
        self.connected: set[int] = set()
        self.handlers: set[asyncio.Task[Any]] = set()

    async def start(self, host: str) -> tuple[str, int]:
        """Listen on ``host`` (a free port); return the address to connect to."""
        self.server = await asyncio.start_server(self._serve, host, 0)
        port: int = self.server.sockets[0].getsockname()[1]
        return host, port

    def close(self) -> None:
        """Take no more connections."""
        if self.server is not None:
            self.server.close()

    async def aclose(self) -> None:
        """Take no more connections and end the ones open."""
        self.close()
        for task in self.handlers:
            task.cancel()
        await asyncio.gather(*self.handlers, return_exceptions=True)

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        feeder: asyncio.Task[None] | None = None
        handler = asyncio.current_task()
        assert handler is not None
        self.handlers.add(handler)
        try:
            async with asyncio.timeout(HELLO_TIMEOUT_S):
                hello = await reader.readexactly(HELLO.size)
            token, edge = HELLO.unpack(hello)
            if not hmac.compare_digest(token, self.token):
                return
            inbox = self.inboxes.get(edge)
            if inbox is None or edge in self.connected:
                return
            self.connected.add(edge)
            if self.connected.issuperset(self.inboxes):
                self.close()  # every edge is here
            # Frames are read ahead of the inbox (at most the sender's
            # window of them), so that a barrier starts its epoch here as
            # soon as it arrives, not once the batches before it are taken.
            frames: asyncio.Queue[bytes | Barrier | None] = asyncio.Queue()
            feeder = asyncio.create_task(_feed(frames, inbox, writer))
            while True:
                kind, epoch, size = FRAME.unpack(await reader.readexactly(FRAME.size))
                if size > MAX_FRAME:
                    return
                payload = await reader.readexactly(size) if size else b""
                if kind == BARRIER:
                    self.on_barrier(epoch)
                    frames.put_nowait(Barrier(epoch))
                elif kind == END:
                    frames.put_nowait(None)
                    await feeder
                    return
                else:
                    frames.put_nowait(payload)
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError):
            # The sending process went away: the driver ends the run, or
            # rolls it back under checkpoints.
            return
        finally:
            if feeder is not None and not feeder.done():
                feeder.cancel()
            writer.close()
            self.handlers.discard(handler)


async def _feed(
    frames: asyncio.Queue[bytes | Barrier | None],
    inbox: Inbox,
    writer: asyncio.StreamWriter,
) -> None:
    """Hand each frame to the inbox in order; acknowledge it once it is taken."""
    while True:
        msg = await frames.get()
        await inbox.put(msg)
        writer.write(ACK)
        if msg is None:
            await writer.drain()
            return


class EdgeMeter:
    """What one sending edge did: batches, bytes, the most frames un-acked."""

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
        address: The receiving actor's `Listener` (host, port).
        token: The run's token, which the receiver checks.
        edge: The edge's number (`slots.remote_edges`).
        window: The most frames un-acknowledged at once.
        meter: Where the sender counts.
    """

    address: tuple[str, int]
    token: bytes
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
    queue: Inbox = config.inbox
    while True:
        payload = await queue.get()
        if payload is None:
            return
        if isinstance(payload, Barrier):
            yield payload
            continue
        yield decode_msgpack(payload)


SEND_COALESCE = 8192
"""Most items one frame carries when batches wait for credit (`NodeSpec.coalesce`)."""

COALESCE_S = 0.05
"""A frame carries at most about this many seconds of the receiver's work."""

HORIZON_S = 0.05
"""Frames not yet acknowledged carry at most about this much of the receiver's
work (one frame at least): what it still has to do once the sender's side
ends, while the sender's process may have nothing left."""


class Pace:
    """How much one frame may carry and how much may be in flight.

    Under backpressure (the sender waiting for credit) an ack comes when the
    receiver has taken a frame, so the time between two is its time for
    one: a frame may carry `COALESCE_S` of that work, up to the node's
    declared limit, and the frames not acknowledged `HORIZON_S` of it (so
    that a receiver with slow items is not held up for long by one batch,
    and has little left to do when the sender's side runs out: the two
    processes end together). Until a first pace is known, nothing is
    coalesced and only the window bounds the frames in flight.
    """

    def __init__(self, rt: NodeRuntime) -> None:
        self.rt = rt
        self.cap = rt.coalesce  # the spec's: `SEND_COALESCE`
        self.last: float | None = None
        self.per_s = 0.0  # the receiver's items per second (0: not known yet)
        rt.coalesce = 0

    def ahead(self, items: int) -> bool:
        """Whether ``items`` sent and not acknowledged are `HORIZON_S` of work."""
        return self.per_s > 0 and items > self.per_s * HORIZON_S

    def acked(self, items: int) -> None:
        """The oldest frame, of ``items`` items, was acknowledged just now."""
        now = time.perf_counter()
        last, self.last = self.last, now
        if last is not None and items and now > last:
            self.per_s = per_s = items / (now - last)
            self.rt.coalesce = min(self.cap, int(per_s * COALESCE_S))


class PeerGone(ConnectionError):
    """The process an edge sends to went away.

    A consequence, never a run's cause: that process failed or died first,
    and its failure is the one to report (and to count a poison record by).
    """


@node("runtime.send", config=Send, batched=True, coalesce=SEND_COALESCE)
async def send(
    inp: AsyncIterator[list[Any]], *, config: Send, ctx: NodeContext
) -> AsyncIterator[list[Any]]:
    """Send each batch to the process at the other end, within the credit window.

    Batches that queue here while the window is full leave together (up to
    what `Pace` allows) in one frame, so that a receiver that falls behind
    gets fewer, larger batches (a barrier still leaves in its place: the
    batches before it, then it).

    An item with no MessagePack form goes to this node's dead letters with
    the reason; the rest of its batch is sent. Under checkpoints, each
    barrier is sent after the batches before it (see the module docstring).
    """
    edge, window, meter = config.edge, config.window, config.meter
    host, port = config.address
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError as exc:
        msg = f"edge {edge}: cannot reach the receiving process at {host}:{port}: {exc}"
        raise ConnectionError(msg) from exc
    writer.write(HELLO.pack(config.token, edge))
    unacked: deque[int] = deque()  # the items of each frame not acknowledged
    in_flight = 0  # their sum
    sending = True  # a barrier after the end has nowhere to go
    pace = Pace(cast("NodeRuntime", ctx))

    async def acked() -> None:
        # One byte per frame taken; read all that came (never past the
        # frames out, so the end's own acknowledgement stays unread here).
        nonlocal in_flight
        acks = await reader.read(len(unacked))
        if not acks:
            closed = "it closed the connection"
            raise ConnectionError(closed)
        for _ in acks:
            items = unacked.popleft()
            in_flight -= items
            pace.acked(items)

    async def put(kind: int, epoch: int, payload: bytes, items: int) -> None:
        nonlocal in_flight
        while len(unacked) >= window or (unacked and pace.ahead(in_flight)):
            await acked()
        in_flight += items
        writer.write(FRAME.pack(kind, epoch, len(payload)))
        if payload:
            writer.write(payload)
        unacked.append(items)
        await writer.drain()

    async def at_barrier(epoch: int) -> None:
        if sending:  # the snapshot after the drain: nothing crosses any more
            await put(BARRIER, epoch, b"", 0)

    if ctx.checkpointing:
        ctx.on_barrier(at_barrier)
    try:
        async for batch in inp:
            payload = _encode(batch, ctx)
            if payload is None:
                continue
            await put(BATCH, 0, payload, len(batch))
            meter.batches += 1
            meter.bytes += len(payload)
            meter.peak_unacked = max(meter.peak_unacked, len(unacked))
        sending = False
        await put(END, 0, b"", 0)
        while unacked:
            await acked()
    except (asyncio.IncompleteReadError, ConnectionError) as exc:
        msg = f"edge {edge}: the receiving process at {host}:{port} went away: {exc!r}"
        raise PeerGone(msg) from exc
    finally:
        writer.close()
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
