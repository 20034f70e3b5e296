"""Keyed aggregates: the accumulator kinds and the bounded table of them.

One place for what ``transform.scan`` / ``reduce`` / ``aggregate``, the
window nodes and ``join.lookup`` all keep: a value per key, in the node
state, bounded by ``max_keys``.

* `Kind`: an aggregate operation (``count``, ``sum``, ``min``, ``max``,
  ``mean``, ``first``, ``last``, ``collect``, ``max_rows``, a changelog's
  retractable ``count``/``sum``/``mean``). `kind` returns it in one of two
  flavours: arrival order (the transforms: an accumulator per key, ``first``
  is the first item to arrive) or timestamp order (the windows: an
  accumulator in a window record that counts its items itself, ``first`` is
  the earliest timestamp). The windows' top-N is `flowstream.nodes._topn`.
* `KeyTable`: the per-key table over a dict of the node state, with the
  ``max_keys`` bound and its policy (`flowstream.nodes._bounds`: fail, or
  evict the key updated longest ago). Its snapshot is the dict itself:
  ``{slot: value}``, one entry per key, so that keyed state can be split by
  key (rescaling) and restored as is.
* `slot_of` / `key_of`: how any plain key becomes a state-dict key and back.

Accumulators are plain msgspec-encodable values (they live in the node
state). A step never changes the accumulator it is given (it returns the
new one), except where the caller asks for in-place appends, so that an
item that fails leaves no trace.
"""

from __future__ import annotations

import copy
import operator
from operator import itemgetter
from typing import TYPE_CHECKING, Any, NamedTuple

import msgspec

from ..core.codec import decode_json, encode_json
from ._bounds import OnMaxKeys, note_eviction, over_max_keys

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..core.node import NodeContext

__all__ = [
    "APPEND",
    "EMPTY",
    "FAST_OPS",
    "KeyTable",
    "Kind",
    "custom",
    "describe",
    "key_of",
    "kind",
    "retracting",
    "slot_of",
]

EMPTY: Any = object()
"""The accumulator of a key seen for the first time (never stored)."""

APPEND: Any = object()
"""A step's answer meaning: add the value to the accumulator in place (`Kind.add`)."""

FAST_OPS = ("count", "sum", "min", "max")
"""The ops whose fold `KeyTable.fold_op` inlines (no step call per item)."""

_plain_encoder = msgspec.json.Encoder()


# --- keys ------------------------------------------------------------------------


def slot_of(key: Any) -> str | int:
    """The state-dict key for a grouping key: itself if a str or int, else JSON.

    Node state holds only msgspec-encodable dicts keyed by str or int, so other
    keys (None, bools, floats, lists, records) are stored under their JSON text
    behind a NUL, which no ordinary string key starts with. This also keeps
    ``True``, ``1`` and ``1.0`` apart, as JSON does.
    """
    kind_ = type(key)
    if kind_ is int or (kind_ is str and not key.startswith("\x00")):
        return key  # type: ignore[no-any-return]
    if kind_ is list:
        for e in key:
            t = type(e)
            if t is not int and t is not str:
                break
        else:
            # The usual composite key (``[id, category]``): the same text as
            # encode_json, without its walk for bytes (~5x faster).
            return "\x00" + _plain_encoder.encode(key).decode()
    return "\x00" + encode_json(key).decode()


def key_of(slot: str | int) -> Any:
    """The grouping key a `slot_of` slot stands for."""
    if type(slot) is str and slot.startswith("\x00"):
        return decode_json(slot[1:])
    return slot


def describe(value: Any) -> str:
    """A value's type and (shortened) repr, for messages."""
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"


# --- accumulator kinds -----------------------------------------------------------


class Kind(NamedTuple):
    """One aggregate operation over accumulators.

    Attributes:
        step: ``(acc or EMPTY, value, t) -> new acc`` (never changes ``acc``),
            or `APPEND`: the commit adds the value with ``add``.
        add: ``(acc, value, t)`` adds the value in place (for `APPEND`).
        merge: ``(earlier, later) -> acc`` holding both (session windows).
        result: ``(acc, n) -> value`` emitted for an acc of ``n`` items.
        init: The accumulator of an empty window record (timestamp order).
    """

    step: Callable[[Any, Any, int], Any]
    add: Callable[[Any, Any, int], None] | None
    merge: Callable[[Any, Any], Any]
    result: Callable[[Any, int], Any]
    init: Callable[[], Any]


def _number(v: Any) -> Any:
    if type(v) is not int and type(v) is not float:
        msg = f"mean needs numbers, got {describe(v)}"
        raise TypeError(msg)
    return v


def _same(acc: Any, n: int) -> Any:
    return acc


