"""Joins of two streams: by key within a time window, and lookups in a table.

Both node types read their two inputs as they arrive (`merge_batches`, one
wait per batch) and keep what they must remember
in the node's state (``ctx.state``) as plain values, so that it survives a
restart of the node and can be snapshot by checkpoints.

An item whose key or time cannot be computed goes straight to the ``error``
port (dead letters) with the reason: evaluating the same expression again
would fail again, so the retry policy does not apply to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import math
from typing import TYPE_CHECKING, Annotated, Any, Literal

import msgspec

from ..core.expr import Expr, expr_function
from ..core.node import node
from ._aggregates import KeyTable
from ._bounds import (
    DEFAULT_MAX_KEYS,
    OnMaxKeys,
    check_max_keys,
)
from ._rescaling import rescale_window_join
from ._windowing import track_watermark
from .control import merge_batches

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Sequence

    from ..core.node import NodeContext

__all__ = ["lookup_join", "window_join"]

SIDES = ("left", "right")
UNMATCHED_PORT = "unmatched"

# Map keys sorted, so that equal keys are one slot whatever their order.
_slot_encoder = msgspec.json.Encoder(order="deterministic")


def _slot(key: Any) -> str | int:
    """The state-dict key for a join key: itself if a str or int, else JSON.

    Node state holds only dicts keyed by str or int, so other keys (None,
    bools, floats, lists, records) are stored under their JSON text behind a
    NUL, which no ordinary string key starts with. ``True``, ``1`` and ``1.0``
    stay three different keys.
    """
    kind = type(key)
    if kind is int or (kind is str and not key.startswith("\x00")):
        return key  # type: ignore[no-any-return]
    return "\x00" + _slot_encoder.encode(key).decode()


def _reason(what: str, exc: Exception) -> str:
    return f"cannot compute {what}: {type(exc).__name__}: {exc}"


# --- window --------------------------------------------------------------------


class Window(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Config of ``join.window``.

    Attributes:
        left_key: The join key of a ``left`` item, CEL over ``x``.
        right_key: The join key of a ``right`` item, CEL over ``x``.
        window_ms: Two items join when their times differ by at most this.
        left_time: The event time of a ``left`` item in epoch milliseconds,
            CEL over ``x`` (``x.date_time``, a plain field lookup, is much
            faster than CEL arithmetic); with ``right_time``. Unset (both):
            processing time, the moment the node reads the item.
        right_time: The event time of a ``right`` item in epoch milliseconds.
        allowed_lateness_ms: Event time only: how far behind the latest time
            seen on its own input an item may arrive and still be joined.
        emit_unmatched: Send items that expire without any match to port
            ``unmatched`` as ``{"side", "key", "item"}``.
    """

    left_key: Expr
    right_key: Expr
    window_ms: float
    left_time: Expr | None = None
    right_time: Expr | None = None
    allowed_lateness_ms: float = 0.0
    emit_unmatched: bool = False

    def __post_init__(self) -> None:
        # Written as "not ..." so that NaN is rejected too.
        if not (0 <= self.window_ms < math.inf):
            msg = f"window_ms must be a finite number >= 0, got {self.window_ms}"
            raise ValueError(msg)
        if (self.left_time is None) != (self.right_time is None):
            msg = (
                "set both left_time and right_time (event time) or neither "
                "(processing time)"
            )
            raise ValueError(msg)
        if not (0 <= self.allowed_lateness_ms < math.inf):
            msg = (
                "allowed_lateness_ms must be a finite number >= 0, "
                f"got {self.allowed_lateness_ms}"
            )
            raise ValueError(msg)
        if self.allowed_lateness_ms and self.left_time is None:
            msg = "allowed_lateness_ms needs event time (left_time and right_time)"
            raise ValueError(msg)


def _window_ports(config: Window) -> tuple[Sequence[str], Sequence[str]]:
    return SIDES, (UNMATCHED_PORT,) if config.emit_unmatched else ()


def _event_time(value: Any) -> float:
    if type(value) is not int and type(value) is not float:
        msg = (
            "an event time must be a number of epoch milliseconds, "
            f"got {type(value).__name__}"
        )
        raise TypeError(msg)
    if not math.isfinite(value):
        msg = f"an event time must be finite, got {value}"
        raise ValueError(msg)
    return value


