"""Transforms: per-item functions, records, keyed aggregates, batching, rates.

The stateless 1-in/1-out nodes here (map, filter, flat_map, select, key_by,
json_parse, json_stringify) also carry a batch kernel: in a fused chain the
runtime applies the kernels to whole batches in one task.

The stateful ones (scan, reduce, batch, dedupe) keep what they remember in the
node state (``ctx.state``), in plain msgspec-encodable values. A node whose
code fails on an item is restarted on the rest of its input, and the state is
what carries over; every stateful node here changes its state only after an
item has been fully processed, so a failed item leaves no trace.
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import math
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import msgspec

from ..core.codec import decode_json, encode_json
from ..core.expr import Expr, FnRef, expr_function, resolve_callable
from ..core.node import ItemKernel, Kernel, node
from ..core.values import Json
from ..runtime.feeds import NO_ITEM, next_item
from ._bounds import (
    DEFAULT_MAX_KEYS,
    OnMaxKeys,
    check_max_keys,
    note_eviction,
    over_max_keys,
)
from ._common import ItemFunction, item_function

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from ..core.node import NodeContext

__all__ = [
    "OPS",
    "batch",
    "dedupe",
    "filter_items",
    "flat_map",
    "map_async",
    "json_parse",
    "json_stringify",
    "key_by",
    "map_items",
    "reduce",
    "scan",
    "select",
    "throttle",
]


def _map_kernel(config: ItemFunction) -> Kernel:
    return ItemKernel("map", item_function(config))


def _filter_kernel(config: ItemFunction) -> Kernel:
    return ItemKernel("filter", item_function(config))


@node("transform.map", config=ItemFunction, kernel=_map_kernel)
async def map_items(
    inp: AsyncIterator[Any], *, config: ItemFunction
) -> AsyncIterator[Any]:
    """Replace each item by ``expr`` (CEL over ``x``) or ``fn(x)``. Stream-safe.

    Example:
        ``{id: double, type: transform.map, config: {expr: "x * 2"}}`` turns
        ``1, 2, 3`` into ``2, 4, 6``.
    """
    f = item_function(config)
    async for x in inp:
        yield f(x)


@node("transform.filter", config=ItemFunction, kernel=_filter_kernel)
async def filter_items(
    inp: AsyncIterator[Any], *, config: ItemFunction
) -> AsyncIterator[Any]:
    """Keep the items for which ``expr`` or ``fn(x)`` is true. Stream-safe.

    Example:
        ``{id: odd, type: transform.filter, config: {expr: "x % 2 == 1"}}``
        keeps ``1, 3`` of ``1, 2, 3``.
    """
    f = item_function(config)
    async for x in inp:
        if f(x):
            yield x


# --- shared helpers ------------------------------------------------------------


def _identity(x: Any) -> Any:
    return x


def _describe(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"


def _check_finite(name: str, value: float | None, *, minimum: float = 0.0) -> None:
    """Reject NaN, infinity and values at or below ``minimum`` (if not None)."""
    if value is not None and not (minimum < value < math.inf):
        msg = f"{name} must be a finite number > {minimum:g}, got {value}"
        raise ValueError(msg)


def _slot(key: Any) -> str | int:
    """The state-dict key for a grouping key: itself if a str or int, else JSON.

    Node state holds only msgspec-encodable dicts keyed by str or int, so other
    keys (None, bools, floats, lists, records) are stored under their JSON text
    behind a NUL, which no ordinary string key starts with. This also keeps
    ``True``, ``1`` and ``1.0`` apart, as JSON does.
    """
    kind = type(key)
    if kind is int or (kind is str and not key.startswith("\x00")):
        return key  # type: ignore[no-any-return]
    return "\x00" + encode_json(key).decode()


def _unslot(slot: str | int) -> Any:
    if type(slot) is str and slot.startswith("\x00"):
        return decode_json(slot[1:])
    return slot


# --- flat_map ------------------------------------------------------------------


def _flat_map_function(config: ItemFunction) -> Callable[[Any], Any]:
    f = item_function(config)

    def elements(x: Any) -> list[Any]:
        result = f(x)
        if type(result) is list:
            return result
        if isinstance(result, str | bytes | bytearray | dict) or not hasattr(
            result, "__iter__"
        ):
            msg = f"flat_map needs a list from its function, got {_describe(result)}"
            raise TypeError(msg)
        # Drained here, so an iterator failing halfway emits none of the item.
        return list(result)

    return elements


def _flat_map_kernel(config: ItemFunction) -> Kernel:
    elements = _flat_map_function(config)

    def kernel(batch: list[Any]) -> list[Any]:
        out: list[Any] = []
        for x in batch:
            out.extend(elements(x))
        return out

    return kernel


@node("transform.flat_map", config=ItemFunction, kernel=_flat_map_kernel)
async def flat_map(
    inp: AsyncIterator[Any], *, config: ItemFunction
) -> AsyncIterator[Any]:
    """Replace each item by the elements of the list ``expr``/``fn`` returns.

    Stream-safe. An empty list drops the item; a result that is not a list (a
    string or a mapping, say) is a failure of that item.

    Example:
        ``{id: pairs, type: transform.flat_map, config: {expr: "[x, x * 10]"}}``
        turns ``[1, 2]`` into ``[1, 10, 2, 20]``.
    """
    elements = _flat_map_function(config)
    async for x in inp:
        for y in elements(x):
            yield y


# --- select --------------------------------------------------------------------


class Select(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Config of ``transform.select``; the output holds exactly these fields.

    Attributes:
        pick: Fields of the input copied as they are.
        rename: ``{old: new}``: the input's field ``old`` copied as ``new``.
        fields: ``{name: expr}``: fields computed with CEL over the item ``x``.
        keep_others: Also copy every input field not renamed (then ``pick``
            is pointless and refused).
    """

    pick: list[str] | None = None
    rename: dict[str, str] | None = None
    fields: dict[str, Expr] | None = None
    keep_others: bool = False

    def __post_init__(self) -> None:
        if not (self.pick or self.rename or self.fields or self.keep_others):
            msg = "set at least one of 'pick', 'rename' or 'fields'"
            raise ValueError(msg)
        if self.keep_others and self.pick:
            msg = "'pick' with 'keep_others: true' is redundant: every field is kept"
            raise ValueError(msg)
        names = [
            *(self.pick or ()),
            *(self.rename or {}).values(),
            *(self.fields or {}),
        ]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            msg = (
                f"output field {', '.join(map(repr, twice))} is set twice "
                "(by 'pick', 'rename' or 'fields')"
            )
            raise ValueError(msg)


