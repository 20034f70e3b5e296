"""Input feeds: how a running node reads its input ports.

A node's input parameter is a feed: an async iterator of items (or of batches,
for batch-aware nodes). Feeds remember the last item handed out so that a node
restarted after failing on it can be given it again (`replay`).

A channel-backed feed also offers ``next(timeout)``, a wait with a deadline
that is safe to cancel (the channel keeps the batch). Nodes that need it
(processing-time windows, batching by time) declare ``timed=True`` so the
runtime always gives them channel-backed inputs; `next_item` is the call to
use in node code.
"""

from __future__ import annotations

import asyncio
import enum
from typing import TYPE_CHECKING, Any, Self

from ..errors import EndOfStream
from .channel import Control

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from .channel import ReceiveChannel
    from .context import NodeRuntime

__all__ = [
    "NO_ITEM",
    "Align",
    "AligningFeed",
    "BatchFeed",
    "ChannelFeed",
    "ItemFeed",
    "NoItem",
    "next_item",
]


class NoItem(enum.Enum):
    """Sentinel type of `NO_ITEM` (falsy)."""

    NO_ITEM = 0

    def __bool__(self) -> bool:
        return False


NO_ITEM = NoItem.NO_ITEM
"""Returned by `next_item` when the deadline passed with no item."""


async def next_item(inp: AsyncIterator[Any], timeout: float | None) -> Any:  # noqa: ASYNC109
    """Return the next item of ``inp``, or `NO_ITEM` after ``timeout`` seconds.

    Raises:
        StopAsyncIteration: The input ended.
        TypeError: ``inp`` cannot wait with a deadline safely (a node that
            calls this must be declared with ``@node(..., timed=True)``).
    """
    wait = getattr(inp, "next", None)
    if wait is None:
        msg = (
            f"{type(inp).__name__} cannot wait with a deadline; "
            "declare the node with @node(..., timed=True)"
        )
        raise TypeError(msg)
    return await wait(timeout)


class BatchFeed:
    """Batches from an iterator of batches, for a batch-aware node.

    Remembers the last batch handed out so that `replay` can hand it out again
    to a node restarted after failing on it; ``taken`` counts hand-outs.
    """

    __slots__ = ("_batches", "_replay", "failed", "last", "offset", "taken")

    def __init__(self, batches: AsyncIterator[list[Any]]) -> None:
        self._batches = batches
        self._replay = False
        self.last: Any = None
        self.taken = 0  # hand-outs, replays not counted
        # Where ``last`` starts in the batch taken (after `replay_from`).
        self.offset = 0
        # The upstream raised (a fused node before this one failed): the
        # failure surfaces through the consuming node, which must not take
        # the blame for it.
        self.failed = False

    async def _pull(self) -> Any:
        try:
            return await self._batches.__anext__()
        except StopAsyncIteration:
            raise
        except Exception:
            self.failed = True
            raise

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Any:
        if self._replay:
            self._replay = False
            return self.last
        self.last = await self._pull()
        self.offset = 0
        self.taken += 1
        return self.last

    def replay(self) -> None:
        """Hand out the last item again (the node failed on it and restarts)."""
        self._replay = True

    def replay_from(self, index: int) -> None:
        """Hand out the last batch again from ``index`` on (nothing if past its end).

        For a batched node that failed on item ``index`` (`ItemFailed`) and
        restarts: from ``index`` to retry it, from ``index + 1`` to go on
        past it. The batch handed out becomes the new ``last``.
        """
        last = self.last
        if index >= len(last):
            return
        if index:
            self.last = last[index:]
            self.offset += index
        self._replay = True

    async def aclose(self) -> None:
        """Close the upstream."""
        close = getattr(self._batches, "aclose", None)
        if close is not None:
            await close()


class ItemFeed(BatchFeed):
    """Items from an iterator of batches (a fused upstream)."""

    __slots__ = ("_batch", "_i")

    def __init__(self, batches: AsyncIterator[list[Any]]) -> None:
        super().__init__(batches)
        self._batch: list[Any] = []
        self._i = 0

    async def __anext__(self) -> Any:
        if self._replay:
            self._replay = False
            return self.last
        i = self._i
        batch = self._batch
        while i >= len(batch):
            batch = self._batch = await self._pull()
            i = 0
        self._i = i + 1
        self.taken += 1
        item = self.last = batch[i]
        return item


class Align:
    """Handed out by an `AligningFeed` in place of a batch: barrier ``epoch``.

    Its port received the barrier from every producer and will have nothing
    more until the epoch commits (the sources are held). Whoever merges the
    feeds stops reading that one and, once every feed still open handed out
    its mark, calls `aligned` once — at a point where the node has handled
    everything before the barrier on all inputs — and then reads on.
    """

    __slots__ = ("_on_aligned", "done", "epoch")

    def __init__(
        self, epoch: int, on_aligned: Callable[[int], Awaitable[None]]
    ) -> None:
        self.epoch = epoch
        self._on_aligned = on_aligned
        self.done = False

    async def aligned(self) -> None:
        """Every input passed the barrier: snapshot the node and forward it."""
        if not self.done:
            self.done = True
            await self._on_aligned(self.epoch)