class _WindowJoin:
    """The join's bookkeeping over the node state.

    State (plain values, in ``ctx.state``):

    * ``buckets``: slot -> ``{"key": k, "entries": [left, right]}``, each side
      a dict seq -> ``[time, item, matched]``;
    * ``heaps``: per side, a heap of ``[time, seq, slot]`` (expiry order);
    * ``tops``: per side, the latest event time seen (None before any);
    * ``seq``: the next entry number.

    Invariant: an entry of one side is kept while an item still to come on
    the other side may fall within the window of it. The other side's items
    are at least its watermark (latest time minus allowed lateness; +inf once
    it ended; now, in processing time), so an entry expires when its time
    plus the window is below that watermark.
    """

    def __init__(self, config: Window, ctx: NodeContext) -> None:
        self.ctx = ctx
        # Times, the window and the lateness in milliseconds (event times are
        # epoch ms; processing time is the loop's clock in ms).
        self.window = config.window_ms
        self.lateness = config.allowed_lateness_ms
        self.emit_unmatched = config.emit_unmatched
        self.keys = (expr_function(config.left_key), expr_function(config.right_key))
        self.times: tuple[Callable[[Any], Any], Callable[[Any], Any]] | None = None
        if config.left_time is not None and config.right_time is not None:
            self.times = (
                expr_function(config.left_time),
                expr_function(config.right_time),
            )
        self.ended = [False, False]
        self.now = -math.inf
        state = ctx.state
        if "buckets" not in state:
            state["buckets"] = {}
            state["heaps"] = [[], []]
            state["tops"] = [None, None]
            state["seq"] = 0
        self.state = state
        self.buckets: dict[str | int, dict[str, Any]] = state["buckets"]
        self.heaps: list[list[list[Any]]] = state["heaps"]
        self.tops: list[float | None] = state["tops"]
        if self.times is not None:
            track_watermark(ctx, self.joint_watermark)

    def joint_watermark(self) -> float:
        """The node's watermark: the lower of its two inputs'."""
        return min(self.watermark(0), self.watermark(1))

    def watermark(self, side: int) -> float:
        """No item still to come on ``side`` has a time below this."""
        if self.ended[side]:
            return math.inf
        if self.times is None:
            return self.now
        top = self.tops[side]
        return -math.inf if top is None else top - self.lateness

    def push(self, side: int, batch: list[Any]) -> list[Any]:
        out: list[Any] = []
        if self.times is None:
            self.now = asyncio.get_running_loop().time() * 1000.0
            self.expire()
        for x in batch:
            self.add(side, x, out)
        return out

    def add(self, side: int, x: Any, out: list[Any]) -> None:
        name = SIDES[side]
        try:
            key = self.keys[side](x)
            slot = _slot(key)
        except Exception as exc:
            self.ctx.dead_letter(x, _reason(f"{name}_key", exc))
            return
        if self.times is None:
            t = self.now
        else:
            try:
                t = _event_time(self.times[side](x))
            except Exception as exc:
                self.ctx.dead_letter(x, _reason(f"{name}_time", exc))
                return
            if t < self.watermark(side):
                reason = (
                    f"late: event time {t} is more than allowed_lateness_ms "
                    f"behind the latest {name} time {self.tops[side]}"
                )
                self.ctx.dead_letter(x, reason)
                return
        bucket = self.buckets.get(slot)
        matched = False
        if bucket is None:
            bucket = self.buckets[slot] = {"key": key, "entries": [{}, {}]}
        else:
            window = self.window
            for entry in bucket["entries"][1 - side].values():
                if abs(t - entry[0]) <= window:
                    left, right = (x, entry[1]) if side == 0 else (entry[1], x)
                    out.append({"key": bucket["key"], "left": left, "right": right})
                    entry[2] = matched = True
        seq = self.state["seq"]
        self.state["seq"] = seq + 1
        bucket["entries"][side][seq] = [t, x, matched]
        heapq.heappush(self.heaps[side], [t, seq, slot])
        if self.times is not None:
            top = self.tops[side]
            if top is None or t > top:
                # Expiry follows the watermarks only: nothing to do unless
                # this one moved (an entry already below the limit goes at
                # the next move, or at the end).
                self.tops[side] = t
                self.expire()

    def end(self, side: int) -> None:
        self.ended[side] = True
        self.expire()

    def expire(self) -> None:
        for side in (0, 1):
            limit = self.watermark(1 - side) - self.window
            heap = self.heaps[side]
            while heap and heap[0][0] < limit:
                _, seq, slot = heapq.heappop(heap)
                bucket = self.buckets[slot]
                entries = bucket["entries"]
                _, item, matched = entries[side].pop(seq)
                if not entries[0] and not entries[1]:
                    del self.buckets[slot]
                if self.emit_unmatched and not matched:
                    self.ctx.emit(
                        UNMATCHED_PORT,
                        {"side": SIDES[side], "key": bucket["key"], "item": item},
                    )


