"""Workflow validation: every problem, in one pass, each naming its culprit.

`validate` checks what needs the registry: node ids, types, configs (including
every CEL expression and callable reference), ports, connections and cycles.
It returns a `Graph`: the checked workflow with each node's spec and decoded
config, and its edges indexed both ways, ready for the executor.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec

from ..core.cel import ASSUMED_INPUT_SIZE, default_max_cost
from ..core.expr import (
    ExprError,
    check_expr,
    expr_cost,
    expr_fields,
    import_ref,
    resolve_callable,
)
from ..core.live import LiveRef, misplaced_live
from ..core.node import OUT_PORT, NodeSpec
from ..core.workflow import (
    NODE_ID,
    Connection,
    RetryWorkflow,
    Workflow,
    WorkflowNode,
    describe_validation_error,
)
from ..errors import Problem, UnknownNodeType, WorkflowValidationError
from .parallel import check_parallelism, expand
from .stepping import gc_paused

if TYPE_CHECKING:
    from collections.abc import Iterator

    from .parallel import Expansion
    from .registry import NodeRegistry

__all__ = ["Graph", "GraphNode", "validate"]


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
            if getattr(config, "max_keys", 0) is not None or not _keyed(config):
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


def validate(
    workflow: Workflow,
    registry: NodeRegistry,
    *,
    source: str | None = None,
    allow_callables: bool = True,
    max_cel_cost: int | None = None,
) -> Graph:
    """Check a workflow against a registry and return its `Graph`.

    Args:
        workflow: The workflow to check.
        registry: Where node types are looked up.
        source: A file name to put in the error message.
        allow_callables: Whether ``fn: "module:attr"`` references may be
            imported (servers turn this off for untrusted workflows).
        max_cel_cost: The ceiling on a CEL expression's static cost estimate
            (default: the process-wide ceiling of `flowstream.core.cel`; the
            server passes a lower one for uploads).

    Raises:
        WorkflowValidationError: Lists every problem found.
    """
    with gc_paused(long_lived=True):  # a graph: thousands of long-lived objects
        limit = default_max_cost() if max_cel_cost is None else max_cel_cost
        return _validate(workflow, registry, source, allow_callables, limit)


def _node_type(type_id: str, registry: NodeRegistry, allow_callables: bool) -> NodeSpec:
    """The registered type, or one named by reference (``"module:attr"``).

    Raises:
        UnknownNodeType: Neither registered nor a reference.
        ExprError: A reference that does not import, is not a node type, or
            is not allowed here.
    """
    if isinstance(type_id, LiveRef):
        if not allow_callables:
            msg = f"Python node types are not allowed here ({type_id!s})"
            raise ExprError(msg)
        if not isinstance(type_id.target, NodeSpec):
            msg = (
                f"{type_id!s} is a {type(type_id.target).__name__}, not a node type "
                "(a function decorated with @node)"
            )
            raise ExprError(msg)
        return type_id.target
    if ":" not in type_id or type_id in registry:
        return registry.get(type_id)
    if not allow_callables:
        msg = f"Python callables are not allowed here ({type_id!r}); use CEL"
        raise ExprError(msg)
    spec = import_ref(type_id)
    if not isinstance(spec, NodeSpec):
        msg = (
            f"{type_id!r} is a {type(spec).__name__}, not a node type (a function "
            "decorated with @node)"
        )
        raise ExprError(msg)
    return spec


def _validate(
    workflow: Workflow,
    registry: NodeRegistry,
    source: str | None,
    allow_callables: bool,
    max_cel_cost: int,
) -> Graph:
    if workflow.mode == "routed":
        problem = Problem(
            "a routed workflow runs with flowstream.routed.Flow "
            "(or `flowstream run`), not as a dataflow",
            field="mode",
        )
        raise WorkflowValidationError([problem], source)
    problems: list[Problem] = []
    nodes: dict[str, GraphNode] = {}
    # The ports of the nodes with an invalid config whose ports are known
    # all the same (a static type): `_known_ports` adds the valid nodes' ones.
    static: dict[str, _Ports] = {}
    ports: dict[str, _Ports] | None = None  # made on first need
    seen: set[str] = set()
    specs: dict[str, NodeSpec] = {}

    for decl in workflow.nodes:
        if not NODE_ID.match(decl.id):
            problems.append(
                Problem(
                    "a node id must start with a letter or _ and hold only "
                    "letters, digits, _ and - (no dots: they name ports)",
                    node=decl.id,
                )
            )
        if decl.id in seen:
            problems.append(Problem("duplicate node id", node=decl.id))
            continue
        seen.add(decl.id)
        if isinstance(decl.error_handling, RetryWorkflow):
            # Restarting the whole run is the workflow's decision, not one
            # node's: set on a node it used to behave as stop_workflow.
            problems.append(
                Problem(
                    "retry_workflow restarts the whole run, so it belongs at "
                    "workflow level (error_handling: {mode: retry_workflow} "
                    "beside nodes:); a node takes stop_workflow or "
                    "continue_on_error, and retry: {max_attempts: N} to retry "
                    "its own item",
                    node=decl.id,
                    field="error_handling",
                )
            )
        type_id = decl.type
        # Most workflows use a few types many times: look each name up once
        # (a plain name only: a LiveRef's text need not name one object).
        spec = specs.get(type_id) if type(type_id) is str else None
        if spec is None:
            try:
                spec = _node_type(type_id, registry, allow_callables)
            except (UnknownNodeType, ExprError) as exc:
                problems.append(Problem(str(exc), node=decl.id, field="type"))
                continue
            if type(type_id) is str:
                specs[type_id] = spec
        if spec.config_type is None and not decl.config and decl.retry is None:
            config = None  # no settings at all: nothing to decode or check
        else:
            config = _check_config(decl, spec, problems, allow_callables, max_cel_cost)
        if decl.concurrency > 1 and not (spec.shape == "call" and spec.is_async):
            text = (
                "concurrency applies to one-shot async nodes (async def "
                f"f(x) -> y); {spec.type_id} is not one"
            )
            if spec.config_type is not None and "concurrency" in (
                spec.config_type.__struct_fields__
            ):
                text += " (its own concurrency is a config field: config.concurrency)"
            problems.append(Problem(text, node=decl.id, field="concurrency"))
        if decl.timeout_ms is not None and spec.shape != "call":
            problems.append(
                Problem(
                    "timeout_ms applies to one-shot nodes (a function called once "
                    f"per item); {spec.type_id} is a generator",
                    node=decl.id,
                    field="timeout_ms",
                )
            )
        if config is not _INVALID:
            if spec.ports is None:  # static ports (resolve_ports, without a call)
                inputs, outputs = spec.inputs, spec.outputs
            else:
                inputs, outputs = spec.resolve_ports(config)
            if decl.concurrency > 1 and len(inputs) != 1:
                problems.append(
                    Problem(
                        "concurrency applies to nodes with one input port; "
                        f"this one has {len(inputs)}",
                        node=decl.id,
                        field="concurrency",
                    )
                )
            nodes[decl.id] = GraphNode(decl, spec, config, inputs, outputs, [], [])
        elif spec.ports is None:
            static[decl.id] = (spec.type_id, spec.inputs, spec.outputs, None)

    for conn in workflow.connections:
        src, dst = nodes.get(conn.from_node), nodes.get(conn.to_node)
        if (
            src is not None
            and dst is not None
            and conn.from_port in src.outputs
            and conn.to_port in dst.inputs
            and (conn.capacity is None or conn.capacity >= 0)
        ):
            # The usual case, checked without building any message.
            src.outbound.append(conn)
            dst.inbound.append(conn)
        else:
            if ports is None:
                ports = _known_ports(workflow, nodes, static)
            _check_connection(conn, ports, seen, problems)

    order = _declared_order(workflow)
    if len(order) < len(seen):  # some nodes never came free: there are cycles
        for cycle in _cycles(workflow):
            path = " -> ".join([*cycle, cycle[0]])
            problems.append(Problem(f"cycle: {path}", node=cycle[0]))

    if problems or len(nodes) < len(seen):
        # Counted from the declarations, so an edge from an invalid node
        # still counts.
        connected = {(c.to_node, c.to_port) for c in workflow.connections}
        if ports is None:
            ports = _known_ports(workflow, nodes, static)
        unfed = [
            (node_id, port)
            for node_id, (_, inputs, _, _) in ports.items()
            for port in inputs
            if (node_id, port) not in connected
        ]
    else:  # every edge is in the graph: read its own
        unfed = [
            (node_id, port)
            for node_id, g in nodes.items()
            if not _all_fed(g)
            for port in _unfed(g)
        ]
    for node_id, port in unfed:
        problems.append(
            Problem(f"input port {port!r} is not connected", node=node_id, field=port)
        )

    problems.extend(check_parallelism(nodes, workflow.parallelism))
    if problems:
        raise WorkflowValidationError(problems, source)
    # The declared graph's order is one of the valid nodes' graph too (same
    # nodes and edges, once every problem is ruled out).
    graph = expand(Graph(workflow, {gid: nodes[gid] for gid in order}))
    dropped = _side_ports_into_direct_calls(graph)
    if dropped:
        raise WorkflowValidationError(dropped, source)
    return graph


_Ports = tuple[str, tuple[str, ...], tuple[str, ...], "GraphNode | None"]


def _known_ports(
    workflow: Workflow, nodes: dict[str, GraphNode], static: dict[str, _Ports]
) -> dict[str, _Ports]:
    """The ports of every node whose ports are known, in declaration order.

    A valid node's, and an invalid one's whose type has static ports: (type
    id, inputs, outputs, the valid node or None).
    """
    known: dict[str, _Ports] = {}
    for decl in workflow.nodes:
        g = nodes.get(decl.id)
        if g is not None:
            known[decl.id] = (g.spec.type_id, g.inputs, g.outputs, g)
        elif decl.id in static:
            known[decl.id] = static[decl.id]
    return known


def _all_fed(g: GraphNode) -> bool:
    """Whether each input port of ``g`` is fed, told without a set if it can be.

    Its connections all go to its own ports (checked): as many connections
    as ports, each to another port, feed every port.
    """
    inbound, inputs = g.inbound, g.inputs
    count = len(inputs)
    if len(inbound) != count:
        return not count or (len(inbound) > count and not _unfed(g))
    if count < 2:
        return True
    if count == 2:
        return inbound[0].to_port != inbound[1].to_port
    return not _unfed(g)


def _side_ports_into_direct_calls(graph: Graph) -> list[Problem]:
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


def _unfed(g: GraphNode) -> list[str]:
    """The input ports of ``g`` that no connection feeds."""
    fed = {c.to_port for c in g.inbound}
    return [port for port in g.inputs if port not in fed]


_INVALID: Any = object()


def _keyed(config: Any) -> bool:
    """Whether a node's config groups by key (window, scan, reduce, lookup)."""
    if getattr(config, "table", None) is not None:
        return False  # join.lookup with a static table: nothing grows
    return bool(
        getattr(config, "table_key", None) is not None
        or getattr(config, "key", None) is not None
        or getattr(config, "key_field", None) is not None
        or getattr(config, "keyed", False)
    )


