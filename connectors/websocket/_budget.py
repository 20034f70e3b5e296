"""``ws.source``'s memory budget: the frame bytes it holds, all connections together.

Without it, each connection holds what websockets buffers for it (up to
``read_buffer_frames`` frames, each up to ``hard_max_frame_bytes``, plus the
frame being parsed), so memory grows with the number of clients. `Budget`
counts every frame byte the source holds:

* in each connection: the partial frame in websockets' parser buffer and the
  complete frames waiting in its queue (or in the reader's hand, until the
  intake takes them), measured by `MeteredServerConnection` /
  `MeteredClientConnection`;
* in the intake queue, and with a journal, in the journal's pending frames.

When the total reaches ``max_buffered_bytes`` the source stops reading every
socket (TCP backpressure reaches the senders) until it drains to three
quarters of the budget. The total can pass the budget by one read chunk (the
one that crossed it), and by one frame plus one more chunk: when everything
held is partial frames (so nothing could drain and every reader would wait
for ever), one connection at a time, the "finisher", reads on until its
frame is complete (its last read may hold the start of its next frame).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.server import ServerConnection
from websockets.frames import DATA_OPCODES, Frame

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable

    from websockets.protocol import Event

    from ._intake import _Intake
    from ._journal import Journal

_DATA = DATA_OPCODES


class Budget:
    """One bound on the frame bytes held by a source, and who may read.

    Attributes:
        limit: ``max_buffered_bytes``.
        conn_bytes: Bytes held in connections (partial and complete frames).
        partial_bytes: Of which partial frames (they cannot drain by themselves).
        peak: The most bytes ever held.
        stops: Times reading was stopped because the budget was spent.
        stopped: Reading is stopped now.
    """

    __slots__ = (
        "_finisher",
        "_intake",
        "_journal",
        "_meters",
        "conn_bytes",
        "limit",
        "low",
        "partial_bytes",
        "peak",
        "stopped",
        "stops",
    )

    def __init__(self, limit: int, intake: _Intake) -> None:
        self.limit = limit
        self.low = limit - limit // 4
        self.conn_bytes = 0
        self.partial_bytes = 0
        self.peak = 0
        self.stops = 0
        self.stopped = False
        self._intake = intake
        self._journal: Journal | None = None
        self._meters: set[_Meter] = set()
        self._finisher: _Meter | None = None

    def watch(self, journal: Journal) -> None:
        """Count ``journal``'s pending frames too."""
        self._journal = journal

    @property
    def held(self) -> int:
        """Frame bytes held now, everywhere in the source."""
        journal = self._journal
        held = self.conn_bytes + self._intake.bytes
        return held + journal.held_bytes if journal is not None else held

    def check(self) -> None:
        """Bytes came in: note the peak; stop reading if the budget is spent."""
        journal = self._journal
        held = self.conn_bytes + self._intake.bytes
        if journal is not None:
            held += journal.held_bytes
        if held > self.peak:
            self.peak = held
        if held >= self.limit and not self.stopped:
            self.stopped = True
            self.stops += 1
            for meter in self._meters:
                if meter is not self._finisher:
                    meter.hold(True)
        if self.stopped and held == self.partial_bytes:
            self._unstick()

    def released(self) -> None:
        """Bytes left the source (taken by the graph, or a connection closed).

        Called by the consumer only while `stopped`: resume everyone below
        the low-water mark; otherwise, if nothing held can drain (only
        partial frames), let one connection finish its frame.
        """
        held = self.held
        if held <= self.low:
            self.stopped = False
            self._finisher = None
            for meter in self._meters:
                meter.hold(False)
        elif held == self.partial_bytes:
            self._unstick()

    def _unstick(self) -> None:
        """Only partial frames are held: one connection reads on to finish its own."""
        if self._finisher is not None:
            return
        for meter in self._meters:
            if meter.partial:
                self._finisher = meter
                meter.hold(False)
                return

    def _add(self, meter: _Meter) -> None:
        self._meters.add(meter)
        if self.stopped:
            meter.hold(True)

    def _remove(self, meter: _Meter) -> None:
        self._meters.discard(meter)
        if self._finisher is meter:
            self._finisher = None
        if self.stopped:
            self.released()

    def _finished(self, meter: _Meter) -> None:
        """``meter``, the finisher, completed its frame."""
        self._finisher = None
        if self.stopped:
            meter.hold(True)