@node(
    "join.window",
    config=Window,
    ports=_window_ports,
    batched=True,
    aligned=True,
    rescale=rescale_window_join,
)
async def window_join(
    *inputs: AsyncIterator[list[Any]], config: Window, ctx: NodeContext
) -> AsyncIterator[list[Any]]:
    """Inner-join ``left`` and ``right`` items with equal keys close in time.

    Emits ``{"key": k, "left": l, "right": r}`` for every pair whose keys are
    equal (as JSON values: ``1`` and ``1.0`` differ) and whose times differ by
    at most ``window_ms``, once, when the second of the two arrives. Times
    are event times (``left_time``/``right_time``, epoch milliseconds) or, if
    unset, processing time (when the node reads the item).

    Memory: each input's watermark is its latest event time minus
    ``allowed_lateness_ms`` (+inf once it ended). An item is kept only while
    it is within ``window_ms`` of the *other* input's watermark, so the state
    holds about ``window_ms + allowed_lateness_ms`` of each input; if one
    input stalls or has not started, the other's items are kept until it
    moves on or ends. In processing time the state holds the last
    ``window_ms`` of items, expired whenever a batch arrives or an input ends.

    Exact: with no late items, the output is the nested-loop join of the two
    inputs (order aside). An event-time item more than
    ``allowed_lateness_ms`` behind the latest time seen on its own input is
    late: its partners may be gone, so it goes to the ``error`` port.
    With ``emit_unmatched: true``, items that expire having matched nothing
    go to port ``unmatched`` as ``{"side", "key", "item"}`` (at the latest
    when both inputs end). Stream-safe.

    Example:
        ``{id: pair, type: join.window, config: {left_key: "x.id", right_key:
        "x.id", window_ms: 1000, left_time: "x.t", right_time: "x.t"}}``
        turns ``{left: [{id: 1, t: 0}, {id: 2, t: 5000}], right: [{id: 1,
        t: 500}, {id: 2, t: 9000}]}`` into ``[{key: 1, left: {id: 1, t: 0},
        right: {id: 1, t: 500}}]``.
    """
    join = _WindowJoin(config, ctx)
    async with contextlib.aclosing(merge_batches(inputs)) as merged:
        async for side, batch in merged:
            if batch is None:
                join.end(side)
                yield []  # let the runtime flush what expired (unmatched)
            else:
                yield join.push(side, batch)


# --- lookup --------------------------------------------------------------------

_MISS: Any = object()


