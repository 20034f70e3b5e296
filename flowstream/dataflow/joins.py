"""`JoinMethods`: the `DataStream` methods that join it with a stream or a table.

They build ``join.window``, ``join.interval``, ``join.changelog`` and
``join.lookup``. Each adds a node with two inputs, this stream on ``left``
(or ``in``) and the other on ``right`` (or ``table``), and returns the
stream of what it emits, typed by `flowstream.dataflow.records`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

from .base import StreamBase, builds, no_nones

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from .records import JoinChange, Joined
    from .stream import DataStream

__all__ = ["JoinMethods"]

T_co = TypeVar("T_co", covariant=True)
U = TypeVar("U")


class JoinMethods(StreamBase[T_co]):
    """Joins of this stream with another stream or a table (a `DataStream` mixin)."""

    __slots__ = ()

    @builds("join.window")
    def join(
        self,
        other: DataStream[U],
        *,
        window_ms: float,
        left_key: Callable[[T_co], object],
        right_key: Callable[[U], object],
        left_time: Callable[[T_co], float] | None = None,
        right_time: Callable[[U], float] | None = None,
        name: str | None = None,
        **config: Any,
    ) -> DataStream[Joined[T_co, U]]:
        """Pairs of items with equal keys within ``window_ms`` (``join.window``)."""
        merged = {
            "window_ms": window_ms,
            "left_key": left_key,
            "right_key": right_key,
            "left_time": left_time,
            "right_time": right_time,
            **config,
        }
        node_id = self.flow.add_node(
            "join.window",
            no_nones(merged),
            inputs={"left": self, "right": other},
            name=name,
        )
        return self._out(node_id)

    @builds("join.interval")
    def interval_join(
        self,
        other: DataStream[U],
        *,
        upper_ms: int,
        left_key: Callable[[T_co], object],
        right_key: Callable[[U], object],
        left_time: Callable[[T_co], int],
        right_time: Callable[[U], int],
        lower_ms: int = 0,
        left_end: Callable[[T_co], int] | None = None,
        name: str | None = None,
        **config: Any,
    ) -> DataStream[Joined[T_co, U]]:
        """Pairs where the other item's time is in this one's interval.

        A right item pairs with the left items of its key whose interval
        ``[left_time + lower_ms, min(left_end, left_time + upper_ms)]`` holds
        its time (``join.interval``; times in epoch ms).
        """
        merged = {
            "upper_ms": upper_ms,
            "lower_ms": lower_ms,
            "left_key": left_key,
            "right_key": right_key,
            "left_time": left_time,
            "right_time": right_time,
            "left_end": left_end,
            **config,
        }
        node_id = self.flow.add_node(
            "join.interval",
            no_nones(merged),
            inputs={"left": self, "right": other},
            name=name,
        )
        return self._out(node_id)

    @builds("join.changelog")
    def changelog_join(
        self,
        table: DataStream[U],
        *,
        left_key: Callable[[T_co], object],
        right_key: Callable[[U], object],
        left_time: Callable[[T_co], int],
        right_time: Callable[[U], int],
        left_retention_ms: int,
        right_retention_ms: int,
        name: str | None = None,
        **config: Any,
    ) -> DataStream[JoinChange[T_co, U]]:
        """Each item with its key's row of ``table``, as a changelog.

        ``table``'s items are rows keyed by ``right_key`` (a later row
        replaces the key's row); each item of this stream joins its key's
        row, now or when it comes, and follows its replacements while both
        are kept (``join.changelog``; times in epoch ms, retention bounds the
        state).
        """
        merged = {
            "left_key": left_key,
            "right_key": right_key,
            "left_time": left_time,
            "right_time": right_time,
            "left_retention_ms": left_retention_ms,
            "right_retention_ms": right_retention_ms,
            **config,
        }
        node_id = self.flow.add_node(
            "join.changelog",
            no_nones(merged),
            inputs={"left": self, "right": table},
            name=name,
        )
        return self._out(node_id)

    @builds("join.lookup")
    def lookup(
        self,
        key: Callable[[T_co], object],
        *,
        table: DataStream[Any] | Mapping[str, Any],
        table_key: Callable[[Any], object] | None = None,
        name: str | None = None,
        **config: Any,
    ) -> DataStream[Any]:
        """Each item with the table's row for ``key(item)`` (``join.lookup``).

        ``table`` is a stream of rows (keyed by ``table_key``) or a mapping.
        """
        merged: dict[str, Any] = {"key": key, "table_key": table_key, **config}
        inputs: dict[str, StreamBase[Any]] = {"in": self}
        if isinstance(table, StreamBase):
            inputs["table"] = table
        else:
            merged["table"] = dict(table)
        node_id = self.flow.add_node(
            "join.lookup", no_nones(merged), inputs=inputs, name=name
        )
        return self._out(node_id)