def _check_config(
    decl: WorkflowNode,
    spec: NodeSpec,
    problems: list[Problem],
    allow_callables: bool,
    max_cel_cost: int,
) -> Any:
    try:
        config = spec.decode_config(decl.config)
    except msgspec.ValidationError as exc:
        message, path = describe_validation_error(exc)
        if not path and spec.config_type is not None:
            # A check in the config's __post_init__ has no path from msgspec;
            # by convention its message starts with the field it is about.
            first = message.split(" ", 1)[0]
            names = {f.encode_name for f in msgspec.structs.fields(spec.config_type)}
            if first in names:
                path = first
        problems.append(
            Problem(message, node=decl.id, field=f"config.{path}" if path else "config")
        )
        return _INVALID
    bad = False
    if config is None and decl.retry is None:
        return None  # no settings at all (a plain function node)
    for path, value in _non_finite(config, "config", decl.retry):
        # NaN compares false with everything, so range checks let it (and
        # infinity, where only a lower bound is checked) through: an interval
        # of .nan made a timer that never fires and a DAG run that never ends.
        problems.append(
            Problem(f"must be a finite number, got {value}", node=decl.id, field=path)
        )
        bad = True
    if config is None:
        return None
    for path in misplaced_live(config):
        problems.append(
            Problem(
                "takes no Python callable (only expression and function fields do)",
                node=decl.id,
                field=f"config.{path}",
            )
        )
        bad = True
    for path, kind, text in expr_fields(config):
        try:
            if isinstance(text, LiveRef) and not allow_callables:
                msg = f"Python callables are not allowed here ({text!s}); use CEL"
                raise ExprError(msg)
            if kind == "cel":
                check_expr(text)
                _check_cost(text, max_cel_cost)
            elif not allow_callables:
                msg = f"Python callables are not allowed here ({text!r}); use CEL"
                raise ExprError(msg)
            else:
                resolve_callable(text)
        except ExprError as exc:
            problems.append(Problem(str(exc), node=decl.id, field=f"config.{path}"))
            bad = True
    return _INVALID if bad else config


