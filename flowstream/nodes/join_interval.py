"""``join.interval``: pair items whose right time falls in an interval of the left.

A ``left`` item at time ``t`` pairs with each ``right`` item of the same key
whose time is in ``[t + lower_ms, end]``, where ``end`` is ``t + upper_ms``
or the item's own end (``left_end``, at most ``t + upper_ms``): Nexmark q4's
"bids made while the auction was open". Unlike ``join.window``'s symmetric
window, each side is kept only as long as the *other* side can still bring a
partner, so the state is bounded by event time.

State (plain values, in ``ctx.state``, so that checkpoints can snapshot it):

* ``buckets``: slot -> ``[key, lefts, rights]``, ``lefts`` a dict seq ->
  ``(t, end, item)``, ``rights`` a dict seq -> item (its time is computed
  again in the rare scan of a key's right items by a later left one);
* ``queues``, ``heads``, ``tops``, ``seq``: as every `_queued_join.QueuedJoin`
  keeps them (expiry by per-side queues, watermarks).

Entries are tuples: the collector stops tracking a tuple of untracked values
(numbers, strings, dicts of them), so the state of a busy join does not make
every garbage collection longer.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import msgspec

from ..core.expr import Expr, expr_function
from ..core.node import node
from ._queued_join import QueuedJoin, event_time, run_join
from ._rescaling import rescale_queued_join
from .join import SIDES, _slot

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from ..core.node import NodeContext

__all__ = ["Interval", "interval_join"]


class Interval(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Config of ``join.interval``.

    Attributes:
        left_key: The join key of a ``left`` item, CEL over ``x``.
        right_key: The join key of a ``right`` item, CEL over ``x``.
        left_time: The event time of a ``left`` item, epoch ms, CEL over ``x``.
        right_time: The event time of a ``right`` item, epoch ms.
        lower_ms: A right item pairs from ``left_time + lower_ms`` on
            (negative: before the left item).
        upper_ms: ... up to ``left_time + upper_ms`` (inclusive), the
            longest interval: it bounds how long a left item is kept.
        left_end: The end of a left item's own interval (epoch ms, CEL over
            ``x``, like Nexmark's ``expires``), if shorter than ``upper_ms``.
            An item whose end is past ``left_time + upper_ms`` goes to the
            ``error`` port (its partners past the bound could be missed).
        allowed_lateness_ms: How far behind the latest time seen on its own
            input an item may arrive and still be joined; a later one goes
            to the ``error`` port.
    """

    left_key: Expr
    right_key: Expr
    left_time: Expr
    right_time: Expr
    upper_ms: int
    lower_ms: int = 0
    left_end: Expr | None = None
    allowed_lateness_ms: int = 0

    def __post_init__(self) -> None:
        if self.upper_ms < self.lower_ms:
            msg = f"upper_ms ({self.upper_ms}) must be >= lower_ms ({self.lower_ms})"
            raise ValueError(msg)
        if self.allowed_lateness_ms < 0:
            msg = f"allowed_lateness_ms must be >= 0, got {self.allowed_lateness_ms}"
            raise ValueError(msg)


