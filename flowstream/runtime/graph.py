"""`Graph`: a validated workflow, as the planner and the executors read it.

`flowstream.runtime.validation.validate` makes one: each node's spec, decoded
config and resolved ports (a `GraphNode`), its edges indexed both ways, the
nodes in topological order, and what the parallel expansion did. The plans
made from a graph are cached on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import Problem

if TYPE_CHECKING:
    from ..core.node import NodeSpec
    from ..core.workflow import Connection, Workflow, WorkflowNode
    from .parallel import Expansion

__all__ = ["Graph", "GraphNode", "keyed"]


@dataclass(eq=False, slots=True)
class GraphNode:
    """A validated node: its declaration, spec, config and edges."""

    decl: WorkflowNode
    spec: NodeSpec
    config: Any
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    inbound: list[Connection] = field(default_factory=list)
    outbound: list[Connection] = field(default_factory=list)
    instance_of: str | None = None
    """For one instance of a node with ``parallelism`` > 1: the declared
    node's id (the run's outputs are collected under it)."""
    internal: bool = False
    """True for a partition step that the parallel expansion added; its
    outputs are never the run's."""

    @property
    def id(self) -> str:
        """The node id."""
        return self.decl.id


@dataclass(eq=False)
class Graph:
    """A validated workflow; nodes are in topological order."""

    workflow: Workflow
    nodes: dict[str, GraphNode]
    # Plans made from this graph, by fusion setting (`runtime.plan.plan`).
    plans: dict[bool, Any] = field(default_factory=dict, repr=False)
    parallel: Expansion | None = None
    """How nodes with ``parallelism`` > 1 became instances (None: none has)."""

    def warnings(self, mode: str | None = None) -> list[Problem]:
        """What is valid but probably unwise; shown by the CLI, never fatal.

        Today: a keyed stateful node with ``max_keys: null`` in stream mode
        (``mode``, default the workflow's), whose state can grow for ever.
        """
        if (mode or self.workflow.mode) != "stream":
            return []
        found: list[Problem] = []
        # Once per declared node, not once per instance of a parallel one.
        nodes = self.parallel.declared.nodes if self.parallel else self.nodes
        for gid, gnode in nodes.items():
            config = gnode.config
            if getattr(config, "max_keys", 0) is not None or not keyed(config):
                continue
            message = (
                "keyed state with no bound (max_keys: null) in stream mode: "
                "with ever-new keys it grows until memory runs out; set "
                "max_keys (and on_max_keys)"
            )
            found.append(Problem(message, node=gid, field="max_keys"))
        return found

    @property
    def terminals(self) -> list[GraphNode]:
        """Nodes with no outgoing connection (their outputs are the run's)."""
        return [n for n in self.nodes.values() if not n.outbound]


def keyed(config: Any) -> bool:
    """Whether a node's config groups by key (window, scan, reduce, lookup)."""
    if getattr(config, "table", None) is not None:
        return False  # join.lookup with a static table: nothing grows
    return bool(
        getattr(config, "table_key", None) is not None
        or getattr(config, "key", None) is not None
        or getattr(config, "key_field", None) is not None
        or getattr(config, "keyed", False)
    )
