"""Aggregation for `flowstream.nodes.window`: the ops table and window records.

A record is ``[key, count, acc_2, acc_3, ...]``, one accumulator per
aggregate of the config (``op``, each of ``aggs``, or a custom ``fn``), all
plain msgspec-encodable values, so that records live in the node state. An
item is applied in two phases (`Aggregator.step` computes every new
accumulator, `Aggregator.commit` stores them), so an item that fails leaves
no partial trace and a retried item is never counted twice.
"""

from __future__ import annotations

import copy
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from ..core.expr import expr_function, resolve_callable
from ._windowing import BadItem

if TYPE_CHECKING:
    from collections.abc import Callable

    from .window import WindowConfig

__all__ = ["Aggregator", "why"]


def _add(acc: Any, v: Any, t: int) -> Any:
    return acc + v


def _min(acc: Any, v: Any, t: int) -> Any:
    return v if acc is None or v < acc else acc


def _max(acc: Any, v: Any, t: int) -> Any:
    return v if acc is None or v > acc else acc


def _first(acc: Any, v: Any, t: int) -> Any:
    return [t, v] if acc is None or t < acc[0] else acc


def _last(acc: Any, v: Any, t: int) -> Any:
    return [t, v] if acc is None or t >= acc[0] else acc


def _merge_first(a: Any, b: Any) -> Any:
    return a if b is None or (a is not None and a[0] <= b[0]) else b


def _merge_last(a: Any, b: Any) -> Any:
    return b if a is None or (b is not None and b[0] >= a[0]) else a


