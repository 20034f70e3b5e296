"""``join.changelog``: a stream joined to a table kept as a changelog, bounded by time.

The regular (non-windowed) join of SQL engines, as Nexmark q3 needs it
(``auction JOIN person ON seller = person.id``), with its state bounded by
event time instead of growing for ever:

* ``right`` is a **table** keyed by ``right_key``: a row replaces the
  key's earlier row (the one with the later event time wins; an older one
  is stale and goes to the ``error`` port);
* ``left`` is a **stream** of facts: each item joins its key's row, now if
  the row is held, or when it comes;
* the output is a **changelog** keyed by the left item: ``upsert`` when a
  left item gets or changes its match, preceded by a ``retract`` of the
  old pair when the row it had joined is replaced.

Why this form and not a symmetric window (``join.window``): the pairs of a
regular join have no time bound of their own (a seller opens auctions long
after signing up), so a window either misses pairs or holds everything.
Here each side is kept for its own **retention** past its event time,
measured on the *other* input's watermark, which is what bounds the state:
a row is kept while left items may still refer to it
(``right_retention_ms``), a left item while its row may still come or
change (``left_retention_ms``).

State (plain values, in ``ctx.state``, so that checkpoints snapshot it):

* ``buckets``: slot -> ``[key, row, row_time, row_seq, lefts]``, ``row``
  None until a row comes, ``lefts`` a dict seq -> ``[time, item]``;
  invariant: while ``row`` is set, every left item of the bucket has been
  joined with it (emitted), else every one waits for a row;
* ``queues``: per side, ``[expires_at, seq, slot]`` in arrival order, and
  ``heads``: how many of each queue are gone; an entry whose item was
  replaced or evicted meanwhile is skipped;
* ``tops``: per side, the latest event time seen; ``seq``: the next number.

Times arrive nearly in order, so expiry walks each queue from its head
(first in, first out); an entry stuck behind a later one is freed when that
one is (kept longer, never dropped early).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Annotated, Any

import msgspec

from ..core.expr import Expr, expr_function
from ..core.node import node
from ._bounds import (
    DEFAULT_MAX_KEYS,
    OnMaxKeys,
    check_max_keys,
    note_eviction,
    over_max_keys,
)
from ._queued_join import QueuedJoin, event_time, run_join
from ._rescaling import rescale_queued_join
from .join import SIDES, _slot

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from ..core.node import NodeContext

__all__ = ["Changelog", "changelog_join"]

# Bucket fields.
_KEY, _ROW, _ROW_TIME, _ROW_SEQ, _LEFTS = range(5)

_Ms = Annotated[int, msgspec.Meta(ge=0)]


class Changelog(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Config of ``join.changelog``.

    Attributes:
        left_key: The join key of a ``left`` (stream) item, CEL over ``x``.
        right_key: The key of a ``right`` (table) row, its primary key.
        left_time: The event time of a ``left`` item, epoch ms, CEL over ``x``.
        right_time: The event time of a ``right`` row, epoch ms.
        left_retention_ms: How long after its time a left item is kept
            (against the right input's watermark): it joins a row that comes
            meanwhile, and follows the row's replacements.
        right_retention_ms: How long after its time a row is kept (against
            the left input's watermark): left items that come meanwhile
            join it.
        allowed_lateness_ms: How far behind the latest time seen on its own
            input an item may arrive and still be joined; a later one goes
            to the ``error`` port.
        max_keys: Most keys held (a row or waiting left items); null:
            unbounded.
        on_max_keys: At a new key past ``max_keys``: ``fail`` stops the run
            (`flowstream.errors.StateLimitError`); ``evict_oldest`` forgets
            the key updated longest ago (its row and left items, emitting
            nothing), counted in the state (``evicted``).
    """

    left_key: Expr
    right_key: Expr
    left_time: Expr
    right_time: Expr
    left_retention_ms: _Ms
    right_retention_ms: _Ms
    allowed_lateness_ms: _Ms = 0
    max_keys: int | None = DEFAULT_MAX_KEYS
    on_max_keys: OnMaxKeys = "fail"

    def __post_init__(self) -> None:
        check_max_keys(self.max_keys)


