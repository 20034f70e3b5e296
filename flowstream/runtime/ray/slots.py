"""Cutting an expanded graph into slots: one Ray actor each.

Like Flink's slot sharing, instance ``i`` of every parallel node goes to slot
``i`` (a partition step goes with the instance that feeds it; a node with one
instance goes to slot 0), so a pipeline with parallelism N runs in N worker
processes however many nodes it has, and an edge between instances with the
same index stays an in-process channel. Every other connection crosses
processes: it becomes a ``runtime.send`` sink in the producer's slot and a
``runtime.receive`` source in the consumer's, numbered the same way in every
process (the expansion is deterministic).

Pure data, no Ray: the executor and the actors both use it, and tests check
it without a cluster.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ...core.workflow import Connection, WorkflowNode
from ..registry import NodeRegistry
from ..validation import Graph, GraphNode

if TYPE_CHECKING:
    from collections.abc import Callable

    from ...core.node import NodeSpec

__all__ = ["cut", "remote_edges", "shipped_specs", "slots_of"]


def slots_of(graph: Graph) -> dict[str, int]:
    """Each node's slot (see the module docstring)."""
    slot: dict[str, int] = {}
    ex = graph.parallel
    if ex is not None:
        for ids in ex.instances.values():
            for i, iid in enumerate(ids):
                slot[iid] = i
    for gid, g in graph.nodes.items():  # topological: producers first
        if g.internal:
            slot[gid] = slot[g.inbound[0].from_node]
        else:
            slot.setdefault(gid, 0)
    return slot


def shipped_specs(graph: Graph, dumps: Callable[[Any], bytes]) -> list[NodeSpec]:
    """The node types ``graph`` uses that are not built in (sent to the actors).

    Each actor validates the workflow again with the built-in types and the
    installed packs; a type the driver's registry has of its own (a user's
    ``@node`` function, a test's) goes with the actors' arguments, pickled
    by ``dumps`` (tried here, so that a failure names the type).

    Raises:
        TypeError: A node type cannot be pickled.
    """
    builtin = NodeRegistry.default(entry_points=False)
    shipped: dict[str, NodeSpec] = {}
    for g in graph.nodes.values():
        spec = g.spec
        if g.internal or spec.type_id in shipped:
            continue
        if spec.type_id not in builtin or builtin.get(spec.type_id) is not spec:
            try:
                dumps(spec)
            except Exception as exc:
                msg = (
                    f"node type {spec.type_id!r} ({spec.location}) cannot be "
                    f"sent to the Ray workers: {type(exc).__name__}: {exc}"
                )
                raise TypeError(msg) from None
            shipped[spec.type_id] = spec
    return list(shipped.values())


def remote_edges(graph: Graph, slots: dict[str, int]) -> list[Connection]:
    """The connections between slots, in an order every process agrees on."""
    return [
        c
        for g in graph.nodes.values()
        for c in g.inbound
        if slots[c.from_node] != slots[c.to_node]
    ]


def cut(
    graph: Graph,
    slot: int,
    slots: dict[str, int],
    edges: list[Connection],
    receiver: Callable[[int, Connection], tuple[NodeSpec, Any]],
    sender: Callable[[int, Connection], tuple[NodeSpec, Any]],
) -> Graph:
    """The part of ``graph`` that runs in ``slot``, its remote edges as nodes.

    Args:
        graph: The expanded graph.
        slot: Which slot.
        slots: `slots_of` the graph.
        edges: `remote_edges` of the graph.
        receiver: Makes the (spec, config) of the source that delivers
            remote edge number ``i`` here.
        sender: Makes the (spec, config) of the sink that sends remote edge
            number ``i`` away.
    """
    number = {id(c): i for i, c in enumerate(edges)}
    nodes: dict[str, GraphNode] = {}
    wires: list[Connection] = []
    sends: list[tuple[str, GraphNode]] = []
    for gid, g in graph.nodes.items():
        if slots[gid] != slot:
            continue
        for c in g.inbound:
            i = number.get(id(c))
            if i is None:
                wires.append(c)
                continue
            rid = f"recv{i}:{c.from_node}.{c.from_port}"
            nodes[rid] = _made(rid, receiver(i, c))
            wires.append(
                Connection(
                    from_node=rid,
                    to_node=gid,
                    to_port=c.to_port,
                    capacity=c.capacity,
                )
            )
        nodes[gid] = GraphNode(
            g.decl,
            g.spec,
            g.config,
            g.inputs,
            g.outputs,
            instance_of=g.instance_of,
            internal=g.internal,
        )
        for c in g.outbound:
            i = number.get(id(c))
            if i is not None:
                sid = f"send{i}:{c.to_node}.{c.to_port}"
                sends.append((sid, _made(sid, sender(i, c))))
                wires.append(
                    Connection(from_node=gid, from_port=c.from_port, to_node=sid)
                )
    nodes.update(sends)  # after every producer: still topological
    for c in wires:
        nodes[c.from_node].outbound.append(c)
        nodes[c.to_node].inbound.append(c)
    return Graph(graph.workflow, nodes)


def _made(nid: str, made: tuple[NodeSpec, Any]) -> GraphNode:
    spec, config = made
    inputs, outputs = spec.resolve_ports(config)
    decl = WorkflowNode(id=nid, type=spec.type_id)
    return GraphNode(decl, spec, config, inputs, outputs, internal=True)
