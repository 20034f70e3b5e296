"""`StreamBase`: a typed stream as a node's output port, and how methods add nodes.

`DataStream` is one class to its users, but its methods come in families,
each in its own module as a mixin over this base: `flowstream.dataflow.joins`
(two streams into one), `flowstream.dataflow.stateful` (folds and windows);
the per-item, time, shape and sink methods are on `DataStream` itself
(`flowstream.dataflow.stream`). `builds` marks a method as the typed way to
add a node type, which `flowstream.dataflow.NODE_TYPES` collects.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ..core.node import NodeSpec
    from .flow import Dataflow
    from .stream import DataStream

__all__ = ["StreamBase", "builds", "no_nones"]

T_co = TypeVar("T_co", covariant=True)
F = TypeVar("F", bound=Callable[..., Any])


def builds(*type_ids: str) -> Callable[[F], F]:
    """Mark a method as the typed way to add these node types (a test checks)."""

    def mark(fn: F) -> F:
        fn.__node_type__ = type_ids  # type: ignore[attr-defined]
        return fn

    return mark


def no_nones(config: dict[str, Any]) -> dict[str, Any]:
    """The config without the settings left unset (None)."""
    return {k: v for k, v in config.items() if v is not None}


class StreamBase(Generic[T_co]):
    """One output port of one node: the base of `DataStream` and its mixins.

    Attributes:
        flow: The dataflow the stream belongs to.
        node: The node id.
        port: The output port (``out``, ``error``, a route's name...).
    """

    __slots__ = ("flow", "node", "port")

    def __init__(self, flow: Dataflow, node: str, port: str = "out") -> None:
        self.flow = flow
        self.node = node
        self.port = port

    def _then(
        self, type_: str | NodeSpec, config: Mapping[str, Any], name: str | None
    ) -> str:
        """Add a node fed by this stream alone; its id."""
        return self.flow.add_node(type_, config, inputs={"in": self}, name=name)

    def _out(self, node: str) -> DataStream[Any]:
        """The stream of ``node``'s ``out`` port (`DataStream` says how)."""
        raise NotImplementedError
