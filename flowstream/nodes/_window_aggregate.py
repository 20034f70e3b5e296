"""Aggregation for `flowstream.nodes.window`: window records of accumulators.

The ops are the accumulator kinds of `flowstream.nodes._aggregates` (their
timestamp-order flavour), shared with the keyed transforms. A record is
``[key, count, acc_2, acc_3, ...]``, one accumulator per aggregate of the
config (``op``, each of ``aggs``, or a custom ``fn``), all plain
msgspec-encodable values, so that records live in the node state. An item
is applied in two phases (`Aggregator.step` computes every new accumulator,
`Aggregator.commit` stores them), so an item that fails leaves no partial
trace and a retried item is never counted twice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..core.expr import expr_function, resolve_callable
from ._aggregates import APPEND, custom, kind
from ._topn import top_kind
from ._windowing import BadItem

if TYPE_CHECKING:
    from collections.abc import Callable

    from .window import WindowConfig

__all__ = ["Aggregator", "why"]


class Aggregator:
    """Makes, updates, merges and reads the records of one config."""

    def __init__(self, cfg: WindowConfig, merge: str | None = None) -> None:
        self.keyed = cfg.key is not None or cfg.key_field is not None
        if cfg.aggs is not None:
            self.names: list[str] | None = list(cfg.aggs)
            specs: list[tuple[str, str | None]] = [
                (a.op, a.value) for a in cfg.aggs.values()
            ]
        elif cfg.top is not None:
            self.names = None
            specs = [("top", cfg.top.by)]
        else:
            self.names = None
            specs = [("fn" if cfg.fn else cfg.op or "count", cfg.value)]
        self.custom = cfg.fn is not None
        self.sources: list[str] = []
        self.values: list[Callable[[Any], Any]] = []
        self.inits: list[Callable[[], Any]] = []
        # (record slot, value index, step, add), as in `_aggregates.Kind`.
        self.steps: list[
            tuple[
                int,
                int,
                Callable[[Any, Any, int], Any],
                Callable[[Any, Any, int], None] | None,
            ]
        ] = []
        self.merges: list[Callable[[Any, Any], Any]] = []
        self.results: list[Callable[[Any, int], Any]] = []
        for slot, (op, source) in enumerate(specs, start=2):
            if op == "count":
                # The record counts its items: no value, no step.
                k = kind("count", timestamped=True)
                self.inits.append(k.init)
                self.merges.append(k.merge)
                self.results.append(k.result)
                continue
            v = len(self.values)
            self.sources.append(source or "x")
            value = _identity if source in (None, "x") else _cel(source)
            if op in ("max_rows", "top"):
                value = _with_item(value)  # ranks the item itself
            self.values.append(value)
            if op == "fn":
                assert cfg.fn is not None  # the config checked fn and initial
                fn = resolve_callable(cfg.fn)
                k = custom(fn, cfg.initial)._replace(
                    step=_user_step(fn),
                    merge=resolve_callable(merge) if merge else _no_merge,
                )
            elif op == "top":
                assert cfg.top is not None
                k = top_kind(cfg.top.n, desc=cfg.top.order == "desc")
            else:
                k = kind(op, timestamped=True)
            self.inits.append(k.init)
            self.steps.append((slot, v, k.step, k.add))
            self.merges.append(k.merge)
            self.results.append(k.result)
        self.count_only = not self.values

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
            return [f(rec[slot], vals[v], t) for slot, v, f, _ in self.steps]
        except Exception as exc:
            if self.custom:
                raise
            msg = f"cannot aggregate the value: {why(exc)}"
            raise BadItem(msg) from None

    def commit(self, rec: list[Any], news: list[Any], vals: list[Any], t: int) -> None:
        """Phase two: store what `step` computed; cannot fail."""
        rec[1] += 1
        for (slot, v, _, add), new in zip(self.steps, news, strict=True):
            if new is APPEND:
                assert add is not None
                add(rec[slot], vals[v], t)
            else:
                rec[slot] = new

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


def _user_step(fn: Callable[[Any, Any], Any]) -> Callable[[Any, Any, int], Any]:
    # A window record starts from ``initial`` (its init), never EMPTY.
    return lambda acc, x, t: fn(acc, x)


def _cel(source: str) -> Callable[[Any], Any]:
    return expr_function(source)


def _no_merge(a: Any, b: Any) -> Any:  # the config requires merge with fn
    msg = "cannot merge two sessions without 'merge'"
    raise RuntimeError(msg)