class Lookup(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Config of ``join.lookup``.

    Attributes:
        key: The lookup key of an ``in`` item, CEL over ``x``.
        table_key: The key of a ``table`` item, CEL over ``x`` (the item is
            the value). Needed unless ``table`` is set.
        table: A static table (string keys) instead of the ``table`` input.
        merge: Emit the item's fields merged with the match's (both must be
            mappings; the item's own fields win) instead of
            ``{"item": x, "match": v}``.
        miss: ``emit_null`` (emit with ``match: null``, or the item unchanged
            when merging) or ``drop_to_error`` (send the item to ``error``).
        table_first: Read the whole ``table`` input before the first ``in``
            item (for a finite table, as in a DAG run). ``in`` items that
            arrive meanwhile wait in the node, at most ``max_pending``.
        max_pending: With ``table_first``, how many ``in`` items may wait
            for the table to end; one more fails the node, naming the bound.
        max_keys: Most table keys held (default 1,000,000; null: unbounded,
            which validation warns about in stream mode).
        on_max_keys: At a new table key past ``max_keys``: ``fail`` stops
            the run (`flowstream.errors.StateLimitError`); ``evict_oldest``
            forgets the key updated longest ago (its ``in`` items miss from
            then on), counted in the state (``evicted``).
    """

    key: Expr
    table_key: Expr | None = None
    table: dict[str, Any] | None = None
    merge: bool = False
    miss: Literal["emit_null", "drop_to_error"] = "emit_null"
    table_first: bool = False
    max_keys: int | None = DEFAULT_MAX_KEYS
    on_max_keys: OnMaxKeys = "fail"
    max_pending: Annotated[int, msgspec.Meta(ge=0)] = 1_000_000

    def __post_init__(self) -> None:
        check_max_keys(self.max_keys)
        if self.table is None and self.table_key is None:
            msg = "set table_key (to read the table input) or a static table"
            raise ValueError(msg)
        if self.table is not None and self.table_key is not None:
            msg = "set table_key (table input) or table (static), not both"
            raise ValueError(msg)
        if self.table is not None and self.table_first:
            msg = "table_first needs the table input (table_key), not a static table"
            raise ValueError(msg)


def _lookup_ports(config: Lookup) -> tuple[Sequence[str], Sequence[str]]:
    return ("in",) if config.table is not None else ("in", "table"), ()


class _Lookup:
    def __init__(self, config: Lookup, ctx: NodeContext) -> None:
        self.ctx = ctx
        self.key = expr_function(config.key)
        self.table_key = (
            None if config.table_key is None else expr_function(config.table_key)
        )
        self.merge = config.merge
        self.drop = config.miss == "drop_to_error"
        if config.table is not None:
            self.table: dict[Any, Any] = dict(config.table)
        else:
            self.table = ctx.state.get("table")
            if self.table is None:
                self.table = ctx.state["table"] = {}
        # The latest value per key, bounded as every keyed table.
        self.put = KeyTable(
            self.table,
            config.max_keys,
            config.on_max_keys,
            ctx,
            "table values",
            "table key",
        ).put

    def update(self, batch: list[Any]) -> None:
        assert self.table_key is not None
        for x in batch:
            try:
                slot = _slot(self.table_key(x))
            except Exception as exc:
                self.ctx.dead_letter(x, _reason("table_key", exc))
                continue
            self.put(slot, x)

    def enrich(self, batch: list[Any]) -> list[Any]:
        out: list[Any] = []
        for x in batch:
            try:
                key = self.key(x)
                match = self.table.get(_slot(key), _MISS)
            except Exception as exc:
                self.ctx.dead_letter(x, _reason("key", exc))
                continue
            if match is _MISS:
                if self.drop:
                    self.ctx.dead_letter(x, f"no table entry for key {key!r:.80}")
                    continue
                out.append(x if self.merge else {"item": x, "match": None})
            elif not self.merge:
                out.append({"item": x, "match": match})
            elif type(x) is dict and type(match) is dict:
                out.append({**match, **x})
            else:
                reason = (
                    "merge: true needs mappings, got item "
                    f"{type(x).__name__} and match {type(match).__name__}"
                )
                self.ctx.dead_letter(x, reason)
        return out


async def _table_first(
    join: _Lookup,
    inputs: Sequence[AsyncIterator[list[Any]]],
    max_pending: int,
    ctx: NodeContext,
) -> AsyncIterator[list[Any]]:
    # Both inputs are read all along: if ``in`` were left unread until the
    # table ended, a producer feeding both (one source, two branches) would
    # block on the full ``in`` channel and the table would never end.
    pending: list[list[Any]] | None = []
    waiting = 0
    async with contextlib.aclosing(merge_batches(inputs, first=1)) as merged:
        async for side, part in merged:
            if side == 1:
                if part is not None:
                    join.update(part)
                    yield []  # flush dead letters of bad table items
                elif pending is not None:
                    for batch in pending:
                        yield join.enrich(batch)
                    pending = None
            elif part is None:
                continue
            elif pending is None:
                yield join.enrich(part)
            else:
                waiting += len(part)
                if waiting > max_pending:
                    msg = (
                        f"join.lookup {ctx.node_id!r}: more than max_pending="
                        f"{max_pending} 'in' items arrived before the table "
                        "input ended (table_first: true); raise max_pending or "
                        "end the table sooner"
                    )
                    raise RuntimeError(msg)
                pending.append(part)


@node("join.lookup", config=Lookup, ports=_lookup_ports, batched=True, aligned=True)
async def lookup_join(
    *inputs: AsyncIterator[list[Any]], config: Lookup, ctx: NodeContext
) -> AsyncIterator[list[Any]]:
    """Enrich each ``in`` item with the latest ``table`` value under its key.

    The table is the latest item per ``table_key`` from the ``table`` input
    (a later item replaces the value; there are no deletes), or the static
    ``table`` of the config. Emits ``{"item": x, "match": v}`` (``match:
    null`` on a miss), or with ``merge: true`` the match's fields under the
    item's. ``miss: drop_to_error`` sends unmatched items to ``error`` instead.

    Ordering: the two inputs are different channels, so there is no order
    between them but the node's own. A table item applies to every ``in``
    item the node reads after it, never to one read before; when both inputs
    have items ready, table items go first. For a finite table (a DAG run),
    ``table_first: true`` enriches no ``in`` item before the whole table is
    read: the ``in`` items that come meanwhile wait in the node (at most
    ``max_pending``, or the node fails), so both inputs may come from one
    source.

    Memory: one value per distinct table key (in the node state), up to
    ``max_keys`` (then ``on_max_keys``). Stream-safe.

    Example:
        ``{id: names, type: join.lookup, config: {key: "x.user", table:
        {ann: Ann Lee}}}`` turns ``[{user: ann}, {user: bob}]`` into
        ``[{item: {user: ann}, match: Ann Lee}, {item: {user: bob},
        match: null}]``.
    """
    join = _Lookup(config, ctx)
    if len(inputs) == 1:
        # A static table; the lone input may be a fused upstream.
        async for batch in inputs[0]:
            yield join.enrich(batch)
        return
    if config.table_first:
        async for out in _table_first(join, inputs, config.max_pending, ctx):
            yield out
        return
    async with contextlib.aclosing(merge_batches(inputs, first=1)) as merged:
        async for side, part in merged:
            if part is None:
                continue
            if side == 1:
                join.update(part)
                yield []
            else:
                yield join.enrich(part)
