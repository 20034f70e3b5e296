"""What ``join.interval`` and ``join.changelog`` share: state, watermarks, expiry.

Both keep, in ``ctx.state`` (plain values, so checkpoints snapshot it and
`_rescaling.rescale_queued_join` can move it by key):

* ``buckets``: slot -> a list whose first entry is the key (the rest is the
  join's own);
* ``queues``: per side, ``(expires_at, seq, slot)`` in arrival order, and
  ``heads``: how many of each queue are gone;
* ``tops``: per side, the latest event time seen; ``seq``: the next number.

A side's watermark is its latest time minus ``allowed_lateness_ms`` (+inf
once it ended); the node's is the lower of the two. Expiry walks a queue
from its head while the head's time is below the other side's watermark:
times arrive nearly in order, so it is a first-in-first-out pass (no heap),
and an entry stuck behind a later one goes when that one does (kept longer,
never dropped early). What leaving means for a bucket is each join's own
(`QueuedJoin.drop`).
"""

from __future__ import annotations

import contextlib
import math
from typing import TYPE_CHECKING, Any

from ._windowing import track_watermark
from .control import merge_batches

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from ..core.node import NodeContext

__all__ = ["QueuedJoin", "event_time", "run_join"]

_COMPACT = 4096  # drop a queue's gone head once it is this long and half dead


def event_time(value: Any, what: str) -> int | float:
    """``value`` as an event time (epoch ms), or an error naming ``what``."""
    if type(value) is int:
        return value
    if type(value) is not float:
        msg = f"{what} must be a number of epoch ms, got {type(value).__name__}"
        raise TypeError(msg)
    if not math.isfinite(value):
        msg = f"{what} must be finite, got {value}"
        raise ValueError(msg)
    return value


class QueuedJoin:
    """A two-input event-time join whose state expires through per-side queues.

    Subclasses give `push` (a batch of one side in, pairs out) and `drop`
    (what an expired queue entry takes with it).

    Args:
        ctx: The node's context (its state lives in ``ctx.state``).
        keys: Each side's key function (left, right).
        times: Each side's event-time function (left, right).
        lateness: ``allowed_lateness_ms``.
    """

    def __init__(
        self,
        ctx: NodeContext,
        keys: tuple[Callable[[Any], Any], Callable[[Any], Any]],
        times: tuple[Callable[[Any], Any], Callable[[Any], Any]],
        lateness: int,
    ) -> None:
        self.ctx = ctx
        self.keys = keys
        self.times = times
        self.lateness = lateness
        self.ended = [False, False]
        state = ctx.state
        if "buckets" not in state:
            state["buckets"] = {}
            state["queues"] = [[], []]
            state["heads"] = [0, 0]
            state["tops"] = [None, None]
            state["seq"] = 0
        self.state = state
        self.buckets: dict[str | int, list[Any]] = state["buckets"]
        self.queues: list[list[Any]] = state["queues"]
        self.heads: list[int] = state["heads"]
        self.tops: list[int | float | None] = state["tops"]
        track_watermark(ctx, self.joint_watermark)

    def joint_watermark(self) -> float:
        """The node's watermark: the lower of its two inputs'."""
        return min(self.watermark(0), self.watermark(1))

    def watermark(self, side: int) -> float:
        """No item still to come on ``side`` has a time below this."""
        if self.ended[side]:
            return math.inf
        top = self.tops[side]
        return -math.inf if top is None else top - self.lateness

    def push(self, side: int, batch: list[Any]) -> list[Any]:
        """Take a batch of ``side``; return what it joined."""
        raise NotImplementedError

    def drop(self, side: int, seq: int, slot: str | int) -> None:
        """An entry of ``side`` expired: forget what it held."""
        raise NotImplementedError

    def end(self, side: int) -> None:
        """``side`` ended: the other side's entries waiting for it can go."""
        self.ended[side] = True
        self.expire(1 - side)

    def expire(self, side: int) -> None:
        """Drop the entries of ``side`` the other side can no longer reach."""
        limit = self.watermark(1 - side)
        queue = self.queues[side]
        head = self.heads[side]
        n = len(queue)
        drop = self.drop
        while head < n and queue[head][0] < limit:
            _, seq, slot = queue[head]
            head += 1
            drop(side, seq, slot)
        if head >= _COMPACT and head * 2 >= n:
            del queue[:head]
            head = 0
        self.heads[side] = head


async def run_join(
    join: QueuedJoin, inputs: tuple[AsyncIterator[list[Any]], ...]
) -> AsyncIterator[list[Any]]:
    """A join node's body: each side's batches in, their pairs out."""
    async with contextlib.aclosing(merge_batches(inputs)) as merged:
        async for side, batch in merged:
            if batch is None:
                join.end(side)
                yield []
            else:
                yield join.push(side, batch)
