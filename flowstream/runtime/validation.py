"""Workflow validation: every problem, in one pass, each naming its culprit.

`validate` checks what needs the registry: node ids, types, configs (including
every CEL expression and callable reference), ports, connections and cycles.
It returns a `Graph` (`flowstream.runtime.graph`): the checked workflow with
each node's spec and decoded config, and its edges indexed both ways, ready
for the planner. The per-node config checks are in
`flowstream.runtime.config_checks`, the edge checks (ports, cycles, unfed
inputs) in `flowstream.runtime.edge_checks`; this module walks the workflow
once and gathers what they find.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..core.cel import default_max_cost
from ..core.expr import ExprError, import_ref
from ..core.live import LiveRef
from ..core.node import NodeSpec
from ..core.workflow import NODE_ID, RetryWorkflow
from ..errors import Problem, UnknownNodeType, WorkflowValidationError
from .config_checks import INVALID, check_config
from .edge_checks import (
    Ports,
    all_fed,
    check_connection,
    cycles,
    declared_order,
    known_ports,
    side_ports_into_direct_calls,
    unfed_ports,
)
from .graph import Graph as Graph, GraphNode as GraphNode
from .parallel import check_parallelism, expand
from .stepping import gc_paused

if TYPE_CHECKING:
    from ..core.workflow import Workflow
    from .registry import NodeRegistry

__all__ = ["Graph", "GraphNode", "validate"]


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
    # all the same (a static type): `known_ports` adds the valid nodes' ones.
    static: dict[str, Ports] = {}
    ports: dict[str, Ports] | None = None  # made on first need
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
            config = check_config(decl, spec, problems, allow_callables, max_cel_cost)
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
        if config is not INVALID:
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
                ports = known_ports(workflow, nodes, static)
            check_connection(conn, ports, seen, problems)

    order = declared_order(workflow)
    if len(order) < len(seen):  # some nodes never came free: there are cycles
        for cycle in cycles(workflow):
            path = " -> ".join([*cycle, cycle[0]])
            problems.append(Problem(f"cycle: {path}", node=cycle[0]))

    if problems or len(nodes) < len(seen):
        # Counted from the declarations, so an edge from an invalid node
        # still counts.
        connected = {(c.to_node, c.to_port) for c in workflow.connections}
        if ports is None:
            ports = known_ports(workflow, nodes, static)
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
            if not all_fed(g)
            for port in unfed_ports(g)
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
    dropped = side_ports_into_direct_calls(graph)
    if dropped:
        raise WorkflowValidationError(dropped, source)
    return graph
