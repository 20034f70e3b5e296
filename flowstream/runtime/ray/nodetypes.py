"""The node types a run's workers need, handed over by the driver.

Each slot's actor validates the workflow again in its own process, so it
needs a registry with every type the workflow names. The runtime does not
know how to build a default one (that is `flowstream.engine`, above the node
library), and the driver's registry may hold types the user registered by
hand. So the driver ships the types its graph was validated with: each one
by reference (``"module:attr"``, imported in the worker, so a built-in is
the very same object there) where its module has it under a name, else the
`NodeSpec` itself, pickled by Ray (a type made inside a function, or in a
script's ``__main__``).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ...core.expr import ExprError, import_ref
from ...core.node import NodeSpec
from ..registry import NodeRegistry

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..validation import Graph

__all__ = ["NodeTypes", "node_types"]


@dataclass(frozen=True)
class NodeTypes:
    """The types a graph uses, as the driver sends them to its workers."""

    by_reference: dict[str, str] = field(default_factory=dict)
    """Type id -> ``"module:attr"`` naming its `NodeSpec`."""
    by_value: dict[str, NodeSpec] = field(default_factory=dict)
    """Type id -> the spec itself (no module names it)."""

    def registry(self) -> NodeRegistry:
        """A registry of these types (in the worker).

        Raises:
            ExprError: A reference that does not import there, or names
                something else than the type (the worker's code differs).
        """
        registry = NodeRegistry(self.by_value.values())
        for type_id, ref in self.by_reference.items():
            spec = import_ref(ref)
            if not isinstance(spec, NodeSpec) or spec.type_id != type_id:
                msg = f"{ref!r} is not node type {type_id!r} in this process"
                raise ExprError(msg)
            registry.register(spec)
        return registry


def node_types(graph: Graph, dumps: Callable[[Any], bytes] | None = None) -> NodeTypes:
    """The registered types ``graph``'s workflow names, by reference or by value.

    Types named in the workflow as ``"module:attr"`` are left out: the worker
    resolves those itself, as validation did here.

    Args:
        graph: The validated graph the workers will run.
        dumps: Tried on each type sent by value (Ray's pickler), so that one
            that cannot travel is named here, before any actor starts.

    Raises:
        TypeError: A type sent by value cannot be pickled by ``dumps``.
    """
    by_reference: dict[str, str] = {}
    by_value: dict[str, NodeSpec] = {}
    for gnode in graph.nodes.values():
        spec = gnode.spec
        if gnode.internal or gnode.decl.type != spec.type_id:
            continue
        ref = _reference(spec)
        if ref is None:
            if dumps is not None and spec.type_id not in by_value:
                _try_pickle(spec, dumps)
            by_value[spec.type_id] = spec
        else:
            by_reference[spec.type_id] = ref
    return NodeTypes(by_reference, by_value)


def _reference(spec: NodeSpec) -> str | None:
    """``"module:attr"`` under which ``spec``'s module holds it, if any."""
    module_name = getattr(spec.fn, "__module__", None)
    if not module_name or module_name == "__main__":
        return None  # a worker's __main__ is not the driver's script
    module = sys.modules.get(module_name)
    if module is None:
        return None
    name = getattr(spec.fn, "__name__", "")
    if name and getattr(module, name, None) is spec:
        return f"{module_name}:{name}"
    for attr, value in vars(module).items():
        if value is spec:
            return f"{module_name}:{attr}"
    return None


def _try_pickle(spec: NodeSpec, dumps: Callable[[Any], bytes]) -> None:
    try:
        dumps(spec)
    except Exception as exc:
        msg = (
            f"node type {spec.type_id!r} ({spec.location}) cannot be sent to "
            f"the Ray workers: {type(exc).__name__}: {exc}"
        )
        raise TypeError(msg) from None
