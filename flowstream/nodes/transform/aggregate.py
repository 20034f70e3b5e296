"""Keyed aggregates: ``transform.scan`` (running) and ``transform.reduce`` (at the end).

They keep their accumulators in the node state (``ctx.state``), changed only
after an item has been fully processed, so a failed item leaves no trace.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from ...core.expr import Expr, FnRef, expr_function, resolve_callable
from ...core.node import ItemFailed, node
from .._aggregates import (
    APPEND,
    EMPTY,
    FAST_OPS,
    KeyTable,
    Kind,
    custom,
    describe,
    key_of,
    kind,
    retracting,
    slot_of,
)
from .._bounds import DEFAULT_MAX_KEYS, OnMaxKeys, check_max_keys
from ._rescaling import rescale_accs
from ._shared import _identity

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from ...core.node import NodeContext

# --- scan and reduce -----------------------------------------------------------

OPS = ("count", "sum", "min", "max", "mean", "first", "last", "collect")
"""The built-in aggregate operations of ``transform.scan`` and ``transform.reduce``."""

RETRACTABLE = ("count", "sum", "mean")
"""The ops that can take a value back (``changelog: true``)."""

NOTHING: dict[str, Any] = {"count": 0, "sum": 0, "mean": None}
"""What each retractable op gives over no values (``transform.scan``)."""


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
            taken back is forgotten (``scan`` emits the op over no values
            for it: 0, or null for ``mean``).
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
                    f"(from transform.key_by), got {describe(x)}"
                )
                raise TypeError(msg)
            return x["key"], value(x["value"])

        return keyed
    if config.key is not None:
        key = expr_function(config.key)
        return lambda x: (key(x), value(x))
    return lambda x: (None, value(x))


def _slotted(config: Aggregate) -> Callable[[Any], tuple[str | int, Any]]:
    """``item -> (slot, value)``: `_grouping` with the key as its state slot.

    Built per grouping form, so that a batch fold pays one call per item.
    """
    group = _grouping(config)
    if config.keyed and config.op != "count" and config.value == "x":
        # The shape transform.key_by (or a map) gives: no call for the value.

        def record(x: Any) -> tuple[str | int, Any]:
            if type(x) is not dict or "key" not in x or "value" not in x:
                return group(x)  # raises, saying what a keyed record is
            key = x["key"]
            return (key if type(key) is int else slot_of(key)), x["value"]

        return record
    if config.keyed or config.key is None:

        def pair(x: Any) -> tuple[str | int, Any]:
            key, v = group(x)
            return (key if type(key) is int else slot_of(key)), v

        return pair
    key = expr_function(config.key)
    if config.op == "count":
        return lambda x: (slot_of(key(x)), None)
    if config.value == "x":
        return lambda x: (slot_of(key(x)), x)
    value = expr_function(config.value)
    return lambda x: (slot_of(key(x)), value(x))


def _none(x: Any) -> None:
    return None


def _kind(config: Aggregate, *, in_place: bool) -> Kind:
    if config.fn is not None:
        return custom(resolve_callable(config.fn), config.initial)
    assert config.op is not None  # the config checked op and fn
    return kind(config.op, in_place=in_place)


def _sign(x: Any) -> int:
    return -1 if type(x) is dict and x.get("op") == "retract" else 1


class _Keyed:
    """Accumulators per key in the node state (a `KeyTable`), folded an item at a time.

    `fold` changes the state only once the item has been fully processed,
    so that a failed item leaves no trace.
    """

    def __init__(
        self, config: Aggregate, ctx: NodeContext, *, in_place: bool, one: str
    ) -> None:
        self.group = _grouping(config)
        self.changelog = config.changelog
        k = _kind(config, in_place=in_place)
        self.step, self.add = k.step, k.add
        result = k.result
        if config.changelog:
            assert config.op is not None  # the config checked it can retract
            self.retracting, result = retracting(config.op)
        self.finish: Callable[[Any], Any] = lambda acc: result(acc, 0)
        self.table = KeyTable.in_state(
            ctx, "accs", config.max_keys, config.on_max_keys, "an accumulator", one
        )

    def fold(self, x: Any) -> tuple[Any, Any, Any, Any]:
        """Fold ``x`` into its key's accumulator.

        Returns:
            ``(key, previous acc or EMPTY, new acc or None if the key is
            gone, (evicted slot, its acc) or None)``.

        Raises:
            StateLimitError: A new key past ``max_keys`` (``on_max_keys:
                fail``).
        """
        key, v = self.group(x)
        slot = slot_of(key)
        table = self.table
        old = table.entries.get(slot, EMPTY)
        if self.changelog:
            acc = self.retracting(old, v, _sign(x))
            if acc is None:
                del table.entries[slot]
                return key, old, None, None
        else:
            acc = self.step(old, v, 0)
            if acc is APPEND:
                assert self.add is not None
                self.add(old, v, 0)
                acc = old
        return key, old, acc, table.put(slot, acc)


@node("transform.scan", config=Aggregate, batched=True, rescale=rescale_accs)
async def scan(
    inp: AsyncIterator[list[Any]], *, config: Aggregate, ctx: NodeContext
) -> AsyncIterator[list[Any]]:
    """Keep a running aggregate per key; emit ``{"key": k, "value": acc}`` per item.

    Stream-safe: it emits on every item; its memory grows with the number
    of distinct keys, up to ``max_keys`` (then ``on_max_keys``). The
    accumulators live in the node's state (a failed item leaves them as they
    were, and they survive the node's restart). With ``changelog: true`` a
    ``retract`` record takes its value back and the key's new running value
    is emitted, so the last value of each key is ``transform.reduce``'s.

    Example:
        ``{id: totals, type: transform.scan, config: {op: sum, key: "x.k",
        value: "x.n"}}`` turns ``[{k: a, n: 1}, {k: b, n: 5}, {k: a, n: 2}]``
        into ``[{key: a, value: 1}, {key: b, value: 5}, {key: a, value: 3}]``.
    """
    keyed = _Keyed(config, ctx, in_place=False, one="key's accumulator")
    fold, finish = keyed.fold, keyed.finish

    def handle(x: Any, out: list[Any]) -> None:
        key, _, acc, _ = fold(x)
        out.append({"key": key, "value": finish(acc)})

    if config.changelog:
        # A key whose values were all taken back is forgotten; its running
        # value is then the op's over no values.
        nothing = NOTHING[config.op or ""]

        def handle(x: Any, out: list[Any]) -> None:
            key, _, acc, _ = fold(x)
            out.append({"key": key, "value": nothing if acc is None else finish(acc)})

    async for out in _each(inp, handle):
        yield out


async def _each(
    inp: AsyncIterator[list[Any]], handle: Callable[[Any, list[Any]], None]
) -> AsyncIterator[list[Any]]:
    """Handle each batch's items in order; yield what they gave, a batch each.

    An item that fails ends the batch: what the items before it gave is
    yielded, then `ItemFailed` names it (``handle`` leaves no trace of a
    failure), so the runtime applies the node's policies to it alone.
    """
    async for batch in inp:
        out: list[Any] = []
        i = 0
        try:
            for i, x in enumerate(batch):  # noqa: B007
                handle(x, out)
        except Exception as exc:
            if out:
                yield out
            raise ItemFailed(i) from exc
        if out:
            yield out


@node(
    "transform.reduce",
    config=Aggregate,
    needs_end=True,
    batched=True,
    rescale=rescale_accs,
)
async def reduce(
    inp: AsyncIterator[list[Any]], *, config: Aggregate, ctx: NodeContext
) -> AsyncIterator[list[Any]]:
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
    keyed = _Keyed(config, ctx, in_place=True, one="key's aggregate")
    finish, table = keyed.finish, keyed.table
    if not config.changelog and not table.evict:
        # The usual case: the whole batch in one loop, the bound checked only
        # at a new key; count/sum/min/max with no step call per item.
        pairs = _slotted(config)
        op = config.op if config.op in FAST_OPS else None
        step, add = keyed.step, keyed.add
        async for batch in inp:
            done = (
                table.fold(step, add, pairs, batch)
                if op is None
                else table.fold_op(op, pairs, batch)
            )
            if done < len(batch):
                raise ItemFailed(done) from table.failure
    else:
        fold = keyed.fold

        def handle(x: Any, out: list[Any]) -> None:
            evicted = fold(x)[3]
            if evicted is not None:
                oldest, acc = evicted
                out.append(
                    {"key": key_of(oldest), "value": finish(acc), "evicted": True}
                )

        async for out in _each(inp, handle):
            yield out
    final = [
        {"key": key_of(slot), "value": finish(acc)}
        for slot, acc in table.entries.items()
    ]
    if final:
        yield final


@node("transform.aggregate", config=Aggregate, batched=True, rescale=rescale_accs)
async def aggregate(
    inp: AsyncIterator[list[Any]], *, config: Aggregate, ctx: NodeContext
) -> AsyncIterator[list[Any]]:
    """Aggregate per key, emitting the changes: an updating result (a changelog).

    The stream-safe form of ``transform.reduce``: each item that changes
    its key's aggregate emits ``{"key": k, "value": new, "op": "upsert"}``,
    preceded (with ``retract: true``, the default) by ``{"key": k, "value":
    old, "op": "retract"}`` when the key had a value. An item that leaves the
    aggregate as it was (a bid below the maximum) emits nothing. The last
    upsert of each key is the value ``transform.reduce`` gives at the end.

    Who applies the updates: another aggregate with ``changelog: true``
    (``transform.aggregate``, ``transform.reduce`` or ``transform.scan``)
    takes the retracted values back (``count``, ``sum``, ``mean``); a keyed
    sink applies the upserts (``sqlite.sink`` with ``key: key`` keeps one row
    per key, the latest value; use ``retract: false`` or filter on ``x.op ==
    "upsert"``).
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
    keyed = _Keyed(config, ctx, in_place=False, one="key's aggregate")
    fold, finish = keyed.fold, keyed.finish
    retract = config.retract

    def handle(x: Any, out: list[Any]) -> None:
        key, old, acc, evicted = fold(x)
        before = EMPTY if old is EMPTY else finish(old)
        after = EMPTY if acc is None else finish(acc)
        if before is EMPTY or after is EMPTY or before != after:
            if retract and before is not EMPTY:
                out.append({"key": key, "value": before, "op": "retract"})
            if after is not EMPTY:
                out.append({"key": key, "value": after, "op": "upsert"})
        if evicted is not None and retract:
            slot, gone = evicted
            out.append(
                {
                    "key": key_of(slot),
                    "value": finish(gone),
                    "op": "retract",
                    "evicted": True,
                }
            )

    async for out in _each(inp, handle):
        yield out
