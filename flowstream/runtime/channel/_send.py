"""The sending half of a channel."""

from __future__ import annotations

import asyncio
from typing import Generic, NoReturn, final

from ...errors import (
    BrokenChannelError,
    ClosedChannelError,
    WouldBlock,
)
from ._state import (
    _GRANT,
    ChannelStatistics,
    Control,
    T_contra,
    _ChannelState,
    _Failure,
    _Grant,
    _Half,
    _NoPublicConstructor,
    _Wake,
    _wake,
)

__all__ = ["SendChannel"]


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

    def room(self) -> int:
        """How many batches ``send`` would take now without waiting (0: it waits)."""
        state = self._state
        if self._closed or state.broken or state.send_waiters or state.reserved:
            return 0
        free = state.capacity - state.buffered
        return free if free > 0 else int(bool(state.recv_waiters))

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