class _Meter:
    """What one connection holds, and whether it may read its socket.

    Reading is on only if neither websockets (its queue is full) nor the
    budget (spent) holds it back; both act through `_apply`.
    """

    __slots__ = (
        "_budget",
        "_by_budget",
        "_by_queue",
        "_transport",
        "completed",
        "partial",
        "queued",
    )

    def __init__(self, budget: Budget) -> None:
        self._budget = budget
        self._by_budget = False
        self._by_queue = False
        self._transport: asyncio.Transport | None = None
        self.completed = False  # a frame was completed in this data_received
        self.partial = 0
        self.queued = 0

    def hold(self, held: bool) -> None:
        self._by_budget = held
        self._apply()

    def queue_full(self, full: bool) -> None:
        self._by_queue = full
        self._apply()

    def _apply(self) -> None:
        transport = self._transport
        if transport is None:
            return
        if self._by_budget or self._by_queue:
            transport.pause_reading()  # both idempotent, and no-ops once closing
        else:
            transport.resume_reading()


class _Metered:
    """What both metered connection classes add to websockets' connections.

    Mixed in before `ServerConnection` / `ClientConnection`; relies on their
    ``protocol.reader.buffer`` (the parser's partial frame) and their
    ``recv_messages`` assembler's ``pause``/``resume`` hooks.
    """

    _meter: _Meter
    discarding: bool
    protocol: Any
    recv_messages: Any
    # The websockets methods these override, called directly: data_received
    # and process_event run per read and per frame, where super() shows.
    _made: Callable[[Any, asyncio.BaseTransport], None]
    _received: Callable[[Any, bytes], None]
    _process: Callable[[Any, Event], None]
    _lost: Callable[[Any, Exception | None], None]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._made(self, transport)
        meter = self._meter
        meter._transport = transport  # type: ignore[assignment]
        assembler = self.recv_messages
        assembler.pause = lambda: meter.queue_full(True)
        assembler.resume = lambda: meter.queue_full(False)
        meter._budget._add(meter)

    def data_received(self, data: bytes) -> None:
        self._received(self, data)  # complete frames counted by process_event
        meter = self._meter
        budget = meter._budget
        partial = len(self.protocol.reader.buffer)
        delta = partial - meter.partial
        if delta:
            meter.partial = partial
            budget.partial_bytes += delta
            budget.conn_bytes += delta
        if meter.completed:
            meter.completed = False
            if budget._finisher is meter:
                budget._finished(meter)
        budget.check()

    def process_event(self, event: Event) -> None:
        if type(event) is Frame and event.opcode in _DATA:
            if self.discarding:
                return
            size = len(event.data)
            meter = self._meter
            meter.completed = True
            meter.queued += size
            meter._budget.conn_bytes += size
        self._process(self, event)

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost(self, exc)
        meter = self._meter
        budget = meter._budget
        budget.conn_bytes -= meter.partial + meter.queued
        budget.partial_bytes -= meter.partial
        meter.partial = meter.queued = 0
        meter._transport = None
        budget._remove(meter)

    def _start_metering(self, budget: Budget) -> None:
        self._meter = _Meter(budget)
        self.discarding = False

    def took(self, size: int) -> None:
        """The reader handed a frame of ``size`` bytes on (it left the connection)."""
        meter = self._meter
        size = min(size, meter.queued)  # 0 once the connection is lost
        meter.queued -= size
        meter._budget.conn_bytes -= size

    def discard(self) -> None:
        """Drop every data frame from now on (a refused connection): none is held."""
        self.discarding = True
        meter = self._meter
        meter._budget.conn_bytes -= meter.queued
        meter.queued = 0
        self.recv_messages.frames.queue.clear()
        self.recv_messages.maybe_resume()
        if meter._budget.stopped:
            meter._budget.released()


class MeteredServerConnection(_Metered, ServerConnection):
    """A server connection whose frame bytes count against a `Budget`."""

    _made = staticmethod(ServerConnection.connection_made)
    _received = staticmethod(ServerConnection.data_received)
    _process = staticmethod(ServerConnection.process_event)
    _lost = staticmethod(ServerConnection.connection_lost)

    def __init__(self, *args: Any, budget: Budget, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._start_metering(budget)


class MeteredClientConnection(_Metered, ClientConnection):
    """A client connection whose frame bytes count against a `Budget`."""

    _made = staticmethod(ClientConnection.connection_made)
    _received = staticmethod(ClientConnection.data_received)
    _process = staticmethod(ClientConnection.process_event)
    _lost = staticmethod(ClientConnection.connection_lost)

    def __init__(self, *args: Any, budget: Budget, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._start_metering(budget)