class AligningFeed(BatchFeed):
    """Batches of one input port of a multi-input node under checkpoints.

    Reads a port's batches and barriers. With ``align`` set (by
    ``merge_batches``), a barrier that every producer of the port sent comes
    out as an `Align` mark; it keeps coming out until it is aligned, so a
    node restarted mid-alignment sees it again. Without ``align`` each
    barrier goes to ``on_control``, as for any other node.
    """

    __slots__ = ("_mark", "_on_aligned", "_on_control", "_producers", "_seen", "align")

    def __init__(
        self,
        batches: AsyncIterator[Any],
        producers: int,
        on_control: Callable[[Control], Awaitable[None]],
        on_aligned: Callable[[int], Awaitable[None]],
    ) -> None:
        super().__init__(batches)
        self._producers = producers
        self._on_control = on_control
        self._on_aligned = on_aligned
        self._seen: dict[int, int] = {}
        self._mark: Align | None = None
        self.align = False

    async def __anext__(self) -> Any:
        if self._mark is not None and not self._mark.done:
            return self._mark
        if self._replay:
            self._replay = False
            return self.last
        while True:
            msg: Any = await self._pull()
            if type(msg) is list:
                self.last = msg
                self.offset = 0
                self.taken += 1
                return msg
            if not self.align:
                await self._on_control(msg)
                continue
            epoch = getattr(msg, "epoch", None)
            if epoch is None:
                continue  # not a barrier: nothing to align
            seen = self._seen[epoch] = self._seen.get(epoch, 0) + 1
            if seen >= self._producers:
                del self._seen[epoch]
                self._mark = Align(epoch, self._on_aligned)
                return self._mark


class ChannelFeed:
    """Items straight from a channel; counts them in; waits can have deadlines.

    Control messages (checkpoint barriers) go to ``on_control``, in order.
    """

    __slots__ = (
        "_batch",
        "_i",
        "_on_control",
        "_recv",
        "_replay",
        "_rt",
        "last",
        "taken",
    )

    # A channel carries no exceptions: an upstream failure never surfaces here.
    failed = False

    def __init__(
        self,
        recv: ReceiveChannel[Any],
        rt: NodeRuntime,
        on_control: Callable[[Control], Awaitable[None]] | None = None,
    ) -> None:
        self._recv = recv
        self._rt = rt
        self._on_control = on_control
        self._batch: list[Any] = []
        self._i = 0
        self._replay = False
        self.last: Any = None
        self.taken = 0

    def __aiter__(self) -> ChannelFeed:
        return self

    async def __anext__(self) -> Any:
        if self._replay:
            self._replay = False
            return self.last
        while self._i >= len(self._batch):
            await self._take(await self._receive())
        item = self.last = self._batch[self._i]
        self._i += 1
        self.taken += 1
        return item

    def next_ready(self) -> Any:
        """Return the next item if one is buffered, else `NO_ITEM` (no wait)."""
        if self._replay or self._i >= len(self._batch):
            return NO_ITEM
        item = self.last = self._batch[self._i]
        self._i += 1
        self.taken += 1
        return item

    async def next(self, timeout: float | None) -> Any:  # noqa: ASYNC109
        """Return the next item, or `NO_ITEM` if none came within ``timeout`` s.

        Raises:
            StopAsyncIteration: The input ended.
        """
        if self._replay or self._i < len(self._batch):
            return await self.__anext__()
        # The deadline wakes the receive itself, never cancels the task: this
        # step may be held suspended while the node's earlier items are
        # delivered (`stepping.rebatch`), and a cancel falling due then would
        # hit the delivery. A control message that came is handled in full.
        deadline = (
            None if timeout is None else asyncio.get_running_loop().time() + timeout
        )
        while self._i >= len(self._batch):
            msg = await self._receive(deadline)
            if msg is None:
                return NO_ITEM
            await self._take(msg)
        return await self.__anext__()

    async def _receive(self, deadline: float | None = None) -> Any:
        # Receiving is cancellation-safe: a cancelled receive loses nothing.
        try:
            if deadline is None:
                return await self._recv.receive()
            return await self._recv.receive_until(deadline)
        except EndOfStream:
            raise StopAsyncIteration from None

    async def _take(self, msg: Any) -> None:
        if type(msg) is list:
            self._rt.took(len(msg))
            self._batch = msg
            self._i = 0
        elif isinstance(msg, Control):
            if self._on_control is not None:
                await self._on_control(msg)
        else:
            text = f"unexpected {type(msg).__name__} on a channel"
            raise TypeError(text)

    def replay(self) -> None:
        """Hand out the last item again (the node failed on it and restarts)."""
        self._replay = True

    async def aclose(self) -> None:
        """Release the channel: its producers learn nobody will read more."""
        self._recv.close()
