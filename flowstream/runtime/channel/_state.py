"""A channel's shared state, its control messages and what both halves share."""

from __future__ import annotations

import enum
import warnings
from collections import OrderedDict, deque
from typing import TYPE_CHECKING, Any, Final, NoReturn, TypeVar, cast, final

import msgspec

if TYPE_CHECKING:
    import asyncio
    from types import TracebackType
    from typing import Self

__all__ = ["DEFAULT_CAPACITY", "ChannelStatistics", "Control"]

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
    EXPIRED = "expired"  # a receiver's deadline passed (`receive_until`)


class _Empty(enum.Enum):
    EMPTY = "empty"


_GRANT: Final = _Grant.GRANT
_WAKE: Final = _Wake.WAKE
_EXPIRED: Final = _Wake.EXPIRED
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
