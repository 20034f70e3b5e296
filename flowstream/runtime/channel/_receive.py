"""The receiving half of a channel."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Generic, final

from ...errors import (
    ClosedChannelError,
    EndOfStream,
    WouldBlock,
)
from ._state import (
    _EMPTY,
    _EXPIRED,
    ChannelStatistics,
    Control,
    T_co,
    _ChannelState,
    _Empty,
    _Failure,
    _Half,
    _Message,
    _NoPublicConstructor,
    _Wake,
    _wake,
)

if TYPE_CHECKING:
    from collections import OrderedDict
    from typing import Self

__all__ = ["ReceiveChannel"]


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
            waited = await self._wait_and_receive()
            assert waited is not None  # no deadline: it never expires
            return waited
        return msg

    async def receive_until(self, deadline: float) -> list[T_co] | Control | None:
        """Like `receive`, but return None once the loop's clock passes ``deadline``.

        The deadline never cancels the task: it wakes the wait itself. So it
        is safe where the task may be elsewhere when it falls due — a node's
        generator step that `stepping.rebatch` holds suspended while the
        items before it are delivered, where a cancelling timeout
        (``asyncio.timeout``) would cancel whatever the task does then.

        Args:
            deadline: On the running loop's clock (``loop.time()``); one
                already past still gives whatever is ready.

        Raises:
            EndOfStream: As for ``receive``.
            ClosedChannelError: As for ``receive``.
            Exception: As for ``receive``.
        """
        msg = self._poll()
        if msg is _EMPTY:
            return await self._wait_and_receive(deadline)
        return msg

    async def _wait_and_receive(
        self, deadline: float | None = None
    ) -> list[T_co] | Control | None:
        state = self._state
        waiters = state.recv_waiters
        loop = asyncio.get_running_loop()
        timer = None
        while True:
            fut: asyncio.Future[_Message | _Wake] = loop.create_future()
            waiters[fut] = self
            if state.send_waiters:
                state.grant_senders()  # capacity 0: a sender may hand over now
            if deadline is not None:
                timer = loop.call_at(deadline, _expire, waiters, fut)
            try:
                msg = await fut
            except BaseException:
                if waiters.pop(fut, None) is None and not fut.cancelled():
                    handed = fut.result()
                    if not isinstance(handed, _Wake):
                        state.give_back(handed)
                raise
            finally:
                if timer is not None:
                    timer.cancel()
            if isinstance(msg, _Wake):
                # A close wakes a receiver without a message, so _poll()
                # raises, unless a cancelled receiver gave a batch back first;
                # so does a deadline.
                polled = self._poll()
                if polled is not _EMPTY:
                    return polled
                if msg is _EXPIRED:
                    return None
                continue
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
                waited = await self._wait_and_receive()
                assert waited is not None  # no deadline: it never expires
                msg = waited
        except EndOfStream:
            raise StopAsyncIteration from None
        return msg

    def __repr__(self) -> str:
        status = "closed" if self._closed else "open"
        return f"<ReceiveChannel {status}, {self._state.buffered} batches buffered>"


def _expire(
    waiters: OrderedDict[asyncio.Future[_Message | _Wake], object],
    fut: asyncio.Future[_Message | _Wake],
) -> None:
    """A receiver's deadline: wake it, unless a message was handed to it first."""
    if waiters.pop(fut, None) is not None and not fut.done():
        fut.set_result(_EXPIRED)
