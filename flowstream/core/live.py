"""Live callables: Python functions and lambdas held by a workflow built in Python.

Wherever a config field takes a ``"module:attr"`` reference (`FnRef`) or a CEL
expression (`Expr`), Python code may pass a callable instead::

    Workflow("w").node("keep", "transform.filter", fn=lambda x: x % 2 == 1)

The builder wraps it in a `LiveRef`: a ``str`` (so the config validates as the
field's declared type) that carries the callable. Its text is the callable's
``"module:attr"`` when that imports back to the same object, else a name that
says what it is (``"__main__:lambda_3"``). Every place that resolves a field
(`flowstream.core.expr.expr_function`, `resolve_callable`) checks for a
`LiveRef` first and returns its callable, so nothing is imported or compiled.

A `LiveRef` survives `msgspec.convert` (it is a ``str`` subclass), so the
validated config and the plan hold the callable too. A workflow holding one
cannot be written as a file unless each one has an importable ``"module:attr"``
in a `FnRef` field (`portable_document`); a CEL field never takes a reference.
A node type may be given as its `NodeSpec` (from ``@node``) the same way: the
workflow then runs it without registering it anywhere.
"""

from __future__ import annotations

import itertools
import re
import types
import typing
from typing import Any

import msgspec

from .markers import markers_of

__all__ = [
    "LiveRef",
    "find_live",
    "is_live",
    "live",
    "live_config",
    "misplaced_live",
]

_counter = itertools.count(1)
_NOT_WORD = re.compile(r"\W+")


class LiveRef(str):
    """A config value standing for a live Python object (a callable or NodeSpec).

    Attributes:
        target: The object.
        importable: The text is a ``"module:attr"`` that imports ``target``.
    """

    target: Any
    importable: bool

    def __new__(cls, target: Any) -> LiveRef:  # noqa: D102
        text, importable = _name(target)
        ref = super().__new__(cls, text)
        ref.target = target
        ref.importable = importable
        return ref

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled (by a process backend) as the object, not as its name.
        return (LiveRef, (self.target,))

    def __repr__(self) -> str:
        return f"<live {self!s}>"


def _name(target: Any) -> tuple[str, bool]:
    """The ``"module:attr"`` of ``target`` and whether it imports back to it."""
    from .node import NodeSpec

    obj = target.fn if isinstance(target, NodeSpec) else target
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None) or type(obj).__name__
    if module and "<" not in qualname and _imports_to(module, qualname, target):
        return f"{module}:{qualname}", True
    word = _NOT_WORD.sub("_", qualname).strip("_") or "callable"
    return f"{module or 'live'}:{word}_{next(_counter)}", False


def _imports_to(module: str, qualname: str, obj: Any) -> bool:
    import sys

    found: Any = sys.modules.get(module)
    if found is None or module == "__main__":
        return False
    for part in qualname.split("."):
        found = getattr(found, part, None)
    return found is obj


def is_live(value: object) -> bool:
    """Whether a config value is a `LiveRef`."""
    return isinstance(value, LiveRef)


def live(value: Any) -> Any:
    """Wrap a callable (or NodeSpec) in a `LiveRef`; return other values as they are.

    A class counts as a callable (``fn=str``): configs come from documents,
    so no config field holds a type.
    """
    if type(value) in _PLAIN:
        return value
    from .node import NodeSpec

    if isinstance(value, NodeSpec) or callable(value):
        return LiveRef(value)
    return value


# Values that are never callables, skipped without a call: most of a config
# (and all of a ``source.values`` list of records' leaves).
_PLAIN = frozenset({str, int, float, bool, type(None), bytes, LiveRef})


def live_config(value: Any) -> Any:
    """Wrap every callable inside a raw config (dicts and lists, recursively).

    A dict or list with no callable in it is returned as it is (the same
    object: ``source.values`` hands its items on unchanged, uncopied).
    """
    kind = type(value)
    if kind in _PLAIN:
        return value
    if isinstance(value, dict):
        changed: dict[Any, Any] | None = None
        for k, v in value.items():
            if type(v) in _PLAIN:
                continue
            w = live_config(v)
            if w is not v:
                if changed is None:
                    changed = dict(value)
                changed[k] = w
        return value if changed is None else changed
    if isinstance(value, list | tuple):
        items: list[Any] | None = None
        for i, v in enumerate(value):
            if type(v) in _PLAIN:
                continue
            w = live_config(v)
            if w is not v:
                if items is None:
                    items = list(value)
                items[i] = w
        return value if items is None else items
    return live(value)


def find_live(value: Any, path: str = "") -> list[tuple[str, LiveRef]]:
    """Every `LiveRef` inside a raw value, with its path (``fn``, ``aggs.n.fn``)."""
    found: list[tuple[str, LiveRef]] = []
    if isinstance(value, LiveRef):
        found.append((path, value))
    elif isinstance(value, dict):
        for k, v in value.items():
            found += find_live(v, f"{path}.{k}" if path else str(k))
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            found += find_live(v, f"{path}[{i}]")
    elif isinstance(value, msgspec.Struct):
        for name in value.__struct_fields__:
            found += find_live(getattr(value, name), f"{path}.{name}" if path else name)
    return found


def misplaced_live(config: msgspec.Struct) -> list[str]:
    """Paths of a decoded config where a callable sits in a field that takes none.

    Only fields marked `Expr` or `FnRef` (and lists or dict values of them)
    take a callable; anywhere else (a ``message: str``) its name would be used
    as text, silently.
    """
    return list(_misplaced(config, None, ""))


def _misplaced(value: Any, hint: Any, path: str) -> typing.Iterator[str]:
    if isinstance(value, LiveRef):
        if not any(kind in ("cel", "fn") for kind, _ in markers_of(hint)):
            yield path
        return
    if isinstance(value, msgspec.Struct):
        hints = typing.get_type_hints(type(value), include_extras=True)
        for name in value.__struct_fields__:
            here = f"{path}.{name}" if path else name
            yield from _misplaced(getattr(value, name), hints.get(name), here)
        return
    if isinstance(value, dict | list | tuple):
        yield from _misplaced_items(value, _strip_optional(hint), path)


def _strip_optional(hint: Any) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0] if len(args) == 1 else None
    return hint


def _misplaced_items(value: Any, hint: Any, path: str) -> typing.Iterator[str]:
    args = typing.get_args(hint)
    if isinstance(value, dict):
        inner = args[1] if len(args) == 2 else None
        for k, v in value.items():
            yield from _misplaced(v, inner, f"{path}.{k}")
    else:
        inner = args[0] if args else None
        for i, v in enumerate(value):
            yield from _misplaced(v, inner, f"{path}[{i}]")
