"""Bounded channels that carry micro-batches between the engine's tasks.

``open_channel(capacity)`` returns a ``(SendChannel, ReceiveChannel)`` pair: two
halves over one shared state, in the shape of anyio's memory object streams and
trio's memory channels.

Batches
    A channel moves ``list[T]`` batches, never single items, so every cost here
    is paid once per batch. Capacity counts batches. A producer sends whatever
    it has ready when it would otherwise yield to the loop: batches are large
    under load and single items when idle, with no linger timer. An empty batch
    is not sent at all. Items are immutable once emitted; a receiver must not
    change the list it is given (it may be shared, see fan-out).

Backpressure
    ``send()`` waits while the buffer holds ``capacity`` batches, and that wait
    *is* the backpressure: the producer stops, so its own input fills, and so on
    back to the sockets of the sources. Capacity 0 is a rendezvous: a send
    completes only when a receiver takes the batch.

Fan-out, fan-in, work sharing
    There is no broadcast channel. A node with several downstream channels sends
    the same batch list to each in turn, so the slowest consumer sets the pace
    and nothing is copied. For fan-in each producer gets its own send half from
    ``clone()``; the channel ends when all of them are closed. Receive clones
    share the work: each batch goes to exactly one receiver.

Control messages and errors
    ``Control`` messages (checkpoint barriers, for instance) and a sender's
    error travel in the same queue as the batches, so their order relative to
    the data is exact, but they do not count against capacity; end-of-stream
    is a flag that receivers act on once the queue is drained. So ``close()``
    is synchronous, idempotent and never blocks: it can run in ``finally`` or
    in a cancelled task, and never waits behind a full buffer for room to say
    "no more". ``close(error)`` delivers the error after the batches already
    buffered, then the stream ends.

Scheduling and cancellation
    ``send()`` and ``receive()`` suspend only when they must wait; otherwise
    they return without visiting the event loop (unlike trio, there is no
    checkpoint), which keeps the per-batch cost to a few attribute operations.
    Because channels are bounded, a producer and a consumer still alternate.
    A cancelled ``send()`` never delivers its batch. A batch handed to a
    receiver that is cancelled before it runs is not lost: it goes to the next
    waiting receiver, or back to the head of the buffer.
"""

from __future__ import annotations

import asyncio
import enum
import warnings
from collections import OrderedDict, deque
from typing import TYPE_CHECKING, Any, Final, Generic, NoReturn, TypeVar, cast, final

import msgspec

from flowstream.errors import (
    BrokenChannelError,
    ClosedChannelError,
    EndOfStream,
    WouldBlock,
)

if TYPE_CHECKING:
    from types import TracebackType
    from typing import Self

__all__ = [
    "ChannelStatistics",
    "Control",
    "DEFAULT_CAPACITY",
    "ReceiveChannel",
    "SendChannel",
    "open_channel",
]

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)
T_contra = TypeVar("T_contra", contravariant=True)
_C = TypeVar("_C")

DEFAULT_CAPACITY: Final = 16
"""Capacity, in batches, of a connection that does not choose one."""


class Control:
    """Base class of in-band control messages; subclass it once per kind.

    End-of-stream is not a control message: it is ``close()``.

    A control message keeps its exact place among the batches a sender sends,
    yet never counts against capacity, so ``SendChannel.send_control`` never
    waits. ``__slots__`` is empty, so a subclass may also be a
    ``msgspec.Struct``.
    """

    __slots__ = ()


@final
class _Failure(Control):
    # The in-band form of close(error): raised, not returned, by receive().
    __slots__ = ("error",)

    def __init__(self, error: Exception) -> None:
        self.error = error


class _Grant(enum.Enum):
    GRANT = "grant"  # a blocked sender's turn: a place is kept for its batch


class _Wake(enum.Enum):
    WAKE = "wake"  # a close changed the state under a waiter: look again


class _Empty(enum.Enum):
    EMPTY = "empty"


_GRANT: Final = _Grant.GRANT
_WAKE: Final = _Wake.WAKE
_EMPTY: Final = _Empty.EMPTY

_Message = list[Any] | Control


class ChannelStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """A snapshot of a channel, from ``statistics()`` on either half.

    Attributes:
        buffered: Batches in the buffer (control messages are not counted).
        buffered_items: Items in those batches.
        capacity: The most batches the buffer holds before ``send()`` waits.
        open_send_channels: Send halves, clones included, not yet closed.
        open_receive_channels: Receive halves, clones included, not yet closed.
        tasks_waiting_send: Tasks in ``send()`` that have not handed over
            their batch yet.
        tasks_waiting_receive: Tasks waiting in ``receive()``.
        peak_buffered: The most batches ever buffered at once.
    """

    buffered: int
    buffered_items: int
    capacity: int
    open_send_channels: int
    open_receive_channels: int
    tasks_waiting_send: int
    tasks_waiting_receive: int
    peak_buffered: int


class _ChannelState:
    # Invariants:
    # - recv_waiters holds a live future only while the buffer is empty; so
    #   whoever adds a message hands it to the oldest live receiver first.
    # - A sender that blocked transfers its batch itself, when its task runs
    #   again (never earlier), so a cancelled send has delivered nothing. Until
    #   then ``reserved`` keeps a place for it (a buffer slot or a waiting
    #   receiver) so that newcomers cannot take its turn.
    # - buffered <= capacity, except after give_back(), which returns a batch
    #   already counted as delivered (at most one per cancelled receiver).
    # Waiter futures map to the half that waits, so a half's close() can wake
    # just its own tasks (trio keeps per-object and shared waiters the same way).
    __slots__ = (
        "broken",
        "buffer",
        "buffered",
        "buffered_items",
        "capacity",
        "ended",
        "failure",
        "open_receive",
        "open_send",
        "peak",
        "recv_waiters",
        "reserved",
        "send_waiters",
    )

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.buffer: deque[_Message] = deque()
        self.buffered = 0
        self.buffered_items = 0
        self.peak = 0
        self.send_waiters: OrderedDict[asyncio.Future[_Grant | _Wake], object] = (
            OrderedDict()
        )
        self.recv_waiters: OrderedDict[asyncio.Future[_Message | _Wake], object] = (
            OrderedDict()
        )
        self.reserved = 0
        self.open_send = 1
        self.open_receive = 1
        self.broken = False  # sends fail: no receivers left, or a sender failed
        self.ended = False  # nothing more will enter the buffer
        self.failure: Exception | None = None

    def count_in(self, batch: list[Any]) -> None:
        self.buffered += 1
        self.buffered_items += len(batch)
        if self.buffered > self.peak:
            self.peak = self.buffered

    def hand_to_receiver(self, msg: _Message) -> bool:
        waiters = self.recv_waiters
        while waiters:
            fut = waiters.popitem(last=False)[0]
            if not fut.done():  # done means cancelled: its task cleans up
                fut.set_result(msg)
                return True
        return False

    def put(self, batch: list[Any]) -> bool:
        # For a sender that has its turn; newcomers go through _offer().
        if self.hand_to_receiver(batch):
            return True
        if self.buffered + self.reserved < self.capacity:
            self.buffer.append(batch)
            self.count_in(batch)
            return True
        return False

    def put_control(self, msg: Control) -> None:
        if not self.hand_to_receiver(msg):
            self.buffer.append(msg)

    def give_back(self, msg: _Message) -> None:
        # A receiver was handed ``msg`` and cancelled before it could return
        # it. Everything sent after ``msg`` is behind it (the buffer was empty
        # when it was handed over), so the head of the buffer keeps the order.
        if not self.open_receive:
            return  # discarded with the rest of the buffer
        if self.hand_to_receiver(msg):
            return
        self.buffer.appendleft(msg)
        if not isinstance(msg, Control):
            self.count_in(msg)

    def grant_senders(self) -> None:
        # Give blocked senders their turn, oldest first, while there is a place
        # for their batch that no woken sender has been promised yet.
        waiters = self.send_waiters
        room = self.capacity - self.buffered - self.reserved + len(self.recv_waiters)
        while room > 0 and waiters:
            fut = waiters.popitem(last=False)[0]
            if not fut.done():
                fut.set_result(_GRANT)
                self.reserved += 1
                room -= 1

    def statistics(self) -> ChannelStatistics:
        return ChannelStatistics(
            buffered=self.buffered,
            buffered_items=self.buffered_items,
            capacity=self.capacity,
            open_send_channels=self.open_send,
            open_receive_channels=self.open_receive,
            tasks_waiting_send=len(self.send_waiters) + self.reserved,
            tasks_waiting_receive=len(self.recv_waiters),
            peak_buffered=self.peak,
        )


