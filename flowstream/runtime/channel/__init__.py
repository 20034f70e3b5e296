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

from typing import TypeVar, cast

from ._receive import ReceiveChannel
from ._send import SendChannel
from ._state import DEFAULT_CAPACITY, ChannelStatistics, Control, _ChannelState

__all__ = [
    "DEFAULT_CAPACITY",
    "ChannelStatistics",
    "Control",
    "ReceiveChannel",
    "SendChannel",
    "open_channel",
]

T = TypeVar("T")


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
