"""The `NodeRegistry`: node type ids to `NodeSpec`s.

Built-in node types are listed explicitly in `flowstream.nodes`; third-party
packs (and our own ``connectors``) register through the entry-point group
``flowstream.nodes``. An entry point names either a `NodeSpec`, an iterable of
them, or a callable that takes the registry and registers its types. Nothing
registers by import side effect, and every registry is a fresh object.

A registry starts with what it is given: the runtime does not know the node
library. `flowstream.default_registry` (in `flowstream.engine`, above the
node library) makes the usual one, built-ins plus installed packs.
"""

from __future__ import annotations

import difflib
import logging
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from ..core.node import NodeSpec, declared_location
from ..errors import UnknownNodeType

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

__all__ = ["ENTRY_POINT_GROUP", "NodeRegistry"]

ENTRY_POINT_GROUP = "flowstream.nodes"
logger = logging.getLogger("flowstream.registry")


class NodeRegistry:
    """A mapping of type ids to node specs; safe to create per test.

    Args:
        specs: Node specs to register at once.
    """

    def __init__(self, specs: Iterable[NodeSpec] = ()) -> None:
        self._specs: dict[str, NodeSpec] = {}
        self.register_all(specs)

    @classmethod
    def default(cls, *, entry_points: bool = True) -> NodeRegistry:
        """Moved: the default registry is `flowstream.default_registry`.

        The runtime knows no node types of its own; the composition root
        (`flowstream.engine`) assembles the built-ins and installed packs.

        Raises:
            AttributeError: Always, naming the new home.
        """
        msg = (
            "NodeRegistry.default() moved: use flowstream.default_registry("
            f"entry_points={entry_points!r}) (from flowstream.engine)"
        )
        raise AttributeError(msg)

    def register(self, spec: NodeSpec, *, replace: bool = False) -> NodeSpec:
        """Register a node type and return it (usable as a decorator's tail).

        Raises:
            ValueError: The id is taken and ``replace`` is false.
        """
        if not isinstance(spec, NodeSpec):
            msg = f"expected a NodeSpec (from @node), got {type(spec).__name__}"
            raise TypeError(msg)
        existing = self._specs.get(spec.type_id)
        if existing is not None and existing is not spec and not replace:
            msg = (
                f"node type {spec.type_id!r} is already registered "
                f"by {existing.location}; pass replace=True to override"
            )
            raise ValueError(msg)
        self._specs[spec.type_id] = spec
        return spec

    def register_all(self, specs: Iterable[NodeSpec]) -> None:
        """Register several node types."""
        for spec in specs:
            self.register(spec)

    def load_entry_points(self, group: str = ENTRY_POINT_GROUP) -> None:
        """Register the node packs installed under the entry-point group.

        A pack that fails to load is logged and skipped, so one broken package
        does not take the others down.
        """
        for ep in entry_points(group=group):
            try:
                self._add_loaded(ep.load())
            except Exception:
                logger.exception("cannot load node pack %r (%s)", ep.name, ep.value)

    def _add_loaded(self, obj: Any) -> None:
        # A pack may not replace a type that is already registered (a built-in
        # or another pack's): that conflict is an error, logged by the caller.
        if isinstance(obj, NodeSpec):
            self.register(obj)
        elif callable(obj):
            obj(self)
        else:
            for spec in obj:
                self.register(spec)

    def get(self, type_id: str) -> NodeSpec:
        """Return the spec registered under ``type_id``.

        Raises:
            UnknownNodeType: Nothing is registered under it; carries the closest
                known ids as suggestions.
        """
        try:
            return self._specs[type_id]
        except KeyError:
            suggestions = self.suggest(type_id)
            where = declared_location(type_id)
            raise UnknownNodeType(type_id, suggestions, declared_at=where) from None

    def suggest(self, type_id: str, limit: int = 3) -> list[str]:
        """Return up to ``limit`` registered ids close to ``type_id``."""
        close = difflib.get_close_matches(type_id, self._specs, n=limit, cutoff=0.6)
        if close:
            return close
        # "map" should find "transform.map": compare the verb alone too.
        verb = type_id.rpartition(".")[2]
        return [t for t in self._specs if t.rpartition(".")[2] == verb][:limit]

    def __contains__(self, type_id: object) -> bool:
        return type_id in self._specs

    def __iter__(self) -> Iterator[NodeSpec]:
        return iter(sorted(self._specs.values(), key=lambda s: s.type_id))

    def __len__(self) -> int:
        return len(self._specs)
