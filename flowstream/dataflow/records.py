"""The typed records dataflow nodes emit: keyed items, joins, dead letters.

They are `TypedDict`s: at run time the items stay plain dicts (the engine
never wraps an item); the types only tell a type checker what a
`DataStream` carries.
"""

from __future__ import annotations

from typing import Any, Generic, Literal, TypedDict, TypeVar

__all__ = ["DeadLetterRecord", "JoinChange", "Joined", "Keyed"]

T = TypeVar("T")
U = TypeVar("U")
K = TypeVar("K")


class Keyed(TypedDict, Generic[K, T]):
    """A keyed record, as `DataStream.key_by` emits it."""

    key: K
    value: T


class Joined(TypedDict, Generic[T, U]):
    """A pair matched by `DataStream.join`."""

    left: T
    right: U


class JoinChange(TypedDict, Generic[T, U]):
    """What `DataStream.changelog_join` emits: a pair upserted or retracted."""

    key: Any
    left: T
    right: U
    op: Literal["upsert", "retract"]


class DeadLetterRecord(TypedDict):
    """What a node's ``error`` port emits: the node, the reason, the item."""

    node: str
    reason: str
    item: Any