class _ChangelogJoin(QueuedJoin):
    def __init__(self, config: Changelog, ctx: NodeContext) -> None:
        super().__init__(
            ctx,
            (expr_function(config.left_key), expr_function(config.right_key)),
            (expr_function(config.left_time), expr_function(config.right_time)),
            config.allowed_lateness_ms,
        )
        self.retention = (config.left_retention_ms, config.right_retention_ms)
        self.max_keys = config.max_keys
        self.evict = config.on_max_keys == "evict_oldest"

    def held(self) -> tuple[int, int]:
        """How many rows and left items the state holds now."""
        rows = lefts = 0
        for bucket in self.buckets.values():
            rows += bucket[_ROW_SEQ] is not None
            lefts += len(bucket[_LEFTS])
        return rows, lefts

    def _bucket(self, slot: str | int, key: Any) -> list[Any]:
        buckets = self.buckets
        bucket = buckets.get(slot)
        if bucket is not None:
            if self.evict:  # least recently updated first
                del buckets[slot]
                buckets[slot] = bucket
            return bucket
        bucket = buckets[slot] = [key, None, None, None, {}]
        max_keys = self.max_keys
        if max_keys is not None and len(buckets) > max_keys:
            if not self.evict:
                del buckets[slot]
                raise over_max_keys(max_keys, "a table row or waiting items")
            del buckets[next(iter(buckets))]
            note_eviction(self.ctx, max_keys, "key (its row and left items)")
        return bucket

    def push(self, side: int, batch: list[Any]) -> list[Any]:
        out: list[Any] = []
        name = SIDES[side]
        key_of, time_of = self.keys[side], self.times[side]
        dead_letter = self.ctx.dead_letter
        retention = self.retention[side]
        queue = self.queues[side]
        top = self.tops[side]
        late = -math.inf if top is None else top - self.lateness
        # An item the other side's watermark already passed (plus retention)
        # is joined with what is held but not kept.
        gone = self.watermark(1 - side) - retention
        seq = self.state["seq"]
        moved = False
        for x in batch:
            try:
                key = key_of(x)
                slot = key if type(key) is int else _slot(key)
                t = time_of(x)
                if type(t) is not int:
                    t = event_time(t, f"{name}_time")
            except Exception as exc:
                dead_letter(x, f"cannot compute the {name} key or time: {exc}")
                continue
            if t < late:
                reason = (
                    f"late: event time {t} is more than allowed_lateness_ms "
                    f"behind the latest {name} time {top}"
                )
                dead_letter(x, reason)
                continue
            if side == 0:
                bucket: list[Any] | None
                if t >= gone:
                    bucket = self._bucket(slot, key)
                    bucket[_LEFTS][seq] = [t, x]
                    queue.append([t + retention, seq, slot])
                else:  # no row to come can reach it: joined, not kept
                    bucket = self.buckets.get(slot)
                if bucket is not None and bucket[_ROW_SEQ] is not None:
                    row = bucket[_ROW]
                    out.append({"key": key, "left": x, "right": row, "op": "upsert"})
            else:
                bucket = self._bucket(slot, key)
                if bucket[_ROW_SEQ] is not None and t < bucket[_ROW_TIME]:
                    reason = (
                        f"stale: event time {t} is older than the row held "
                        f"for key {key!r:.80} (time {bucket[_ROW_TIME]})"
                    )
                    dead_letter(x, reason)
                    continue
                old = bucket[_ROW]
                if bucket[_ROW_SEQ] is None or old != x:
                    k = bucket[_KEY]
                    for _, a in bucket[_LEFTS].values():
                        if bucket[_ROW_SEQ] is not None:
                            out.append(
                                {"key": k, "left": a, "right": old, "op": "retract"}
                            )
                        out.append({"key": k, "left": a, "right": x, "op": "upsert"})
                bucket[_ROW] = x
                bucket[_ROW_TIME] = t
                bucket[_ROW_SEQ] = seq
                queue.append([t + retention, seq, slot])
            seq += 1
            if top is None or t > top:
                top = t
                late = t - self.lateness
                moved = True
        self.state["seq"] = seq
        if moved:
            self.tops[side] = top
            self.expire(1 - side)
        return out

    def drop(self, side: int, seq: int, slot: str | int) -> None:
        """A left item goes alone; a row goes with its bucket.

        The left items a row joined go with it: nothing can change their
        pairs any more (a row that comes for the key later starts afresh).
        """
        buckets = self.buckets
        bucket = buckets.get(slot)
        if bucket is None:
            return  # evicted, or gone with its row
        if side == 0:
            if bucket[_LEFTS].pop(seq, None) is not None and (
                bucket[_ROW_SEQ] is None and not bucket[_LEFTS]
            ):
                del buckets[slot]
        elif bucket[_ROW_SEQ] == seq:
            del buckets[slot]