def _select_function(config: Select) -> Callable[[Any], dict[str, Any]]:
    pick = tuple(config.pick or ())
    rename = tuple((config.rename or {}).items())
    computed = tuple(
        (name, expr_function(source)) for name, source in (config.fields or {}).items()
    )
    keep = config.keep_others
    renamed = frozenset(old for old, _ in rename)

    def select(x: Any) -> dict[str, Any]:
        if not isinstance(x, dict):
            msg = f"select needs a record (a mapping), got {_describe(x)}"
            raise TypeError(msg)
        # Always a new dict: the input may be shared with other branches.
        out = {k: v for k, v in x.items() if k not in renamed} if keep else {}
        try:
            for name in pick:
                out[name] = x[name]
            for old, new in rename:
                out[new] = x[old]
        except KeyError as exc:
            msg = f"the record has no field {exc.args[0]!r}"
            raise LookupError(msg) from None
        for name, f in computed:
            out[name] = f(x)
        return out

    return select


def _select_kernel(config: Select) -> Kernel:
    select = _select_function(config)
    return lambda batch: list(map(select, batch))


@node("transform.select", config=Select, kernel=_select_kernel)
async def select(inp: AsyncIterator[Any], *, config: Select) -> AsyncIterator[Any]:
    """Build a new record per item: picked, renamed and computed fields.

    Stream-safe. The input is never changed. A missing picked or renamed
    field, a non-record item or a failing expression is a failure of that
    item.

    Example:
        ``{id: shape, type: transform.select, config: {pick: [id],
        fields: {name: "x.user.name", total: "x.price * x.qty"}}}``
        turns ``[{id: 7, user: {name: ada}, price: 2, qty: 3}]``
        into ``[{id: 7, name: ada, total: 6}]``.
    """
    f = _select_function(config)
    async for x in inp:
        yield f(x)


