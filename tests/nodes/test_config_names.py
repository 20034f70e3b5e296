from __future__ import annotations

from typing import Any

import msgspec

from flowstream.nodes import BUILTIN_NODES


def struct_types(tp: Any, seen: dict[str, set[type]]) -> None:
    """Every msgspec.Struct type reachable from ``tp``, by class name."""
    info = msgspec.inspect.type_info(tp)
    stack = [info]
    visited: set[int] = set()
    while stack:
        t = stack.pop()
        if id(t) in visited:
            continue
        visited.add(id(t))
        if isinstance(t, msgspec.inspect.StructType):
            seen.setdefault(t.cls.__name__, set()).add(t.cls)
            stack.extend(f.type for f in t.fields)
        elif isinstance(t, msgspec.inspect.UnionType):
            stack.extend(t.types)
        elif isinstance(t, msgspec.inspect.DictType):
            stack.extend((t.key_type, t.value_type))
        elif isinstance(
            t,
            msgspec.inspect.ListType
            | msgspec.inspect.SetType
            | msgspec.inspect.FrozenSetType
            | msgspec.inspect.VarTupleType,
        ):
            stack.append(t.item_type)
        elif isinstance(t, msgspec.inspect.TupleType):
            stack.extend(t.item_types)


def test_config_classes_have_one_name_each() -> None:
    # Two config classes once were both called Aggregate (transform.scan's
    # config and a window's named aggregate): the docs and error messages
    # could not tell them apart.
    seen: dict[str, set[type]] = {}
    for spec in BUILTIN_NODES:
        if spec.config_type is not None:
            struct_types(spec.config_type, seen)
    assert {"Aggregate", "WindowAggregate"} <= seen.keys()
    shared = {name: classes for name, classes in seen.items() if len(classes) > 1}
    assert shared == {}
