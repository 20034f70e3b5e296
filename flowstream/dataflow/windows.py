"""Window kinds and aggregates for `DataStream.window`.

``stream.window(tumbling(seconds=10), count())`` adds a ``window.tumbling``
node counting the items of each 10 s window (per key after `DataStream.key_by`).
The kind says how items are grouped in time (`tumbling`, `sliding`,
`session`); the aggregate what each window emits as ``value`` (`count`,
`sum_of`, `mean_of`, `min_of`, `max_of`, `first`, `last`, `collect_all`, or
`fold` with a Python function). docs/nodes.md describes every setting.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypedDict, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "Aggregate",
    "WindowKind",
    "WindowResult",
    "collect_all",
    "count",
    "first",
    "fold",
    "last",
    "max_of",
    "mean_of",
    "min_of",
    "session",
    "sliding",
    "sum_of",
    "tumbling",
]

T = TypeVar("T")
R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)
K = TypeVar("K")


class WindowResult(TypedDict, Generic[R]):
    """What a window node emits per window (and key)."""

    key: Any
    start: float
    end: float
    value: R
    count: int


@dataclass(frozen=True)
class WindowKind:
    """How items are grouped in time: a window node type and its sizes."""

    type_id: str
    config: dict[str, Any] = field(default_factory=dict)


def _ms(seconds: float | None, ms: float | None, what: str) -> float:
    if (seconds is None) == (ms is None):
        msg = f"give the {what} either in seconds= or in ms=, exactly one"
        raise ValueError(msg)
    return ms if ms is not None else (seconds or 0.0) * 1000.0


def tumbling(*, seconds: float | None = None, ms: float | None = None) -> WindowKind:
    """Back-to-back windows of one size (``window.tumbling``)."""
    return WindowKind("window.tumbling", {"size_ms": _ms(seconds, ms, "size")})


def sliding(
    *,
    seconds: float | None = None,
    ms: float | None = None,
    every_seconds: float | None = None,
    every_ms: float | None = None,
) -> WindowKind:
    """Windows of one size starting every ``every_*`` (``window.sliding``)."""
    return WindowKind(
        "window.sliding",
        {
            "size_ms": _ms(seconds, ms, "size"),
            "slide_ms": _ms(every_seconds, every_ms, "slide"),
        },
    )


def session(
    *, gap_seconds: float | None = None, gap_ms: float | None = None
) -> WindowKind:
    """A window per burst of items, closed after a gap (``window.session``)."""
    return WindowKind("window.session", {"gap_ms": _ms(gap_seconds, gap_ms, "gap")})


@dataclass(frozen=True)
class Aggregate(Generic[T, R_co]):
    """What a window computes over items of ``T``: a result ``R_co``.

    Attributes:
        config: The window config fields it sets (``op``, ``value``, ``fn``...).
    """

    config: dict[str, Any]


def count() -> Aggregate[Any, int]:
    """How many items the window holds."""
    return Aggregate({"op": "count"})


def _op(op: str, value: Callable[[Any], Any] | None) -> dict[str, Any]:
    return {"op": op} if value is None else {"op": op, "value": value}


def sum_of(value: Callable[[T], float]) -> Aggregate[T, float]:
    """The sum of ``value(item)``."""
    return Aggregate(_op("sum", value))


def mean_of(value: Callable[[T], float]) -> Aggregate[T, float]:
    """The mean of ``value(item)``."""
    return Aggregate(_op("mean", value))


def min_of(value: Callable[[T], R]) -> Aggregate[T, R]:
    """The smallest ``value(item)``."""
    return Aggregate(_op("min", value))


def max_of(value: Callable[[T], R]) -> Aggregate[T, R]:
    """The largest ``value(item)``."""
    return Aggregate(_op("max", value))


def first(value: Callable[[T], R]) -> Aggregate[T, R]:
    """``value`` of the window's first item."""
    return Aggregate(_op("first", value))


def last(value: Callable[[T], R]) -> Aggregate[T, R]:
    """``value`` of the window's last item."""
    return Aggregate(_op("last", value))


def collect_all(value: Callable[[T], R]) -> Aggregate[T, list[R]]:
    """Every ``value(item)``, in arrival order (bounded by the window's size)."""
    return Aggregate(_op("collect", value))


def fold(fn: Callable[[R, T], R], initial: R) -> Aggregate[T, R]:
    """``fn(acc, item)`` over the window's items, from ``initial``."""
    return Aggregate({"fn": fn, "initial": initial})