def _count_of(acc: Any, n: int) -> int:
    return n


def _none() -> None:
    return None


def _optional(f: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    return lambda a, b: b if a is None else a if b is None else f(a, b)


def _no_merge(a: Any, b: Any) -> Any:
    msg = "this aggregate cannot merge two accumulators"
    raise RuntimeError(msg)


# Arrival order (the transforms): EMPTY is a key's first value; the
# accumulator is the whole answer (count: the count; mean: [sum, count]).


def _a_count(acc: Any, v: Any, t: int) -> Any:
    return 1 if acc is EMPTY else acc + 1


def _a_sum(acc: Any, v: Any, t: int) -> Any:
    return v if acc is EMPTY else acc + v


def _a_min(acc: Any, v: Any, t: int) -> Any:
    return v if acc is EMPTY or v < acc else acc


def _a_max(acc: Any, v: Any, t: int) -> Any:
    return v if acc is EMPTY or v > acc else acc


def _a_mean(acc: Any, v: Any, t: int) -> Any:
    # [sum, count]: plain values, so the state stays encodable.
    if acc is EMPTY:
        return [_number(v), 1]
    return [acc[0] + _number(v), acc[1] + 1]


def _a_first(acc: Any, v: Any, t: int) -> Any:
    return v if acc is EMPTY else acc


def _a_last(acc: Any, v: Any, t: int) -> Any:
    return v


def _a_collect(acc: Any, v: Any, t: int) -> Any:
    return [v] if acc is EMPTY else [*acc, v]


def _a_append(acc: Any, v: Any, t: int) -> Any:
    return [v] if acc is EMPTY else APPEND


def _list_add(acc: Any, v: Any, t: int) -> None:
    acc.append(v)


def _mean_result(acc: Any, n: int) -> Any:
    return acc[0] / acc[1]


_ARRIVAL: dict[str, Kind] = {
    "count": Kind(_a_count, None, operator.add, _same, _none),
    "sum": Kind(_a_sum, None, operator.add, _same, _none),
    "min": Kind(_a_min, None, min, _same, _none),
    "max": Kind(_a_max, None, max, _same, _none),
    "mean": Kind(
        _a_mean, None, lambda a, b: [a[0] + b[0], a[1] + b[1]], _mean_result, _none
    ),
    "first": Kind(_a_first, None, lambda a, b: a, _same, _none),
    "last": Kind(_a_last, None, lambda a, b: b, _same, _none),
    "collect": Kind(_a_collect, None, operator.add, _same, _none),
}


# Timestamp order (the windows): the accumulator sits in a record that
# counts its items (count and mean read that count); an empty record's
# accumulator is ``init()``; first/last/collect keep [t, value] pairs.


def _t_add(acc: Any, v: Any, t: int) -> Any:
    return acc + v


def _t_min(acc: Any, v: Any, t: int) -> Any:
    return v if acc is None or v < acc else acc


def _t_max(acc: Any, v: Any, t: int) -> Any:
    return v if acc is None or v > acc else acc


def _t_first(acc: Any, v: Any, t: int) -> Any:
    return [t, v] if acc is None or t < acc[0] else acc


def _t_last(acc: Any, v: Any, t: int) -> Any:
    return [t, v] if acc is None or t >= acc[0] else acc


def _t_collect(acc: Any, v: Any, t: int) -> Any:
    return APPEND


def _t_collect_add(acc: Any, v: Any, t: int) -> None:
    acc.append([t, v])


def _merge_first(a: Any, b: Any) -> Any:
    return a if b is None or (a is not None and a[0] <= b[0]) else b


def _merge_last(a: Any, b: Any) -> Any:
    return b if a is None or (b is not None and b[0] >= a[0]) else a


def _t_max_rows(acc: Any, v: Any, t: int) -> Any:
    # v is (score, item); acc is [best score, [[t, item], ...]].
    score = v[0]
    if acc is None or score > acc[0]:
        return [score, [[t, v[1]]]]
    return APPEND if score == acc[0] else acc


def _max_rows_add(acc: Any, v: Any, t: int) -> None:
    acc[1].append([t, v[1]])


def _merge_max_rows(a: Any, b: Any) -> Any:
    if a[0] == b[0]:
        return [a[0], a[1] + b[1]]
    return a if a[0] > b[0] else b


def _rows(acc: Any, n: int) -> list[Any]:
    return [v for _, v in sorted(acc[1], key=itemgetter(0))]


def _collected(acc: Any, n: int) -> list[Any]:
    return [v for _, v in sorted(acc, key=itemgetter(0))]


def _zero() -> int:
    return 0


def _timed_count(acc: Any, v: Any, t: int) -> None:
    return None


_TIMESTAMPED: dict[str, Kind] = {
    "count": Kind(_timed_count, None, lambda a, b: None, _count_of, _none),
    "sum": Kind(_t_add, None, operator.add, _same, _zero),
    "mean": Kind(_t_add, None, operator.add, lambda acc, n: acc / n, _zero),
    "min": Kind(_t_min, None, _optional(min), _same, _none),
    "max": Kind(_t_max, None, _optional(max), _same, _none),
    "first": Kind(_t_first, None, _merge_first, lambda acc, n: acc[1], _none),
    "last": Kind(_t_last, None, _merge_last, lambda acc, n: acc[1], _none),
    "collect": Kind(_t_collect, _t_collect_add, operator.add, _collected, list),
    "max_rows": Kind(
        _t_max_rows, _max_rows_add, _optional(_merge_max_rows), _rows, _none
    ),
}


def kind(op: str, *, timestamped: bool = False, in_place: bool = False) -> Kind:
    """Return the `Kind` of a built-in op.

    Args:
        op: The op's name.
        timestamped: Timestamp order, for a window record (else arrival
            order, an accumulator per key).
        in_place: Arrival order: ``collect`` may append to its list (`APPEND`)
            instead of building a new one (for a node that emits the list
            only at the end).

    Raises:
        KeyError: No such op in that flavour.
    """
    if timestamped:
        return _TIMESTAMPED[op]
    found = _ARRIVAL[op]
    if op == "collect" and in_place:
        return found._replace(step=_a_append, add=_list_add)
    return found


def custom(fn: Callable[[Any, Any], Any], initial: Any) -> Kind:
    """A user reducer ``fn(acc, value)`` from ``initial`` (copied per key)."""

    def step(acc: Any, v: Any, t: int) -> Any:
        return fn(copy.deepcopy(initial) if acc is EMPTY else acc, v)

    return Kind(step, None, _no_merge, _same, lambda: copy.deepcopy(initial))


# --- changelogs: values taken back ---------------------------------------------------


def _taken_back(acc: Any, n: int) -> Any:
    if n > 0:
        return acc
    if n == 0:
        return None
    msg = "a retract of a value that was never added (the changelog is not whole)"
    raise ValueError(msg)


def _r_count(acc: Any, v: Any, sign: int) -> Any:
    n = sign if acc is EMPTY else acc + sign
    return _taken_back(n, n)


def _r_total(acc: Any, v: Any, sign: int) -> Any:
    v = _number(v)
    if acc is EMPTY:
        return _taken_back([v * sign, sign], sign)
    n = acc[1] + sign
    return _taken_back([acc[0] + v * sign, n], n)


def retracting(
    op: str,
) -> tuple[Callable[[Any, Any, int], Any], Callable[[Any, int], Any]]:
    """``(step, result)`` of a retractable op folding a changelog.

    ``step(acc or EMPTY, value, +1 or -1)`` returns the new accumulator, or
    None once every value was taken back. Accumulators: ``count`` a number
    of items; ``sum`` and ``mean`` ``[sum, count]`` (the count says when
    every item was taken back).

    Raises:
        KeyError: ``op`` cannot take values back.
    """
    if op == "count":
        return _r_count, _same
    if op == "sum":
        return _r_total, lambda acc, n: acc[0]
    if op == "mean":
        return _r_total, _mean_result
    raise KeyError(op)


# --- the table -------------------------------------------------------------------


class KeyTable:
    """Values per key in a dict of the node state, at most ``max_keys`` of them.

    The dict maps `slot_of` slots to values; it *is* the snapshot (one
    entry per key). With ``evict_oldest`` the dict is kept in update order
    (an updated key moves to the end), so the first entry is the key updated
    longest ago.

    Args:
        entries: The state dict the table lives in (changed in place).
        max_keys: The bound (None: unbounded).
        on_max_keys: ``fail`` or ``evict_oldest`` past the bound.
        ctx: The node's context (evictions are counted in its state).
        what: What the table holds, for the error (``"an accumulator"``).
        one: One evicted value, for the log (``"key's accumulator"``).
    """

    __slots__ = (
        "ctx",
        "entries",
        "evict",
        "failure",
        "limit",
        "max_keys",
        "one",
        "what",
    )

    def __init__(
        self,
        entries: dict[str | int, Any],
        max_keys: int | None,
        on_max_keys: OnMaxKeys,
        ctx: NodeContext,
        what: str,
        one: str,
    ) -> None:
        self.entries = entries
        self.max_keys = max_keys
        self.limit: float = float("inf") if max_keys is None else max_keys
        self.evict = on_max_keys == "evict_oldest"
        self.ctx = ctx
        self.what = what
        self.one = one
        # Why the last fold stopped early (None: it did not).
        self.failure: Exception | None = None

    @classmethod
    def in_state(
        cls,
        ctx: NodeContext,
        name: str,
        max_keys: int | None,
        on_max_keys: OnMaxKeys,
        what: str,
        one: str,
    ) -> KeyTable:
        """The table under ``ctx.state[name]`` (made empty if absent)."""
        entries = ctx.state.get(name)
        if entries is None:
            entries = ctx.state[name] = {}
        return cls(entries, max_keys, on_max_keys, ctx, what, one)

    def put(self, slot: str | int, value: Any) -> tuple[str | int, Any] | None:
        """Store ``value`` under ``slot``; return the evicted ``(slot, value)``.

        Raises:
            StateLimitError: A new key past ``max_keys`` with ``fail`` (the
                table is left as it was).
        """
        entries = self.entries
        if self.evict:
            entries.pop(slot, None)  # least recently updated first
        elif slot in entries:
            entries[slot] = value
            return None
        entries[slot] = value
        if len(entries) <= self.limit:
            return None
        if not self.evict:
            del entries[slot]
            raise over_max_keys(int(self.limit), self.what)
        oldest = next(iter(entries))
        evicted = oldest, entries.pop(oldest)
        note_eviction(self.ctx, int(self.limit), self.one)
        return evicted

    def fold_op(
        self,
        op: str,
        pairs: Callable[[Any], tuple[str | int, Any]],
        items: list[Any],
    ) -> int:
        """Fold items into their keys with a `FAST_OPS` op; return how many.

        ``pairs(item)`` gives ``(slot, value)``. The loop is inlined per op
        (no step call per item) and checks the bound only at a new key. Only
        for a ``fail`` bound (or none): eviction reorders keys, which `fold`
        does.

        Stops at the first item that fails (its key or value cannot be
        computed, the op cannot take the value, or it is a new key past
        ``max_keys``), having folded those before it and left no trace of
        it: the count returned is its index, and ``failure`` holds the
        exception.
        """
        self.failure = None
        entries = self.entries
        get = entries.get
        limit = self.limit
        i = 0
        try:
            if op == "count":
                for i, x in enumerate(items):  # noqa: B007
                    slot = pairs(x)[0]
                    old = get(slot, 0)
                    if not old and len(entries) >= limit:
                        raise over_max_keys(int(limit), self.what)
                    entries[slot] = old + 1
            elif op == "sum":
                for i, x in enumerate(items):  # noqa: B007
                    slot, v = pairs(x)
                    old = get(slot, EMPTY)
                    if old is not EMPTY:
                        entries[slot] = old + v
                    elif len(entries) >= limit:
                        raise over_max_keys(int(limit), self.what)
                    else:
                        entries[slot] = v
            elif op == "max":
                for i, x in enumerate(items):  # noqa: B007
                    slot, v = pairs(x)
                    old = get(slot, EMPTY)
                    if old is not EMPTY:
                        if v > old:
                            entries[slot] = v
                    elif len(entries) >= limit:
                        raise over_max_keys(int(limit), self.what)
                    else:
                        entries[slot] = v
            else:
                for i, x in enumerate(items):  # noqa: B007
                    slot, v = pairs(x)
                    old = get(slot, EMPTY)
                    if old is not EMPTY:
                        if v < old:
                            entries[slot] = v
                    elif len(entries) >= limit:
                        raise over_max_keys(int(limit), self.what)
                    else:
                        entries[slot] = v
        except Exception as exc:
            self.failure = exc
            return i
        return len(items)

    def fold(
        self,
        step: Callable[[Any, Any, int], Any],
        add: Callable[[Any, Any, int], None] | None,
        pairs: Callable[[Any], tuple[str | int, Any]],
        items: list[Any],
    ) -> int:
        """Fold items into their keys with any `Kind` step; return how many.

        As `fold_op` (a ``fail`` bound or none; stops at the first failing
        item, ``failure`` says why), for any step.
        """
        self.failure = None
        entries = self.entries
        get = entries.get
        limit = self.limit
        i = 0
        try:
            for i, x in enumerate(items):  # noqa: B007
                slot, v = pairs(x)
                old = get(slot, EMPTY)
                acc = step(old, v, 0)
                if acc is APPEND:
                    assert add is not None
                    add(old, v, 0)
                    continue
                if old is EMPTY and len(entries) >= limit:
                    raise over_max_keys(int(limit), self.what)
                entries[slot] = acc
        except Exception as exc:
            self.failure = exc
            return i
        return len(items)

    def __len__(self) -> int:
        return len(self.entries)
