"""Config fields found through their annotations: what a field *means*.

A marker inside ``Annotated[...]`` says what a config field holds beyond its
type: a CEL expression or a Python callable (`flowstream.core.expr`), a file
the node opens, a URL it connects to, or an address it listens on
(`flowstream.core.resources`). Validation and the server's policy find every
marked field through the config type's annotations, so a new node type's
fields are checked without anyone keeping a list of them.
"""

from __future__ import annotations

import types
import typing
from typing import Annotated, Any

import msgspec

if typing.TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["Marker", "MarkedField", "marked_fields", "markers_of"]


class Marker:
    """What a marked field holds, by ``kind`` (``"cel"``, ``"path"``...)."""

    __slots__ = ("kind",)

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def __repr__(self) -> str:
        return f"Marker({self.kind!r})"


class MarkedField(msgspec.Struct, frozen=True):
    """One marked value of a config.

    Attributes:
        path: The field as people write it (``journal``, ``exprs[2]``,
            ``predicates.even``, ``reconnect.url``).
        keys: The same as keys into the raw config (names and indexes).
        kind: The marker's kind.
        value: The value (a str).
    """

    path: str
    keys: tuple[str | int, ...]
    kind: str
    value: str


def markers_of(annotation: Any) -> Iterator[tuple[str, type | None]]:
    """Yield ``(kind, container)`` for the markers inside an annotation.

    ``container`` is None for a plain (or optional) field, `list` for the
    elements of a list or tuple, `dict` for the values of a dict.
    """
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        for meta in annotation.__metadata__:
            if isinstance(meta, Marker):
                yield meta.kind, None
        return
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            yield from markers_of(arg)
    elif origin in (list, tuple):
        for kind, _ in markers_of(typing.get_args(annotation)[0]):
            yield kind, list
    elif origin is dict:
        for kind, _ in markers_of(typing.get_args(annotation)[1]):
            yield kind, dict


def marked_fields(
    config: msgspec.Struct, kinds: frozenset[str] | None = None
) -> Iterator[MarkedField]:
    """Yield every marked value of a config (of ``kinds`` only, if given).

    Fields may be plain, optional, lists of, or dict values of a marked
    ``str``; nested `msgspec.Struct` values are searched too.
    """
    yield from _walk(config, kinds, "", ())


def _walk(
    config: msgspec.Struct,
    kinds: frozenset[str] | None,
    prefix: str,
    keys: tuple[str | int, ...],
) -> Iterator[MarkedField]:
    cls = type(config)
    hints = typing.get_type_hints(cls, include_extras=True)
    names = zip(cls.__struct_fields__, cls.__struct_encode_fields__, strict=True)
    for name, encoded in names:
        value = getattr(config, name)
        if value is None:
            continue
        here, at = f"{prefix}{name}", (*keys, encoded)
        if isinstance(value, msgspec.Struct):
            yield from _walk(value, kinds, f"{here}.", at)
            continue
        for kind, shape in markers_of(hints.get(name)):
            if kinds is not None and kind not in kinds:
                continue
            if shape is None and isinstance(value, str):
                yield MarkedField(here, at, kind, value)
            elif shape is list:
                for i, item in enumerate(value):
                    yield MarkedField(f"{here}[{i}]", (*at, i), kind, item)
            elif shape is dict:
                for key, item in value.items():
                    yield MarkedField(f"{here}.{key}", (*at, key), kind, item)