def _wake(waiters: OrderedDict[Any, object], owner: object = None) -> None:
    """Wake every waiter (of ``owner`` only, if given) to look at the state again."""
    for fut, who in list(waiters.items()):
        if owner is None or who is owner:
            del waiters[fut]
            if not fut.done():
                fut.set_result(_WAKE)


class _NoPublicConstructor(type):
    # Channel halves exist only in pairs over a shared state; calling the class
    # would make an orphan, so only open_channel() and clone() may build one.
    def __call__(cls, *args: object, **kwargs: object) -> NoReturn:
        msg = f"{cls.__qualname__} has no public constructor; use open_channel()"
        raise TypeError(msg)

    def _create(cls: type[_C], *args: object) -> _C:
        return cast("_C", type.__call__(cls, *args))


class _Half:
    """What both halves share: ``with`` closes, dropping an open one warns."""

    __slots__ = ()
    _closed: bool

    def close(self) -> None:  # pragma: no cover - each half defines its own
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            warnings.warn(
                f"unclosed {self!r}: close it, or use it in a `with` block",
                ResourceWarning,
                stacklevel=2,
                source=self,
            )


@final
class SendChannel(_Half, Generic[T_contra], metaclass=_NoPublicConstructor):
    """The sending half of a channel; get one from ``open_channel`` or ``clone``.

    Using the half as a context manager (``with send:``) closes it on exit. A
    half garbage-collected while still open emits a ``ResourceWarning``.
    """

    __slots__ = ("__weakref__", "_closed", "_state")

    def __init__(self, state: _ChannelState) -> None:
        self._state = state
        self._closed = False

    def _offer(self, batch: list[T_contra]) -> bool:
        # The hot path: a handful of attribute operations, no await, no lock.
        state = self._state
        if self._closed or state.broken:
            self._raise_unusable()
        if not batch:
            return True
        if state.send_waiters or state.reserved:
            return False  # senders that blocked earlier keep their turn
        if state.recv_waiters and state.hand_to_receiver(batch):
            return True
        if state.buffered < state.capacity:
            state.buffer.append(batch)
            buffered = state.buffered = state.buffered + 1
            state.buffered_items += len(batch)
            if buffered > state.peak:
                state.peak = buffered
            return True
        return False

    async def send(self, batch: list[T_contra]) -> None:
        """Send a batch, waiting while the channel is full.

        The wait is the channel's backpressure. Blocked senders are served in
        the order they blocked. An empty batch is not sent; the call returns at
        once. If the send is cancelled while it waits, the batch is not
        delivered.

        Args:
            batch: The items, in order. The receiver gets this very list, so
                do not change it after sending.

        Raises:
            ClosedChannelError: This half was closed, before or during the wait.
            BrokenChannelError: Every receive half is closed, or another sender
                closed the channel with an error; nobody will receive the batch.
        """
        if not self._offer(batch):
            await self._wait_and_send(batch)

    async def _wait_and_send(self, batch: list[T_contra]) -> None:
        state = self._state
        waiters = state.send_waiters
        loop = asyncio.get_running_loop()
        keep_turn = False
        while True:
            fut: asyncio.Future[_Grant | _Wake] = loop.create_future()
            waiters[fut] = self
            if keep_turn:
                waiters.move_to_end(fut, last=False)
            state.grant_senders()  # there may be room that fairness held back
            try:
                signal = await fut
            except BaseException:
                if waiters.pop(fut, None) is None and not fut.cancelled():
                    if fut.result() is _GRANT:
                        state.reserved -= 1
                        state.grant_senders()  # pass the turn on
                raise
            if signal is _GRANT:
                state.reserved -= 1
            if self._closed or state.broken:
                state.grant_senders()
                self._raise_unusable()
            if state.put(batch):
                return
            # A receiver went away after its place was promised to us (or a
            # batch was given back): wait again, still first in line.
            keep_turn = True

    def send_nowait(self, batch: list[T_contra]) -> None:
        """Send a batch if that needs no wait.

        Args:
            batch: The items, in order; an empty batch is not sent.

        Raises:
            WouldBlock: The channel is full, or other senders are waiting.
            ClosedChannelError: This half was closed.
            BrokenChannelError: As for ``send``.
        """
        if not self._offer(batch):
            raise WouldBlock

    def send_control(self, msg: Control) -> None:
        """Send a control message after the batches sent so far; never waits.

        Control messages do not count against capacity, so this succeeds on a
        full channel.

        Args:
            msg: The message; receivers get this very object.

        Raises:
            TypeError: ``msg`` is not a ``Control``.
            ClosedChannelError: This half was closed.
            BrokenChannelError: As for ``send``.
        """
        state = self._state
        if self._closed or state.broken:
            self._raise_unusable()
        if not isinstance(msg, Control):
            text = f"send_control() takes a Control message, got {msg!r}"
            raise TypeError(text)
        state.put_control(msg)

    def close(self, error: Exception | None = None) -> None:
        """Close this half; synchronous, idempotent, never blocks.

        Tasks blocked in ``send`` on this half raise ``ClosedChannelError`` and
        their batches are not delivered. When the last send half closes,
        receivers drain the buffer and then get ``EndOfStream``.

        With ``error``, the stream fails instead, whatever the other send
        halves do: receivers first get the batches buffered so far, then one
        ``receive`` raises ``error`` itself, and every later one raises
        ``EndOfStream``. Other send halves get ``BrokenChannelError`` from then
        on. The error is dropped if the stream already failed, if every receive
        half is closed, or if this half was already closed.

        Args:
            error: Why the producer stopped, if it failed.

        Raises:
            TypeError: ``error`` is not an ``Exception`` (the half stays open).
        """
        if self._closed:
            return
        if error is not None and not isinstance(error, Exception):
            text = f"close(error=...) takes an Exception, got {error!r}"
            raise TypeError(text)
        self._closed = True
        state = self._state
        state.open_send -= 1
        _wake(state.send_waiters, self)
        if state.broken:
            return
        if error is not None:
            state.failure = error
            state.broken = True
            state.put_control(_Failure(error))
            _wake(state.send_waiters)
        elif state.open_send:
            return
        state.ended = True
        _wake(state.recv_waiters)

    def clone(self) -> SendChannel[T_contra]:
        """Return another send half over the same channel, for one more producer.

        Raises:
            ClosedChannelError: This half was closed.
        """
        if self._closed:
            self._raise_unusable()
        self._state.open_send += 1
        return SendChannel._create(self._state)

    def statistics(self) -> ChannelStatistics:
        """Return a snapshot of the channel's state."""
        return self._state.statistics()

    def _raise_unusable(self) -> NoReturn:
        if self._closed:
            msg = "this send half is closed"
            raise ClosedChannelError(msg)
        failure = self._state.failure
        if failure is not None:
            msg = f"another sender closed the channel with an error: {failure!r}"
            raise BrokenChannelError(msg) from failure
        msg = "every receive half is closed: nobody will receive this"
        raise BrokenChannelError(msg)

    def __repr__(self) -> str:
        status = "closed" if self._closed else "open"
        return f"<SendChannel {status}, {self._state.buffered} batches buffered>"


