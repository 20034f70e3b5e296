"""`StatefulMethods`: the `DataStream` methods whose node keeps state across items.

They build folds (``transform.reduce``, ``transform.scan``), changelog
aggregates (``transform.aggregate``) and windows (``window.*``).

Window kinds and aggregates are values from `flowstream.dataflow.windows`;
`KeyedStream` (after `DataStream.key_by`) overrides these methods to group
by the record's key.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

from .base import StreamBase, builds, no_nones

if TYPE_CHECKING:
    from collections.abc import Callable

    from .records import Keyed
    from .stream import DataStream
    from .windows import Aggregate, WindowKind, WindowResult

__all__ = ["StatefulMethods"]

T_co = TypeVar("T_co", covariant=True)
R = TypeVar("R")


class StatefulMethods(StreamBase[T_co]):
    """Folds, aggregates and windows over this stream (a `DataStream` mixin)."""

    __slots__ = ()

    @builds("transform.reduce")
    def reduce(
        self,
        fn: Callable[[R, T_co], R],
        initial: R,
        *,
        key: Callable[[T_co], object] | None = None,
        name: str | None = None,
    ) -> DataStream[Keyed[Any, R]]:
        """``fn(acc, item)`` over all items (per key), emitted at the end."""
        config = {"fn": fn, "initial": initial, "key": key}
        return self._out(self._then("transform.reduce", config, name))

    @builds("transform.scan")
    def scan(
        self,
        fn: Callable[[R, T_co], R],
        initial: R,
        *,
        key: Callable[[T_co], object] | None = None,
        name: str | None = None,
    ) -> DataStream[Keyed[Any, R]]:
        """``fn(acc, item)`` (per key), emitted after every item."""
        config = {"fn": fn, "initial": initial, "key": key}
        return self._out(self._then("transform.scan", config, name))

    @builds("transform.aggregate")
    def aggregate(
        self,
        op: str,
        *,
        key: Callable[[T_co], object] | None = None,
        value: Callable[[T_co], object] | None = None,
        retract: bool = True,
        name: str | None = None,
        **config: Any,
    ) -> DataStream[Any]:
        """An updating ``op`` per key: upserts, and retracts of old values.

        Emits ``{"key", "value", "op": "upsert" | "retract"}`` records as each
        key's aggregate changes (``transform.aggregate``): a changelog that a
        keyed sink applies, or another aggregate with ``changelog=True``.
        """
        merged = {"op": op, "key": key, "value": value, "retract": retract, **config}
        node_id = self._then("transform.aggregate", no_nones(merged), name)
        return self._out(node_id)

    @builds("window.tumbling", "window.sliding", "window.session")
    def window(
        self,
        kind: WindowKind,
        aggregate: Aggregate[T_co, R],
        *,
        key: Callable[[T_co], object] | None = None,
        timestamp: Callable[[T_co], float] | None = None,
        name: str | None = None,
        **config: Any,
    ) -> DataStream[WindowResult[R]]:
        """Aggregate items per window of ``kind`` (and per ``key``).

        With ``timestamp`` windows follow event time (the function returns
        the item's time in epoch milliseconds, an int), else processing time.
        ``config`` takes the window's other settings (``allowed_lateness_ms``,
        ``late``, ``max_keys``...).
        """
        merged = {**kind.config, **aggregate.config, **config}
        if key is not None:
            merged["key"] = key
        if timestamp is not None:
            merged["timestamp"] = timestamp
        return self._out(self._then(kind.type_id, merged, name))