def _non_finite(config: Any, name: str, retry: Any) -> Iterator[tuple[str, float]]:
    """The float settings of a node (its config and retry) that are NaN or inf.

    Only settings: a struct's fields, nested structs included; data inside
    lists and dicts (``source.values``) may be any float.
    """
    stack: list[tuple[str, Any]] = [(name, config), ("retry", retry)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, msgspec.Struct):
            for info in reversed(msgspec.structs.fields(value)):
                stack.append((f"{path}.{info.encode_name}", getattr(value, info.name)))
        elif type(value) is float and not math.isfinite(value):
            yield path, value


def _check_cost(text: str, limit: int) -> None:
    """Refuse an expression whose static cost estimate is over ``limit``.

    Raises:
        ExprError: The estimate is over the ceiling, or cannot be made.
    """
    cost = expr_cost(text)
    if cost is None:
        msg = f"the cost of the CEL expression {text!r} cannot be bounded; simplify it"
        raise ExprError(msg)
    if cost > limit:
        msg = (
            f"the CEL expression {text!r} may cost up to {cost:,} steps (lists read "
            f"from the item counted as {ASSUMED_INPUT_SIZE:,} long), over the limit "
            f"of {limit:,}; nest fewer comprehensions"
        )
        raise ExprError(msg)


def _check_connection(
    conn: Connection,
    ports: dict[str, _Ports],
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


def _cycles(workflow: Workflow) -> list[list[str]]:
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


def _declared_order(workflow: Workflow) -> list[str]:
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