class _IntervalJoin(QueuedJoin):
    def __init__(self, config: Interval, ctx: NodeContext) -> None:
        super().__init__(
            ctx,
            (expr_function(config.left_key), expr_function(config.right_key)),
            (expr_function(config.left_time), expr_function(config.right_time)),
            config.allowed_lateness_ms,
        )
        self.lower = config.lower_ms
        self.upper = config.upper_ms
        self.left_end: Callable[[Any], Any] | None = (
            None if config.left_end is None else expr_function(config.left_end)
        )

    def push(self, side: int, batch: list[Any]) -> list[Any]:
        out: list[Any] = []
        append = out.append
        name = SIDES[side]
        key_of, time_of = self.keys[side], self.times[side]
        left_end = self.left_end if side == 0 else None
        dead_letter = self.ctx.dead_letter
        buckets = self.buckets
        lower, upper, lateness = self.lower, self.upper, self.lateness
        queue = self.queues[side]
        top = self.tops[side]
        late = -math.inf if top is None else top - lateness
        seq = self.state["seq"]
        moved = False
        for x in batch:
            try:
                key = key_of(x)
                slot = key if type(key) is int else _slot(key)
                t = time_of(x)
                if type(t) is not int:
                    t = event_time(t, f"{name}_time")
                if left_end is not None:
                    end = event_time(left_end(x), "left_end")
                    if not (t + lower <= end <= t + upper):
                        reason = (
                            f"left_end {end} is not within [left_time + lower_ms, "
                            f"left_time + upper_ms] = [{t + lower}, {t + upper}]"
                        )
                        dead_letter(x, reason)
                        continue
                else:
                    end = t + upper
            except Exception as exc:
                dead_letter(x, f"cannot compute the {name} key or times: {exc}")
                continue
            if t < late:
                reason = (
                    f"late: event time {t} is more than allowed_lateness_ms "
                    f"behind the latest {name} time {top}"
                )
                dead_letter(x, reason)
                continue
            bucket = buckets.get(slot)
            if bucket is None:
                bucket = buckets[slot] = [key, {}, {}]
            if side == 0:
                if bucket[2]:
                    low = t + lower
                    right_time = self.times[1]
                    for b in bucket[2].values():
                        if low <= right_time(b) <= end:
                            append({"key": bucket[0], "left": x, "right": b})
                bucket[1][seq] = (t, end, x)
                queue.append((end, seq, slot))
            else:
                if bucket[1]:
                    for ta, te, a in bucket[1].values():
                        if ta + lower <= t <= te:
                            append({"key": bucket[0], "left": a, "right": x})
                bucket[2][seq] = x  # no tuple: nothing more for the collector
                # A right item matters while a left item at or before
                # t - lower_ms may still come.
                queue.append((t - lower, seq, slot))
            seq += 1
            if top is None or t > top:
                top = t
                late = t - lateness
                moved = True
        self.state["seq"] = seq
        if moved:
            self.tops[side] = top
            self.expire(1 - side)
        return out

    def drop(self, side: int, seq: int, slot: str | int) -> None:
        bucket = self.buckets[slot]
        del bucket[1 + side][seq]
        if not bucket[1] and not bucket[2]:
            del self.buckets[slot]


@node(
    "join.interval",
    config=Interval,
    ports=lambda c: (SIDES, ()),
    batched=True,
    aligned=True,
    rescale=rescale_queued_join,
)
async def interval_join(
    *inputs: AsyncIterator[list[Any]], config: Interval, ctx: NodeContext
) -> AsyncIterator[list[Any]]:
    """Pair items of equal keys whose ``right`` time is in the ``left`` interval.

    Emits ``{"key": k, "left": l, "right": r}`` for every pair with equal
    keys (as JSON values) and ``l.t + lower_ms <= r.t <= end``, where
    ``end`` is ``l.t + upper_ms`` or the left item's own ``left_end``; once,
    when the second of the two arrives. Times are event times in epoch ms.

    Memory: a left item is kept until the right input's watermark (its
    latest time minus ``allowed_lateness_ms``; +inf once it ended) passes
    its end; a right item until the left input's watermark passes its time
    minus ``lower_ms``. In order, with no lateness, a right item is dropped
    as soon as the left input moves past it: the state is about
    ``upper_ms + allowed_lateness_ms`` of left items and
    ``allowed_lateness_ms`` of right ones. If one input stalls, the other's
    items wait for it. Exact: with no late items, the output is the
    nested-loop join (order aside). A late item (more than
    ``allowed_lateness_ms`` behind its input's latest time) goes to the
    ``error`` port, as does one whose key or times cannot be computed.
    Stream-safe.

    Example:
        ``{id: open_bids, type: join.interval, config: {left_key: x.id,
        right_key: x.auction, left_time: x.date_time, right_time:
        x.date_time, left_end: x.expires, upper_ms: 60000}}`` turns ``{left:
        [{id: 1, date_time: 0, expires: 10}], right: [{auction: 1,
        date_time: 5}, {auction: 1, date_time: 11}]}`` into ``[{key: 1,
        left: {id: 1, date_time: 0, expires: 10}, right: {auction: 1,
        date_time: 5}}]``.
    """
    async for out in run_join(_IntervalJoin(config, ctx), inputs):
        yield out