@node(
    "join.changelog",
    config=Changelog,
    ports=lambda c: (SIDES, ()),
    batched=True,
    aligned=True,
    rescale=rescale_queued_join,
)
async def changelog_join(
    *inputs: AsyncIterator[list[Any]], config: Changelog, ctx: NodeContext
) -> AsyncIterator[list[Any]]:
    """Join a ``left`` stream to a ``right`` table (a changelog), bounded by time.

    ``right`` items are the rows of a table keyed by ``right_key``: a row
    replaces its key's row unless it is older (by ``right_time``; a stale
    row goes to the ``error`` port). Each ``left`` item joins the row of its
    ``left_key``. Emits a changelog of the join, one pair per left item:
    ``{"key": k, "left": l, "right": r, "op": "upsert"}`` when the left item
    arrives and its row is held, or when the row arrives after it; when a
    held row is replaced, each left item joined with it emits ``{..., "right":
    old, "op": "retract"}`` then the upsert with the new row (a row equal
    to the held one emits nothing). The last upsert of each left item is
    its current pair: a keyed sink (by a field of ``left``) applies it, an
    aggregate with ``changelog: true`` takes the retracts back.

    Memory, bounded by event time: a row is kept until the left input's
    watermark (its latest time minus ``allowed_lateness_ms``; +inf once it
    ended) passes the row's time plus ``right_retention_ms``; a left item
    until the right input's watermark passes its time plus
    ``left_retention_ms``. When a row goes, the left items it joined go
    with it (their pairs stand; a row that comes for the key later starts
    afresh). About ``retention + lateness`` of each input is held, up to
    ``max_keys`` keys (then ``on_max_keys``); if one input stalls, the
    other's items wait for it.

    Exact: with no late items, each left item ends joined with the latest
    row of its key (the unbounded regular join) whenever that row's time is
    within ``[left time - right_retention_ms, left time +
    left_retention_ms]``; outside, a pair may be missed. Retention is a
    promise about the data, like allowed lateness. A late item (more than
    ``allowed_lateness_ms`` behind its input's latest time) goes to the
    ``error`` port, as does one whose key or time cannot be computed: its
    partners may be gone already. Stream-safe.

    Example:
        ``{id: sellers, type: join.changelog, config: {left_key: x.seller,
        right_key: x.id, left_time: x.t, right_time: x.t,
        left_retention_ms: 1000, right_retention_ms: 60000}}`` turns
        ``{left: [{id: 7, seller: 1, t: 5}], right: [{id: 1, name: Ann, t:
        0}]}`` into ``[{key: 1, left: {id: 7, seller: 1, t: 5}, right: {id:
        1, name: Ann, t: 0}, op: upsert}]``.
    """
    async for out in run_join(_ChangelogJoin(config, ctx), inputs):
        yield out