# --- key_by --------------------------------------------------------------------


class KeyBy(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Config of ``transform.key_by``: set exactly one of ``key`` or ``field``.

    Attributes:
        key: A CEL expression over the item ``x`` giving its key.
        field: A top-level field of the item to use as its key.
    """

    key: Expr | None = None
    field: str | None = None

    def __post_init__(self) -> None:
        if (self.key is None) == (self.field is None):
            msg = "set exactly one of 'key' (a CEL expression) or 'field' (a name)"
            raise ValueError(msg)


def _key_function(config: KeyBy) -> Callable[[Any], Any]:
    if config.key is not None:
        return expr_function(config.key)
    name = config.field

    def field(x: Any) -> Any:
        try:
            return x[name]
        except (KeyError, TypeError, IndexError):
            msg = f"key_by: {_describe(x)} has no field {name!r}"
            raise LookupError(msg) from None

    return field


def _key_by_function(config: KeyBy) -> Callable[[Any], dict[str, Any]]:
    key = _key_function(config)
    return lambda x: {"key": key(x), "value": x}


def _key_by_kernel(config: KeyBy) -> Kernel:
    keyed = _key_by_function(config)
    return lambda batch: list(map(keyed, batch))


@node("transform.key_by", config=KeyBy, kernel=_key_by_kernel)
async def key_by(inp: AsyncIterator[Any], *, config: KeyBy) -> AsyncIterator[Any]:
    """Wrap each item as a keyed record ``{"key": k, "value": item}``. Stream-safe.

    This is the shape keyed nodes accept (``transform.scan`` and
    ``transform.reduce`` with ``keyed: true``): the key travels with the item,
    so several downstream nodes can group by it without each computing it.

    Example:
        ``{id: by_user, type: transform.key_by, config: {key: "x.user"}}``
        turns ``[{user: ada, n: 1}]``
        into ``[{key: ada, value: {user: ada, n: 1}}]``.
    """
    f = _key_by_function(config)
    async for x in inp:
        yield f(x)


# --- scan and reduce -----------------------------------------------------------

OPS = ("count", "sum", "min", "max", "mean", "first", "last", "collect")
"""The built-in aggregate operations of ``transform.scan`` and ``transform.reduce``."""


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
    """

    op: str | None = None
    fn: FnRef | None = None
    initial: Any = None
    key: Expr | None = None
    keyed: bool = False
    value: Expr = "x"
    max_keys: int | None = DEFAULT_MAX_KEYS
    on_max_keys: OnMaxKeys = "fail"

    def __post_init__(self) -> None:
        check_max_keys(self.max_keys)
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


@node("transform.scan", config=Aggregate)
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


@node("transform.reduce", config=Aggregate, needs_end=True)
async def reduce(
    inp: AsyncIterator[Any], *, config: Aggregate, ctx: NodeContext
) -> AsyncIterator[Any]:
    """Aggregate per key; at end of input emit one ``{"key": k, "value": acc}`` each.

    Needs end of input: nothing is emitted before the input ends (so it cannot
    follow an unbounded source in stream mode), except a key evicted past
    ``max_keys`` (``on_max_keys: evict_oldest``), emitted at once with
    ``evicted: true``. Keys come out in the order they were first seen (last
    updated, with ``evict_oldest``); an empty input emits nothing.
    Configured like ``transform.scan``.

    Example:
        ``{id: totals, type: transform.reduce, config: {op: sum, key: "x.k",
        value: "x.n"}}`` turns ``[{k: a, n: 1}, {k: b, n: 5}, {k: a, n: 2}]``
        into ``[{key: a, value: 3}, {key: b, value: 5}]``.
    """
    group = _grouping(config)
    step = _step(config, in_place=True)
    finish = _finish(config)
    accs: dict[str | int, Any] = ctx.state.get("accs")
    if accs is None:
        accs = ctx.state["accs"] = {}
    max_keys = config.max_keys
    evict = config.on_max_keys == "evict_oldest"
    async for x in inp:
        key, v = group(x)
        slot = _slot(key)
        acc = step(accs.get(slot, _NEW), v)
        if evict:
            accs.pop(slot, None)  # least recently updated first
        accs[slot] = acc
        if max_keys is not None and len(accs) > max_keys:
            if not evict:
                del accs[slot]
                raise over_max_keys(max_keys, "an accumulator")
            oldest = next(iter(accs))
            acc = accs.pop(oldest)
            note_eviction(ctx, max_keys, "key's aggregate")
            yield {"key": _unslot(oldest), "value": finish(acc), "evicted": True}
    for slot, acc in accs.items():
        yield {"key": _unslot(slot), "value": finish(acc)}


# --- batch ---------------------------------------------------------------------


class Batch(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Config of ``transform.batch``; set ``size``, ``interval_ms`` or both.

    Attributes:
        size: Emit a batch when it holds this many items.
        interval_ms: Emit a batch this long after its first item arrived
            (processing time), even if no more input comes.
    """

    size: int | None = None
    interval_ms: float | None = None

    def __post_init__(self) -> None:
        if self.size is None and self.interval_ms is None:
            msg = "set 'size', 'interval_ms' or both"
            raise ValueError(msg)
        if self.size is not None and self.size < 1:
            msg = f"size must be >= 1, got {self.size}"
            raise ValueError(msg)
        _check_finite("interval_ms", self.interval_ms)


@node("transform.batch", config=Batch, timed=True)
async def batch(
    inp: AsyncIterator[Any], *, config: Batch, ctx: NodeContext
) -> AsyncIterator[list[Any]]:
    """Group items into lists of ``size`` items and/or spanning ``interval_ms``.

    Stream-safe: with ``interval_ms`` a partial batch is emitted on time even
    when no more input comes; at end of input the remainder is emitted. Order
    is kept; every item is in exactly one batch.

    Example:
        ``{id: chunks, type: transform.batch, config: {size: 2}}``
        turns ``[1, 2, 3]`` into ``[[1, 2], [3]]``.
    """
    loop = asyncio.get_running_loop()
    size = config.size
    interval = None if config.interval_ms is None else config.interval_ms / 1000.0
    state = ctx.state
    # The open batch lives in the node state (with its start time), so it is
    # not lost if the node is restarted.
    if "open" not in state:
        state["open"] = []
        state["since"] = 0.0
    while True:
        buf: list[Any] = state["open"]
        timeout = None
        if interval is not None and buf:
            timeout = state["since"] + interval - loop.time()
            if timeout <= 0:
                state["open"] = []
                yield buf
                continue
        try:
            item = await next_item(inp, timeout)
        except StopAsyncIteration:
            break
        if item is NO_ITEM:
            continue  # the deadline passed: flushed at the top of the loop
        if not buf:
            state["since"] = loop.time()
        buf.append(item)
        if size is not None and len(buf) >= size:
            # A new list: the emitted one must never change again.
            state["open"] = []
            yield buf
    buf = state["open"]
    if buf:
        state["open"] = []
        yield buf


# --- dedupe --------------------------------------------------------------------


class Dedupe(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Config of ``transform.dedupe``; set ``max_keys``, ``ttl_ms`` or both.

    Attributes:
        key: What makes items duplicates, a CEL expression over the item
            ``x``; the item itself when omitted.
        max_keys: Remember at most this many keys; past it, the key first seen
            longest ago is forgotten.
        ttl_ms: Forget a key this long after the item that was kept for it
            (processing time); later duplicates are not kept alive.
    """

    key: Expr | None = None
    max_keys: int | None = None
    ttl_ms: float | None = None

    def __post_init__(self) -> None:
        if self.max_keys is None and self.ttl_ms is None:
            msg = (
                "set 'max_keys', 'ttl_ms' or both: dedupe must forget keys "
                "to run in bounded memory"
            )
            raise ValueError(msg)
        if self.max_keys is not None and self.max_keys < 1:
            msg = f"max_keys must be >= 1, got {self.max_keys}"
            raise ValueError(msg)
        _check_finite("ttl_ms", self.ttl_ms)


@node("transform.dedupe", config=Dedupe)
async def dedupe(
    inp: AsyncIterator[Any], *, config: Dedupe, ctx: NodeContext
) -> AsyncIterator[Any]:
    """Keep the first item of each key; drop its duplicates within the horizon.

    Stream-safe, in bounded memory: a key is remembered until ``ttl_ms`` after
    its kept item and/or until ``max_keys`` newer keys pushed it out; an item
    whose key is no longer remembered is kept as a new first. Dropping
    duplicates is the node's purpose, not a failure: they are counted in the
    node state (``dropped``) and reported at end of input in a
    ``duplicates_dropped`` event.

    Example:
        ``{id: unique, type: transform.dedupe, config: {max_keys: 1000}}``
        turns ``[a, b, a, c, b]`` into ``[a, b, c]``.
    """
    key = _identity if config.key is None else expr_function(config.key)
    max_keys = config.max_keys
    ttl = None if config.ttl_ms is None else config.ttl_ms / 1000.0
    loop = asyncio.get_running_loop()
    state = ctx.state
    # Key -> time its kept item arrived, oldest first. An OrderedDict: it
    # drops its oldest entry in O(1), and encodes as a plain mapping.
    seen: OrderedDict[str | int, float] = state.get("seen")
    if seen is None:
        seen = state["seen"] = OrderedDict()
        state["dropped"] = 0
    async for x in inp:
        slot = _slot(key(x))
        now = loop.time()
        if ttl is not None:
            while seen:
                oldest, since = next(iter(seen.items()))
                if now - since < ttl:
                    break
                del seen[oldest]
        if slot in seen:
            state["dropped"] += 1
            continue
        seen[slot] = now
        if max_keys is not None and len(seen) > max_keys:
            seen.popitem(last=False)
        yield x
    if state["dropped"]:
        ctx.event("duplicates_dropped", {"count": state["dropped"]})


# --- throttle ------------------------------------------------------------------


class Throttle(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Config of ``transform.throttle``: at most ``rate`` items per ``per_ms``.

    Attributes:
        rate: Items let through per ``per_ms`` on average.
        per_ms: The period ``rate`` is counted over, in milliseconds.
        burst: How many items may pass at once after a quiet spell (the token
            bucket's size); ``rate`` when omitted.
    """

    rate: int
    per_ms: float = 1000.0
    burst: int | None = None

    def __post_init__(self) -> None:
        if self.rate < 1:
            msg = f"rate must be >= 1, got {self.rate}"
            raise ValueError(msg)
        _check_finite("per_ms", self.per_ms)
        if self.burst is not None and self.burst < 1:
            msg = f"burst must be >= 1, got {self.burst}"
            raise ValueError(msg)


@node("transform.throttle", config=Throttle)
async def throttle(inp: AsyncIterator[Any], *, config: Throttle) -> AsyncIterator[Any]:
    """Let items through at ``rate`` per ``per_ms`` (a token bucket); never drops.

    Stream-safe. A token is added every ``per_ms / rate`` ms up to ``burst``;
    each item takes one, waiting for it if there is none. While it waits it
    reads no input, so upstream slows down (backpressure). Processing time.

    Example:
        ``{id: gently, type: transform.throttle, config: {rate: 2, per_ms: 1000}}``
        turns ``[1, 2, 3]`` into ``[1, 2, 3]`` (the third half a second later).
    """
    loop = asyncio.get_running_loop()
    size = float(config.burst or config.rate)
    per_second = config.rate / (config.per_ms / 1000.0)
    # The bucket is plain local state: nothing in this loop can fail on an
    # item, so the generator is never restarted and has nothing to resume.
    tokens = size
    last = loop.time()
    async for x in inp:
        now = loop.time()
        tokens = min(size, tokens + (now - last) * per_second)
        last = now
        if tokens < 1.0:
            await asyncio.sleep((1.0 - tokens) / per_second)
            now = loop.time()
            # The loop may wake a clock tick early: the wait earned the token.
            tokens = max(1.0, min(size, tokens + (now - last) * per_second))
            last = now
        tokens -= 1.0
        yield x


# --- JSON ----------------------------------------------------------------------


def _parse(x: Any) -> Any:
    if not isinstance(x, bytes | str | Json):
        msg = f"json_parse needs bytes, str or Json, got {_describe(x)}"
        raise TypeError(msg)
    return decode_json(x)


def _json_parse_kernel(config: None) -> Kernel:
    return lambda batch: list(map(_parse, batch))


@node("transform.json_parse", kernel=_json_parse_kernel)
async def json_parse(inp: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """Decode each JSON document (bytes, str or `Json`) into plain values.

    Stream-safe. A malformed document is a failure of that item: under
    ``continue_on_error`` it goes to the dead letters with msgspec's message
    (which says where the document breaks). Takes no config.

    Example:
        ``{id: parse, type: transform.json_parse}``
        turns ``['{"a": 1}', "[1, 2]"]`` into ``[{a: 1}, [1, 2]]``.
    """
    async for x in inp:
        yield _parse(x)


class JsonStringify(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True
):
    """Config of ``transform.json_stringify``.

    Attributes:
        as_bytes: Emit UTF-8 bytes instead of str.
    """

    as_bytes: bool = False


def _stringify_function(config: JsonStringify) -> Callable[[Any], Any]:
    if config.as_bytes:
        return encode_json
    return lambda x: encode_json(x).decode()


def _json_stringify_kernel(config: JsonStringify) -> Kernel:
    f = _stringify_function(config)
    return lambda batch: list(map(f, batch))


@node("transform.json_stringify", config=JsonStringify, kernel=_json_stringify_kernel)
async def json_stringify(
    inp: AsyncIterator[Any], *, config: JsonStringify
) -> AsyncIterator[Any]:
    """Encode each value as compact JSON text (str, or bytes with ``as_bytes``).

    Stream-safe. Bytes inside values are written as ``{"$bytes": base64}``
    and `Json` values are spliced in as they are. A value with no JSON form
    (NaN, a Stream, an arbitrary object) is a failure of that item.

    Example:
        ``{id: text, type: transform.json_stringify}``
        turns ``[{a: [1, 2]}]`` into ``['{"a":[1,2]}']``.
    """
    f = _stringify_function(config)
    async for x in inp:
        yield f(x)


class MapAsyncConfig(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True
):
    """Config of ``transform.map_async``.

    Attributes:
        fn: The callable, ``"package.module:attr"``: ``async def f(x)`` (or a
            plain function, or one returning an awaitable).
    """

    fn: FnRef


class MapAsync:
    """Replace each item by ``await fn(x)``: one call per item. Stream-safe.

    With the node's ``concurrency: N`` (beside ``config``) up to N calls run
    at once, and ``ordered: false`` emits each result as soon as it is ready
    (else in input order). A call's failure goes through the node's retry
    policy and error handling for that item alone. Under stream checkpoints,
    the calls in flight when a barrier comes finish before it passes.

    Example:
        ``{id: fetch, type: transform.map_async, concurrency: 20, config:
        {fn: "mymodule:lookup"}}`` calls ``lookup`` for up to 20 items at once.
    """

    def __init__(self, config: MapAsyncConfig) -> None:
        self._fn = fn = resolve_callable(config.fn)
        if inspect.iscoroutinefunction(fn):
            # The callable itself is the call: no wrapping coroutine per item.
            self.execute = fn  # type: ignore[method-assign]

    async def initialize(self, ctx: NodeContext) -> None:
        """Nothing to open."""

    async def shutdown(self) -> None:
        """Nothing to close."""

    async def execute(self, inp: Any) -> Any:
        """Call ``fn`` on one item and return its result."""
        result = self._fn(inp)
        if inspect.isawaitable(result):
            result = await result
        return result


map_async = node("transform.map_async", config=MapAsyncConfig)(MapAsync)
