"""The checks of a workflow's edges: ports, capacities, cycles, unfed inputs.

`flowstream.runtime.validation` calls them once every node is checked: each
connection is named with what is wrong with it (an unknown node or port, a
negative capacity) and kept on both its nodes otherwise; cycles are listed
once each; every input port no connection feeds is named; and an edge from
a side port into a one-shot node that the run calls directly is refused,
since its values would never reach it. `declared_order` is the topological
order the `Graph` keeps.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING

from ..core.node import OUT_PORT
from ..errors import Problem

if TYPE_CHECKING:
    from ..core.workflow import Connection, Workflow
    from .graph import Graph, GraphNode

__all__ = [
    "Ports",
    "all_fed",
    "check_connection",
    "cycles",
    "declared_order",
    "known_ports",
    "side_ports_into_direct_calls",
    "unfed_ports",
]


Ports = tuple[str, tuple[str, ...], tuple[str, ...], "GraphNode | None"]


def known_ports(
    workflow: Workflow, nodes: dict[str, GraphNode], static: dict[str, Ports]
) -> dict[str, Ports]:
    """The ports of every node whose ports are known, in declaration order.

    A valid node's, and an invalid one's whose type has static ports: (type
    id, inputs, outputs, the valid node or None).
    """
    known: dict[str, Ports] = {}
    for decl in workflow.nodes:
        g = nodes.get(decl.id)
        if g is not None:
            known[decl.id] = (g.spec.type_id, g.inputs, g.outputs, g)
        elif decl.id in static:
            known[decl.id] = static[decl.id]
    return known


def all_fed(g: GraphNode) -> bool:
    """Whether each input port of ``g`` is fed, told without a set if it can be.

    Its connections all go to its own ports (checked): as many connections
    as ports, each to another port, feed every port.
    """
    inbound, inputs = g.inbound, g.inputs
    count = len(inputs)
    if len(inbound) != count:
        return not count or (len(inbound) > count and not unfed_ports(g))
    if count < 2:
        return True
    if count == 2:
        return inbound[0].to_port != inbound[1].to_port
    return not unfed_ports(g)


def unfed_ports(g: GraphNode) -> list[str]:
    """The input ports of ``g`` that no connection feeds."""
    fed = {c.to_port for c in g.inbound}
    return [port for port in g.inputs if port not in fed]


def check_connection(
    conn: Connection,
    ports: dict[str, Ports],
    known: set[str],
    problems: list[Problem],
) -> None:
    """Name what is wrong with a connection; keep it if nothing is."""
    ok = True
    for end, node_id in (("from_node", conn.from_node), ("to_node", conn.to_node)):
        if node_id not in known:
            problems.append(
                Problem(f"connection {conn}: no node {node_id!r}", field=end)
            )
            ok = False
    if conn.capacity is not None and conn.capacity < 0:
        problems.append(
            Problem(f"connection {conn}: capacity must be >= 0", field="capacity")
        )
        ok = False
    src, dst = ports.get(conn.from_node), ports.get(conn.to_node)
    if src is not None and conn.from_port not in src[2]:
        names = ", ".join(src[2])
        problems.append(
            Problem(
                f"connection {conn}: {src[0]} has no output port "
                f"{conn.from_port!r} (outputs: {names})",
                node=conn.from_node,
                field=conn.from_port,
            )
        )
        ok = False
    if dst is not None and conn.to_port not in dst[1]:
        names = ", ".join(dst[1]) or "none"
        problems.append(
            Problem(
                f"connection {conn}: {dst[0]} has no input port "
                f"{conn.to_port!r} (inputs: {names})",
                node=conn.to_node,
                field=conn.to_port,
            )
        )
        ok = False
    src_node = src[3] if src is not None else None
    dst_node = dst[3] if dst is not None else None
    if ok and src_node is not None and dst_node is not None:
        src_node.outbound.append(conn)
        dst_node.inbound.append(conn)


def side_ports_into_direct_calls(graph: Graph) -> list[Problem]:
    """Edges from a side port into a one-shot node the run calls directly.

    A one-shot node (``def f(x) -> y``) fed only by other one-shot nodes is
    called in dependency order with its producers' results, which are
    their ``out`` values only (`flowstream.runtime.plan`, the same rule):
    the values of any other port on such an edge would never reach it.
    """
    if all(c.from_port == OUT_PORT for c in graph.workflow.connections):
        return []  # no side port is read at all (most DAGs): nothing to walk
    direct: set[str] = set()
    found: dict[tuple[str, str, str], Problem] = {}
    for gid, g in graph.nodes.items():  # topological: producers come first
        if g.spec.shape != "call":
            continue
        if any(c.from_node not in direct for c in g.inbound):
            continue
        direct.add(gid)
        for c in g.inbound:
            if c.from_port == OUT_PORT:
                continue
            src = graph.nodes[c.from_node]
            edge = (src.instance_of or src.id, c.from_port, g.instance_of or gid)
            if edge in found:  # one problem per declared edge, not instance
                continue
            text = (
                f"{edge[0]}.{edge[1]} -> {edge[2]}.{c.to_port}: one-shot "
                f"{edge[2]!r} is called directly with its producers' 'out' "
                f"values, so the values of port {edge[1]!r} would be dropped; "
                f"pass them through a stream node first (e.g. control.merge), "
                f"or make {edge[2]!r} an async generator node"
            )
            found[edge] = Problem(text, node=edge[2], field=c.to_port)
    return list(found.values())


def cycles(workflow: Workflow) -> list[list[str]]:
    """Return each cycle once, as the node ids along it in order."""
    succ: dict[str, list[str]] = defaultdict(list)
    for conn in workflow.connections:
        if conn.to_node not in succ[conn.from_node]:
            succ[conn.from_node].append(conn.to_node)
    color: dict[str, int] = {}  # 1 = on the current path, 2 = finished
    cycles: list[list[str]] = []
    seen: set[frozenset[str]] = set()
    for root in [n.id for n in workflow.nodes]:
        if root in color:
            continue
        path: list[str] = []
        stack: list[tuple[str, int]] = [(root, 0)]
        while stack:
            current, index = stack.pop()
            if index == 0:
                color[current] = 1
                path.append(current)
            nexts = succ.get(current, [])
            if index < len(nexts):
                stack.append((current, index + 1))
                target = nexts[index]
                state = color.get(target)
                if state is None:
                    stack.append((target, 0))
                elif state == 1:
                    cycle = path[path.index(target) :]
                    key = frozenset(cycle)
                    if key not in seen:
                        seen.add(key)
                        cycles.append(cycle)
            else:
                color[current] = 2
                path.pop()
    return cycles


def declared_order(workflow: Workflow) -> list[str]:
    """Kahn's order of the declared nodes, stable with declaration order.

    Connections to undeclared nodes are left out; nodes on a cycle (or after
    one) never come free, so a short order means there are cycles.
    """
    succ: dict[str, list[str]] = {n.id: [] for n in workflow.nodes}
    indegree = dict.fromkeys(succ, 0)
    for conn in workflow.connections:
        targets = succ.get(conn.from_node)
        if targets is not None and conn.to_node in indegree:
            targets.append(conn.to_node)
            indegree[conn.to_node] += 1
    # The order is its own queue: the loop reads what it appends.
    order = [gid for gid, deg in indegree.items() if deg == 0]
    for gid in order:
        for target in succ[gid]:
            left = indegree[target] - 1
            indegree[target] = left
            if not left:
                order.append(target)
    return order
