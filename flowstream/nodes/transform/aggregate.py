"""Keyed aggregates: ``transform.scan`` (running) and ``transform.reduce`` (at the end).

They keep their accumulators in the node state (``ctx.state``), changed only
after an item has been fully processed, so a failed item leaves no trace.
"""

from __future__ import annotations

import copy
import math
from typing import TYPE_CHECKING, Any

import msgspec

from ...core.expr import Expr, FnRef, expr_function, resolve_callable
from ...core.node import node
from .._bounds import (
    DEFAULT_MAX_KEYS,
    OnMaxKeys,
    check_max_keys,
    note_eviction,
    over_max_keys,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from ...core.node import NodeContext
from ._rescaling import rescale_accs
from ._shared import _describe, _identity, _slot, _unslot

# --- scan and reduce -----------------------------------------------------------

OPS = ("count", "sum", "min", "max", "mean", "first", "last", "collect")
"""The built-in aggregate operations of ``transform.scan`` and ``transform.reduce``."""

RETRACTABLE = ("count", "sum", "mean")
"""The ops that can take a value back (``changelog: true``)."""


class Aggregate(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Config of ``transform.scan`` and ``transform.reduce``.

    Set exactly one of ``op`` or ``fn``. Items are grouped by ``key`` (a CEL
    expression), or by the ``key`` of keyed records (``keyed: true``, the
    shape ``transform.key_by`` emits), or not at all (one global group, whose
    key is null).

    Attributes:
        op: ``count``, ``sum``, ``min``, ``max``, ``mean``, ``first``,
            ``last`` or ``collect`` (the values in a list).
        fn: A reducer ``"module:attr"``, called as ``fn(acc, value)``; it must
            return a new accumulator rather than change ``acc`` in place (the
            accumulator is emitted, and emitted items are immutable).
        initial: The accumulator a new key starts with, for ``fn``.
        key: The grouping key, a CEL expression over the item ``x``.
        keyed: Items are ``{"key": k, "value": v}`` records: group by ``k``
            and aggregate ``v``.
        value: What is aggregated, a CEL expression over the item ``x`` (the
            record's ``value`` when ``keyed``). Not evaluated by ``count``.
        max_keys: Most keys held at once (default 1,000,000; null:
            unbounded, which validation warns about in stream mode).
        on_max_keys: At a new key past ``max_keys``: ``fail`` stops the run
            (`flowstream.errors.StateLimitError`); ``evict_oldest`` forgets
            the key updated longest ago (``scan``: its next item starts
            afresh; ``reduce``: its aggregate is emitted at once, with
            ``evicted: true``), counted in the state (``evicted``).
        changelog: The input is a changelog (what ``transform.aggregate``
            emits): an item whose ``op`` field is ``retract`` takes its
            value back out of its key's aggregate; any other item adds it.
            For ``count``, ``sum`` and ``mean``; a key whose items were all
            taken back is forgotten.
        retract: ``transform.aggregate`` only: emit the key's previous value
            as a ``retract`` record before each ``upsert`` (what a downstream
            aggregate with ``changelog: true`` needs); false: upserts only
            (what a keyed sink needs).
    """

    op: str | None = None
    fn: FnRef | None = None
    initial: Any = None
    key: Expr | None = None
    keyed: bool = False
    value: Expr = "x"
    max_keys: int | None = DEFAULT_MAX_KEYS
    on_max_keys: OnMaxKeys = "fail"
    changelog: bool = False
    retract: bool = True

    def __post_init__(self) -> None:
        check_max_keys(self.max_keys)
        if self.changelog and self.op not in RETRACTABLE:
            msg = (
                f"changelog: true needs an op that can take a value back "
                f"({', '.join(RETRACTABLE)}); got {self.op or self.fn!r}"
            )
            raise ValueError(msg)
        if (self.op is None) == (self.fn is None):
            msg = f"set exactly one of 'op' ({', '.join(OPS)}) or 'fn' ('module:attr')"
            raise ValueError(msg)
        if self.op is not None and self.op not in OPS:
            msg = f"op must be one of {', '.join(OPS)}; got {self.op!r}"
            raise ValueError(msg)
        if self.initial is not None and self.fn is None:
            msg = "'initial' is only used with 'fn'"
            raise ValueError(msg)
        if self.keyed and self.key is not None:
            msg = "set 'key' or 'keyed: true', not both ('keyed' reads record keys)"
            raise ValueError(msg)


_NEW: Any = object()  # marks a key seen for the first time


def _grouping(config: Aggregate) -> Callable[[Any], tuple[Any, Any]]:
    """Return ``item -> (key, value)`` as the config describes."""
    if config.op == "count":
        value: Callable[[Any], Any] = _none
    elif config.value == "x":
        value = _identity
    else:
        value = expr_function(config.value)
    if config.keyed:

        def keyed(x: Any) -> tuple[Any, Any]:
            if type(x) is not dict or "key" not in x or "value" not in x:
                msg = (
                    "keyed: true needs records {key: ..., value: ...} "
                    f"(from transform.key_by), got {_describe(x)}"
                )
                raise TypeError(msg)
            return x["key"], value(x["value"])

        return keyed
    if config.key is not None:
        key = expr_function(config.key)
        return lambda x: (key(x), value(x))
    return lambda x: (None, value(x))


def _none(x: Any) -> None:
    return None


def _number(v: Any) -> Any:
    if type(v) is not int and type(v) is not float:
        msg = f"mean needs numbers, got {_describe(v)}"
        raise TypeError(msg)
    return v


def _step(config: Aggregate, *, in_place: bool) -> Callable[[Any, Any], Any]:
    """Return ``(acc or _NEW, value) -> new acc``; never changes state itself.

    ``in_place`` allows mutating a ``collect`` list (``reduce`` emits it only
    at the end); ``scan`` emits every accumulator, so it builds a new one.
    """
    if config.fn is not None:
        reducer = resolve_callable(config.fn)
        initial = config.initial
        return lambda acc, v: reducer(copy.deepcopy(initial) if acc is _NEW else acc, v)
    op = config.op
    if op == "count":
        return lambda acc, v: 1 if acc is _NEW else acc + 1
    if op == "sum":
        return lambda acc, v: v if acc is _NEW else acc + v
    if op == "min":
        return lambda acc, v: v if acc is _NEW or v < acc else acc
    if op == "max":
        return lambda acc, v: v if acc is _NEW or v > acc else acc
    if op == "mean":
        # [sum, count]: plain values, so the state stays encodable.
        return lambda acc, v: (
            [_number(v), 1] if acc is _NEW else [acc[0] + _number(v), acc[1] + 1]
        )
    if op == "first":
        return lambda acc, v: v if acc is _NEW else acc
    if op == "last":
        return lambda acc, v: v
    if in_place:

        def append(acc: Any, v: Any) -> Any:
            if acc is _NEW:
                return [v]
            acc.append(v)
            return acc

        return append
    return lambda acc, v: [v] if acc is _NEW else [*acc, v]


def _finish(config: Aggregate) -> Callable[[Any], Any]:
    if config.op == "mean":
        return lambda acc: acc[0] / acc[1]
    return _identity


@node("transform.scan", config=Aggregate, rescale=rescale_accs)
async def scan(
    inp: AsyncIterator[Any], *, config: Aggregate, ctx: NodeContext
) -> AsyncIterator[Any]:
    """Keep a running aggregate per key; emit ``{"key": k, "value": acc}`` per item.

    Stream-safe: it emits on every item; its memory grows with the number
    of distinct keys, up to ``max_keys`` (then ``on_max_keys``). The
    accumulators live in the node's state (a failed item leaves them as they
    were, and they survive the node's restart).

    Example:
        ``{id: totals, type: transform.scan, config: {op: sum, key: "x.k",
        value: "x.n"}}`` turns ``[{k: a, n: 1}, {k: b, n: 5}, {k: a, n: 2}]``
        into ``[{key: a, value: 1}, {key: b, value: 5}, {key: a, value: 3}]``.
    """
    group = _grouping(config)
    step = _step(config, in_place=False)
    finish = _finish(config)
    accs: dict[str | int, Any] = ctx.state.get("accs")
    if accs is None:
        accs = ctx.state["accs"] = {}
    max_keys = config.max_keys
    if max_keys is None:
        async for x in inp:
            key, v = group(x)
            slot = _slot(key)
            acc = accs[slot] = step(accs.get(slot, _NEW), v)
            yield {"key": key, "value": finish(acc)}
        return
    evict = config.on_max_keys == "evict_oldest"
    async for x in inp:
        key, v = group(x)
        slot = _slot(key)
        acc = step(accs.get(slot, _NEW), v)
        if evict:
            accs.pop(slot, None)  # least recently updated first
        accs[slot] = acc
        if len(accs) > max_keys:
            if not evict:
                del accs[slot]
                raise over_max_keys(max_keys, "an accumulator")
            del accs[next(iter(accs))]
            note_eviction(ctx, max_keys, "key's accumulator")
        yield {"key": key, "value": finish(acc)}


def _changelog_step(op: str | None) -> Callable[[Any, Any, int], Any]:
    """``(acc or _NEW, value, +1 or -1) -> new acc``; None once nothing is left.

    Accumulators: ``count`` a number of items, ``sum`` and ``mean``
    ``[sum, count]``; the count says when every item was taken back.
    """
    if op == "count":

        def count(acc: Any, v: Any, sign: int) -> Any:
            n = sign if acc is _NEW else acc + sign
            return _taken_back(n, n)

        return count

    def total(acc: Any, v: Any, sign: int) -> Any:
        v = _number(v)
        if acc is _NEW:
            return _taken_back([v * sign, sign], sign)
        n = acc[1] + sign
        return _taken_back([acc[0] + v * sign, n], n)

    return total


def _taken_back(acc: Any, n: int) -> Any:
    if n > 0:
        return acc
    if n == 0:
        return None
    msg = "a retract of a value that was never added (the changelog is not whole)"
    raise ValueError(msg)


def _changelog_finish(op: str | None) -> Callable[[Any], Any]:
    if op == "sum":
        return lambda acc: acc[0]
    if op == "mean":
        return lambda acc: acc[0] / acc[1]
    return _identity


def _sign(x: Any) -> int:
    return -1 if type(x) is dict and x.get("op") == "retract" else 1


class _Keyed:
    """Accumulators per key in the node state, folded an item at a time.

    `fold` changes the state only once the item has been fully processed,
    so that a failed item leaves no trace.
    """

    def __init__(self, config: Aggregate, ctx: NodeContext, *, in_place: bool):
        self.ctx = ctx
        self.group = _grouping(config)
        self.changelog = config.changelog
        op = config.op
        self.step = _step(config, in_place=in_place)
        self.retracting = _changelog_step(op)
        self.finish = _changelog_finish(op) if config.changelog else _finish(config)
        accs: dict[str | int, Any] | None = ctx.state.get("accs")
        if accs is None:
            accs = ctx.state["accs"] = {}
        self.accs = accs
        self.max_keys = config.max_keys
        self.evict = config.on_max_keys == "evict_oldest"

    def fold(self, x: Any) -> tuple[Any, Any, Any, Any]:
        """Fold ``x`` into its key's accumulator.

        Returns:
            ``(key, previous acc or _NEW, new acc or None if the key is
            gone, (evicted slot, its acc) or None)``.

        Raises:
            StateLimitError: A new key past ``max_keys`` (``on_max_keys:
                fail``).
        """
        accs = self.accs
        key, v = self.group(x)
        slot = _slot(key)
        old = accs.get(slot, _NEW)
        if self.changelog:
            acc = self.retracting(old, v, _sign(x))
        else:
            acc = self.step(old, v)
        if acc is None:
            del accs[slot]
            return key, old, None, None
        if self.evict:
            accs.pop(slot, None)  # least recently updated first
        accs[slot] = acc
        evicted = None
        if self.max_keys is not None and len(accs) > self.max_keys:
            if not self.evict:
                del accs[slot]
                raise over_max_keys(self.max_keys, "an accumulator")
            oldest = next(iter(accs))
            evicted = oldest, accs.pop(oldest)
        return key, old, acc, evicted


@node("transform.reduce", config=Aggregate, needs_end=True, rescale=rescale_accs)
async def reduce(
    inp: AsyncIterator[Any], *, config: Aggregate, ctx: NodeContext
) -> AsyncIterator[Any]:
    """Aggregate per key; at end of input emit one ``{"key": k, "value": acc}`` each.

    Needs end of input: nothing is emitted before the input ends (so it cannot
    follow an unbounded source in stream mode; `transform.aggregate` is the
    updating form that can), except a key evicted past ``max_keys``
    (``on_max_keys: evict_oldest``), emitted at once with ``evicted: true``.
    Keys come out in the order they were first seen (last updated, with
    ``evict_oldest``); an empty input emits nothing. Configured like
    ``transform.scan``; with ``changelog: true`` it folds a changelog (the
    ``retract``/``upsert`` records of ``transform.aggregate``) into the
    final aggregates.

    Example:
        ``{id: totals, type: transform.reduce, config: {op: sum, key: "x.k",
        value: "x.n"}}`` turns ``[{k: a, n: 1}, {k: b, n: 5}, {k: a, n: 2}]``
        into ``[{key: a, value: 3}, {key: b, value: 5}]``.
    """
    keyed = _Keyed(config, ctx, in_place=True)
    finish = keyed.finish
    max_keys = config.max_keys
    if not config.changelog and (max_keys is None or config.on_max_keys == "fail"):
        # The usual case: one loop, the bound checked only at a new key.
        group, step, accs = keyed.group, keyed.step, keyed.accs
        limit = math.inf if max_keys is None else max_keys
        async for x in inp:
            key, v = group(x)
            slot = key if type(key) is int else _slot(key)
            old = accs.get(slot, _NEW)
            acc = step(old, v)
            if old is _NEW and len(accs) >= limit:
                raise over_max_keys(max_keys or 0, "an accumulator")
            accs[slot] = acc
    else:
        fold = keyed.fold
        async for x in inp:
            evicted = fold(x)[3]
            if evicted is not None:
                oldest, acc = evicted
                note_eviction(ctx, max_keys or 0, "key's aggregate")
                yield {"key": _unslot(oldest), "value": finish(acc), "evicted": True}
    for slot, acc in keyed.accs.items():
        yield {"key": _unslot(slot), "value": finish(acc)}


@node("transform.aggregate", config=Aggregate)
async def aggregate(
    inp: AsyncIterator[Any], *, config: Aggregate, ctx: NodeContext
) -> AsyncIterator[Any]:
    """Aggregate per key, emitting the changes: an updating result (a changelog).

    The stream-safe form of ``transform.reduce``: each item that changes
    its key's aggregate emits ``{"key": k, "value": new, "op": "upsert"}``,
    preceded (with ``retract: true``, the default) by ``{"key": k, "value":
    old, "op": "retract"}`` when the key had a value. An item that leaves the
    aggregate as it was (a bid below the maximum) emits nothing. The last
    upsert of each key is the value ``transform.reduce`` gives at the end.

    Who applies the updates: another aggregate with ``changelog: true``
    (``transform.aggregate`` or ``transform.reduce``) takes the retracted
    values back (``count``, ``sum``, ``mean``); a keyed sink applies the
    upserts (``sqlite.sink`` with ``key: key`` keeps one row per key, the
    latest value; use ``retract: false`` or filter on ``x.op == "upsert"``).
    A key whose items were all retracted emits only its retract; a keyed
    sink keeps its last row (sinks here apply no deletes).

    Configured like ``transform.scan`` (a failing item is handled as there).
    Memory: one accumulator per key, up
    to ``max_keys`` (then ``on_max_keys``; an evicted key emits its
    retract, with ``evicted: true``).

    Example:
        ``{id: best, type: transform.aggregate, config: {op: max, key: "x.k",
        value: "x.n"}}`` turns ``[{k: a, n: 1}, {k: a, n: 0}, {k: a, n: 2}]``
        into ``[{key: a, value: 1, op: upsert}, {key: a, value: 1, op:
        retract}, {key: a, value: 2, op: upsert}]``.
    """
    keyed = _Keyed(config, ctx, in_place=False)
    fold, finish = keyed.fold, keyed.finish
    retract = config.retract
    async for x in inp:
        key, old, acc, evicted = fold(x)
        before = _NEW if old is _NEW else finish(old)
        after = _NEW if acc is None else finish(acc)
        if before is _NEW or after is _NEW or before != after:
            if retract and before is not _NEW:
                yield {"key": key, "value": before, "op": "retract"}
            if after is not _NEW:
                yield {"key": key, "value": after, "op": "upsert"}
        if evicted is not None:
            note_eviction(ctx, config.max_keys or 0, "key's aggregate")
            if retract:
                slot, gone = evicted
                yield {
                    "key": _unslot(slot),
                    "value": finish(gone),
                    "op": "retract",
                    "evicted": True,
                }