@final
class ReceiveChannel(_Half, Generic[T_co], metaclass=_NoPublicConstructor):
    """The receiving half of a channel; get one from ``open_channel`` or ``clone``.

    ``async for msg in recv`` receives until end-of-stream. Using the half as a
    context manager (``with recv:``) closes it on exit. A half
    garbage-collected while still open emits a ``ResourceWarning``.
    """

    __slots__ = ("__weakref__", "_closed", "_state")

    def __init__(self, state: _ChannelState) -> None:
        self._state = state
        self._closed = False

    def _poll(self) -> list[T_co] | Control | _Empty:
        # The hot path: a handful of attribute operations, no await, no lock.
        if self._closed:
            msg = "this receive half is closed"
            raise ClosedChannelError(msg)
        state = self._state
        buffer = state.buffer
        if buffer:
            item = buffer.popleft()
            if isinstance(item, Control):
                if isinstance(item, _Failure):
                    raise item.error
                return item
            state.buffered -= 1
            state.buffered_items -= len(item)
            if state.send_waiters:
                state.grant_senders()
            return item
        if state.ended:
            raise EndOfStream
        return _EMPTY

    async def receive(self) -> list[T_co] | Control:
        """Return the next message, waiting while there is none.

        Blocked receivers are served in the order they blocked.

        Returns:
            A batch (a non-empty list), or a ``Control`` message, in the order
            they were sent.

        Raises:
            EndOfStream: Every send half is closed and the buffer is drained,
                or the stream's error was already delivered.
            ClosedChannelError: This half was closed, before or during the wait.
            Exception: The ``error`` a sender closed the channel with, once,
                after the batches buffered before it.
        """
        msg = self._poll()
        if msg is _EMPTY:
            return await self._wait_and_receive()
        return msg

    async def _wait_and_receive(self) -> list[T_co] | Control:
        state = self._state
        waiters = state.recv_waiters
        loop = asyncio.get_running_loop()
        while True:
            fut: asyncio.Future[_Message | _Wake] = loop.create_future()
            waiters[fut] = self
            if state.send_waiters:
                state.grant_senders()  # capacity 0: a sender may hand over now
            try:
                msg = await fut
            except BaseException:
                if waiters.pop(fut, None) is None and not fut.cancelled():
                    handed = fut.result()
                    if handed is not _WAKE:
                        state.give_back(handed)
                raise
            if msg is _WAKE:
                # Only a close wakes a receiver without a message, so _poll()
                # raises, unless a cancelled receiver gave a batch back first.
                polled = self._poll()
                if polled is _EMPTY:
                    continue
                return polled
            if isinstance(msg, _Failure):
                raise msg.error
            return msg

    def receive_nowait(self) -> list[T_co] | Control:
        """Return the next message if one is ready.

        On a capacity-0 channel a batch moves only to a task waiting in
        ``receive``, so this returns only control messages there.

        Raises:
            WouldBlock: Nothing is ready yet.
            EndOfStream: As for ``receive``.
            ClosedChannelError: This half was closed.
            Exception: As for ``receive``.
        """
        msg = self._poll()
        if msg is _EMPTY:
            raise WouldBlock
        return msg

    def close(self) -> None:
        """Close this half; synchronous, idempotent, never blocks.

        Tasks blocked in ``receive`` on this half raise ``ClosedChannelError``.
        When the last receive half closes, the buffered batches are discarded
        and senders, blocked or not, get ``BrokenChannelError``.
        """
        if self._closed:
            return
        self._closed = True
        state = self._state
        state.open_receive -= 1
        _wake(state.recv_waiters, self)
        if state.open_receive:
            return
        state.broken = True
        state.buffer.clear()
        state.buffered = state.buffered_items = 0
        _wake(state.send_waiters)

    def clone(self) -> ReceiveChannel[T_co]:
        """Return another receive half over the same channel; they share the work.

        Raises:
            ClosedChannelError: This half was closed.
        """
        if self._closed:
            msg = "this receive half is closed"
            raise ClosedChannelError(msg)
        self._state.open_receive += 1
        return ReceiveChannel._create(self._state)

    def statistics(self) -> ChannelStatistics:
        """Return a snapshot of the channel's state."""
        return self._state.statistics()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> list[T_co] | Control:
        try:
            msg = self._poll()
            if msg is _EMPTY:
                msg = await self._wait_and_receive()
        except EndOfStream:
            raise StopAsyncIteration from None
        return msg

    def __repr__(self) -> str:
        status = "closed" if self._closed else "open"
        return f"<ReceiveChannel {status}, {self._state.buffered} batches buffered>"


class open_channel(tuple[SendChannel[T], ReceiveChannel[T]]):
    """Open a channel and return its ``(send, receive)`` halves.

    Name the item type by subscripting: ``send, recv = open_channel[int](16)``.
    Close both halves when done (``with send, recv:``).

    Args:
        capacity: How many batches the buffer holds before ``send`` waits;
            0 makes every send wait for a receiver. ``DEFAULT_CAPACITY`` suits
            most connections.

    Raises:
        ValueError: ``capacity`` is not an int >= 0.
    """

    __slots__ = ()

    def __new__(  # type: ignore[misc]
        cls, capacity: int
    ) -> tuple[SendChannel[T], ReceiveChannel[T]]:
        """Build the shared state and both halves; see the class docstring."""
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 0:
            msg = (
                f"capacity must be an int >= 0 (a number of batches), got {capacity!r}"
            )
            raise ValueError(msg)
        state = _ChannelState(capacity)
        send = cast("SendChannel[T]", SendChannel._create(state))
        return send, cast("ReceiveChannel[T]", ReceiveChannel._create(state))