def _optional(f: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    return lambda a, b: b if a is None else a if b is None else f(a, b)


def _plus(a: Any, b: Any) -> Any:
    return a + b


def _same(acc: Any, n: int) -> Any:
    return acc


_TIE: Any = object()
"""A ``max_rows`` step's answer for an item tying the maximum: commit appends it."""


def _max_rows(acc: Any, v: Any, t: int) -> Any:
    # v is (score, item); acc is [best score, [[t, item], ...]].
    score = v[0]
    if acc is None or score > acc[0]:
        return [score, [[t, v[1]]]]
    return _TIE if score == acc[0] else acc


def _merge_max_rows(a: Any, b: Any) -> Any:
    if a[0] == b[0]:
        return [a[0], a[1] + b[1]]
    return a if a[0] > b[0] else b


def _rows(acc: Any, n: int) -> list[Any]:
    return [v for _, v in sorted(acc[1], key=itemgetter(0))]


def _collected(acc: Any, n: int) -> list[Any]:
    return [v for _, v in sorted(acc, key=itemgetter(0))]


# op: (initial accumulator, step (None: the commit appends), merge, result)
_OPS: dict[str, tuple[Any, Any, Callable[[Any, Any], Any], Any]] = {
    "sum": (0, _add, _plus, _same),
    "mean": (0, _add, _plus, lambda acc, n: acc / n),
    "min": (None, _min, _optional(min), _same),
    "max": (None, _max, _optional(max), _same),
    "first": (None, _first, _merge_first, lambda acc, n: acc[1]),
    "last": (None, _last, _merge_last, lambda acc, n: acc[1]),
    "collect": (None, None, _plus, _collected),
    "max_rows": (None, _max_rows, _optional(_merge_max_rows), _rows),
}


class Aggregator:
    """Makes, updates, merges and reads the records of one config."""

    def __init__(self, cfg: WindowConfig, merge: str | None = None) -> None:
        self.keyed = cfg.key is not None or cfg.key_field is not None
        if cfg.aggs is not None:
            self.names: list[str] | None = list(cfg.aggs)
            specs: list[tuple[str, str | None]] = [
                (a.op, a.value) for a in cfg.aggs.values()
            ]
        else:
            self.names = None
            specs = [("fn" if cfg.fn else cfg.op or "count", cfg.value)]
        self.custom = cfg.fn is not None
        self.sources: list[str] = []
        self.values: list[Callable[[Any], Any]] = []
        self.inits: list[Callable[[], Any]] = []
        self.steps: list[tuple[int, int, Callable[[Any, Any, int], Any]]] = []
        self.appends: list[tuple[int, int]] = []
        self.merges: list[Callable[[Any, Any], Any]] = []
        self.results: list[Callable[[Any, int], Any]] = []
        for slot, (op, source) in enumerate(specs, start=2):
            if op == "count":
                self.inits.append(lambda: None)
                self.merges.append(lambda a, b: None)
                self.results.append(lambda acc, n: n)
                continue
            v = len(self.values)
            self.sources.append(source or "x")
            value = _identity if source in (None, "x") else _cel(source)
            if op == "max_rows":
                value = _with_item(value)
            self.values.append(value)
            if op == "fn":
                assert cfg.fn is not None  # the config checked fn and initial
                self._custom(cfg.fn, cfg.initial, merge, slot, v)
                continue
            initial, step, merge_op, result = _OPS[op]
            self.inits.append(list if op == "collect" else _const(initial))
            if step is None:
                self.appends.append((slot, v))
            else:
                self.steps.append((slot, v, step))
            self.merges.append(merge_op)
            self.results.append(result)
        self.count_only = not self.values

    def _custom(
        self, fn_ref: str, initial: Any, merge: str | None, slot: int, v: int
    ) -> None:
        fn = resolve_callable(fn_ref)
        self.inits.append(lambda: copy.deepcopy(initial))
        self.steps.append((slot, v, lambda acc, x, t: fn(acc, x)))
        self.merges.append(resolve_callable(merge) if merge else _no_merge)
        self.results.append(_same)

    def new(self, key: Any) -> list[Any]:
        """Return the record of an empty window."""
        return [key, 0, *[init() for init in self.inits]]

    def evaluate(self, x: Any) -> list[Any]:
        """Return the item's values, one per aggregate that reads one."""
        out = []
        for i, f in enumerate(self.values):
            try:
                out.append(f(x))
            except Exception as exc:
                msg = f"cannot evaluate the value {self.sources[i]!r}: {why(exc)}"
                raise BadItem(msg) from None
        return out

    def step(self, rec: list[Any], vals: list[Any], t: int) -> list[Any]:
        """Phase one: the record's new accumulators with the item (no mutation).

        Raises:
            BadItem: A built-in aggregate cannot take the value.
            Exception: The user's ``fn`` failed (a failure of the node).
        """
        try:
            return [f(rec[slot], vals[v], t) for slot, v, f in self.steps]
        except Exception as exc:
            if self.custom:
                raise
            msg = f"cannot aggregate the value: {why(exc)}"
            raise BadItem(msg) from None

    def commit(self, rec: list[Any], news: list[Any], vals: list[Any], t: int) -> None:
        """Phase two: store what `step` computed; cannot fail."""
        rec[1] += 1
        for (slot, v, _), new in zip(self.steps, news, strict=True):
            if new is _TIE:
                rec[slot][1].append([t, vals[v][1]])
            else:
                rec[slot] = new
        for slot, v in self.appends:
            rec[slot].append([t, vals[v]])

    def merge(self, a: list[Any], b: list[Any]) -> list[Any]:
        """Return a new record holding both records' items (``a`` is the earlier).

        Raises:
            Exception: The user's ``merge`` failed.
        """
        merged = [a[0], a[1] + b[1]]
        for slot, m in enumerate(self.merges, start=2):
            merged.append(m(a[slot], b[slot]))
        return merged

    def output(self, rec: list[Any], start: int, end: int) -> dict[str, Any]:
        """Return the emitted record of one window."""
        n = rec[1]
        if self.names is None:
            value = self.results[0](rec[2], n)
        else:
            value = {
                name: result(rec[slot], n)
                for slot, (name, result) in enumerate(
                    zip(self.names, self.results, strict=True), start=2
                )
            }
        if self.keyed:
            return {
                "key": rec[0],
                "start": start,
                "end": end,
                "value": value,
                "count": n,
            }
        return {"start": start, "end": end, "value": value, "count": n}


def why(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _identity(x: Any) -> Any:
    return x


def _with_item(value: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda x: (value(x), x)


def _const(value: Any) -> Callable[[], Any]:
    return lambda: value


def _cel(source: str) -> Callable[[Any], Any]:
    return expr_function(source)


def _no_merge(a: Any, b: Any) -> Any:  # the config requires merge with fn
    msg = "cannot merge two sessions without 'merge'"
    raise RuntimeError(msg)
