"""The plan: a validated `Graph` compiled once into what a run executes.

A plan is pure data, made with no event loop and no I/O, and cached on its
graph, so a graph run again (a DAG re-run, a server starting the same stored
workflow) plans once. It says:

* which nodes are **direct** one-shot calls (``call``-shaped nodes fed only by
  other direct nodes: a scheduler calls them in dependency order, with no task
  and no channel of their own);
* how the other nodes are cut into **segments**, one task each: a head and the
  chain fused behind it, and for every node that heads its own segment, *why*
  it was not fused into its upstream's;
* the **channels**: one per connected input port of a segment head, with its
  producers and capacity;
* which user generators run **lifted** as per-item functions
  (`runtime.lifting`), and why the others do not;
* for a graph whose every node is direct (a plain DAG of function calls), the
  **schedule** as flat arrays: for each node in topological order, the
  producers of each input port and the nodes it feeds, so that a run is a
  loop over indices.

``flowstream plan FILE`` prints it (`describe`). The local executor
instantiates it per run; a distributed executor can place its segments.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..core.expr import describe_expr, expr_fields
from ..core.node import ERROR_PORT, OUT_PORT
from .lifting import enabled as lifting_enabled, lift
from .parallel import describe_parallel
from .stepping import gc_paused

if TYPE_CHECKING:
    from collections.abc import Callable

    from .validation import Graph, GraphNode

__all__ = ["ChannelPlan", "DagSchedule", "Plan", "SegmentPlan", "describe", "plan"]


@dataclass(frozen=True, slots=True)
class SegmentPlan:
    """A head node and the chain fused behind it: one task."""

    head: str
    chain: tuple[str, ...]
    is_source: bool

    @property
    def nodes(self) -> tuple[str, ...]:
        """Every node of the segment, head first."""
        return (self.head, *self.chain)


@dataclass(frozen=True, slots=True)
class ChannelPlan:
    """The channel into one input port, and who sends on it."""

    node: str
    port: str
    producers: tuple[tuple[str, str], ...]  # (node, port) pairs
    capacity: int | None  # None: the run's default


@dataclass(frozen=True, slots=True)
class DagSchedule:
    """A graph of direct calls only, as flat arrays over topological indices.

    Attributes:
        ids: Node ids, in topological order (index ``i`` is node ``ids[i]``).
        ports: For each node, for each input port (in the node's port order),
            the indices of the nodes whose ``out`` feeds it.
        targets: For each node, the indices of the nodes it feeds (once per
            connection), whose pending count drops when it completes.
        indegree: For each node, how many connections feed it.
        roots: The nodes no connection feeds (the sources).
        collected: For each node, its output ports with no connection (their
            values are the run's outputs); empty for a node with none.
        singles: For each node whose every input port has exactly one
            producer (a source too), those producers' indices in port
            order; None for a node with a port fed by several producers,
            or by none.
        calls: For each node, its function bound to its config and whether
            it is a coroutine function; None for a node whose every call
            needs its run-time objects (a class, or a function taking
            ``ctx``).
    """

    ids: tuple[str, ...]
    ports: tuple[tuple[tuple[int, ...], ...], ...]
    targets: tuple[tuple[int, ...], ...]
    indegree: tuple[int, ...]
    roots: tuple[int, ...]
    collected: tuple[tuple[str, ...], ...]
    singles: tuple[tuple[int, ...] | None, ...]
    calls: tuple[tuple[Callable[..., Any] | None, bool], ...]


@dataclass(frozen=True, eq=False)
class Plan:
    """What a run of one graph executes (see the module docstring).

    Attributes:
        graph: The validated graph.
        fuse: Whether fusion was on when it was planned.
        direct: Ids of the direct one-shot nodes, in topological order.
        segments: The other nodes, cut into segments, in topological order.
        not_fused: For each segment head with inputs, why it heads a segment.
        channels: One per input port of a segment head.
        schedule: The flat DAG schedule when every node is direct, else None.
    """

    graph: Graph
    fuse: bool
    direct: tuple[str, ...]
    segments: tuple[SegmentPlan, ...]
    not_fused: dict[str, str]
    channels: tuple[ChannelPlan, ...]
    schedule: DagSchedule | None


def plan(graph: Graph, *, fuse: bool = True) -> Plan:
    """Return the plan of ``graph``, made once per graph and fusion setting."""
    found: Plan | None = graph.plans.get(fuse)
    if found is None:
        with gc_paused(long_lived=True):  # thousands of tuples: see gc_paused
            found = graph.plans[fuse] = _make(graph, fuse)
    return found


def _make(graph: Graph, fuse: bool) -> Plan:
    nodes = graph.nodes
    direct: dict[str, bool] = {}
    if all(g.spec.shape == "call" for g in nodes.values()):
        ids = tuple(nodes)  # a DAG of calls only: every node is direct
    else:
        for gid, g in nodes.items():  # topological: producers come first
            is_direct = g.spec.shape == "call"
            if is_direct:
                for c in g.inbound:
                    if not direct[c.from_node]:
                        is_direct = False
                        break
            direct[gid] = is_direct
        ids = tuple([gid for gid, is_direct in direct.items() if is_direct])
    segments: list[tuple[str, list[str], bool]] = []
    owner: dict[str, int] = {}
    not_fused: dict[str, str] = {}
    for gid, g in nodes.items() if len(ids) < len(nodes) else ():
        if direct[gid]:
            continue
        reason = _why_not_fused(g, nodes, direct, fuse)
        if reason is None:
            index = owner[g.inbound[0].from_node]
            segments[index][1].append(gid)
        else:
            if g.inputs:
                not_fused[gid] = reason
            index = len(segments)
            segments.append((gid, [], not g.inputs))
        owner[gid] = index
    fused = {
        (prev, nxt)
        for head, chain, _ in segments
        for prev, nxt in zip((head, *chain), chain, strict=False)
    }
    channels = []
    for head, _, _ in segments:
        g = nodes[head]
        for port in g.inputs:
            conns = [
                c
                for c in g.inbound
                if c.to_port == port and (c.from_node, head) not in fused
            ]
            if not conns:
                continue
            caps = [c.capacity for c in conns if c.capacity is not None]
            channels.append(
                ChannelPlan(
                    head,
                    port,
                    tuple((c.from_node, c.from_port) for c in conns),
                    min(caps) if caps else None,
                )
            )
    return Plan(
        graph=graph,
        fuse=fuse,
        direct=ids,
        segments=tuple(SegmentPlan(h, tuple(c), s) for h, c, s in segments),
        not_fused=not_fused,
        channels=tuple(channels),
        schedule=_schedule(graph) if len(ids) == len(nodes) and ids else None,
    )


def _why_not_fused(
    g: GraphNode, nodes: dict[str, GraphNode], direct: dict[str, bool], fuse: bool
) -> str | None:
    """Why ``g`` cannot join its upstream's segment; None if it can."""
    if not g.inputs:
        return "a source"
    if not fuse:
        return "fusion is off for this run"
    if not g.decl.fuse:
        return "fuse: false"
    if g.spec.timed:
        return "waits with deadlines (timed), so it reads a channel"
    if g.spec.coalesce:
        return "takes the batches waiting in its channel in one (coalesce)"
    if g.decl.concurrency > 1:
        return f"runs {g.decl.concurrency} calls at once from its own channel"
    if len(g.inputs) != 1:
        return f"{len(g.inputs)} input ports"
    if len(g.inbound) != 1:
        return f"fan-in: {len(g.inbound)} connections into port {g.inputs[0]!r}"
    conn = g.inbound[0]
    up = nodes[conn.from_node]
    if direct[conn.from_node]:
        return f"fed by the direct one-shot call {up.id!r}"
    if not up.decl.fuse:
        return f"upstream {up.id!r} has fuse: false"
    if conn.from_port != OUT_PORT:
        return f"fed by {up.id}.{conn.from_port}, not {up.id}.out"
    if up.decl.concurrency > 1:
        # Its results may be emitted at a checkpoint barrier, from outside
        # its stage: they must go to a channel.
        return f"upstream {up.id!r} runs {up.decl.concurrency} calls at once"
    fans = sum(1 for c in up.outbound if c.from_port == OUT_PORT)
    if fans != 1:
        return f"fan-out: {up.id}.out feeds {fans} inputs"
    return None


def _schedule(graph: Graph) -> DagSchedule:
    # One pass over the nodes, appending to flat lists; per node only what
    # differs from node to node is built (see the caches below).
    nodes = graph.nodes
    index = {gid: i for i, gid in enumerate(nodes)}
    n_nodes = len(index)
    units = [(i,) for i in range(n_nodes)]  # the port fed by node i alone
    ports: list[tuple[tuple[int, ...], ...]] = []
    singles: list[tuple[int, ...] | None] = []
    targets: list[list[int]] = [[] for _ in range(n_nodes)]
    collected: list[tuple[str, ...]] = []
    calls: list[tuple[Callable[..., Any] | None, bool]] = []
    indegree: list[int] = []
    roots: list[int] = []
    # Per port layout (a node type's inputs and outputs): computed once each.
    slots: dict[tuple[str, ...], dict[str, int]] = {}
    unconnected: dict[tuple[str, ...], tuple[str, ...]] = {}
    # Per node type (by spec identity): its bound call, when the same for
    # every node of the type (a plain function, no config, no timeout).
    plain: dict[int, tuple[Callable[..., Any] | None, bool]] = {}
    add_ports, add_single, add_collected = (
        ports.append,
        singles.append,
        collected.append,
    )
    for i, g in enumerate(nodes.values()):
        inbound = g.inbound
        inputs = g.inputs
        k = len(inbound)
        indegree.append(k)
        if not k:
            roots.append(i)
            if inputs:  # an input port nothing feeds
                add_ports(((),) * len(inputs))
                add_single(None)
            else:
                add_ports(())
                add_single(())
        elif k == 1 == len(inputs) and inbound[0].from_port == OUT_PORT:
            src = index[inbound[0].from_node]  # a chain: one port, one producer
            targets[src].append(i)
            add_single(units[src])
            add_ports((units[src],))
        elif k == 2 == len(inputs):  # the usual join of two: inline
            a, b = inbound
            ia, ib = index[a.from_node], index[b.from_node]
            targets[ia].append(i)
            targets[ib].append(i)
            pa, pb = a.to_port, b.to_port
            if pa != pb and a.from_port == OUT_PORT == b.from_port:
                if pa != inputs[0]:
                    ia, ib = ib, ia
                add_single((ia, ib))
                add_ports((units[ia], units[ib]))
            else:
                _gather(g, index, slots, ports, singles)
        else:
            for c in inbound:
                targets[index[c.from_node]].append(i)
            _gather(g, index, slots, ports, singles)
        outputs = g.outputs
        outbound = g.outbound
        if not outbound:
            free = unconnected.get(outputs)
            if free is None:
                free = unconnected[outputs] = tuple(
                    p for p in outputs if p != ERROR_PORT
                )
            add_collected(free)
        elif outputs == _OUT_AND_ERROR:
            # Its out is collected only if nothing reads it (only its error).
            fed = outbound[0].from_port == OUT_PORT or any(
                c.from_port == OUT_PORT for c in outbound
            )
            add_collected(() if fed else _ONLY_OUT)
        elif len(outputs) > 1 or outputs[0] != OUT_PORT:
            connected = {c.from_port for c in outbound}
            add_collected(
                tuple(p for p in outputs if p not in connected and p != ERROR_PORT)
            )
        else:
            add_collected(())
        spec = g.spec
        pair = plain.get(id(spec)) if g.decl.timeout_ms is None else None
        if pair is None:
            pair = _bound(g)
            if not (
                spec.wants_config
                or spec.is_class
                or spec.wants_ctx
                or g.decl.timeout_ms is not None
            ):  # a plain function: the same pair for every node of its type
                plain[id(spec)] = pair
        calls.append(pair)
    return DagSchedule(
        ids=tuple(nodes),
        ports=tuple(ports),
        targets=tuple(map(tuple, targets)),
        indegree=tuple(indegree),
        roots=tuple(roots),
        collected=tuple(collected),
        singles=tuple(singles),
        calls=tuple(calls),
    )


_OUT_AND_ERROR = (OUT_PORT, ERROR_PORT)
_ONLY_OUT = (OUT_PORT,)


def _gather(
    g: GraphNode,
    index: dict[str, int],
    slots: dict[tuple[str, ...], dict[str, int]],
    ports: list[tuple[tuple[int, ...], ...]],
    singles: list[tuple[int, ...] | None],
) -> None:
    """Append the producers of each input port of ``g`` (any fan-in)."""
    inputs = g.inputs
    slot = slots.get(inputs)
    if slot is None:
        slot = slots[inputs] = {p: j for j, p in enumerate(inputs)}
    feeds: list[list[int]] = [[] for _ in inputs]
    for c in g.inbound:
        if c.from_port == OUT_PORT:
            feeds[slot[c.to_port]].append(index[c.from_node])
    ports.append(tuple(map(tuple, feeds)))
    if all(len(f) == 1 for f in feeds):
        singles.append(tuple(f[0] for f in feeds))
    else:
        singles.append(None)


def _bound(g: GraphNode) -> tuple[Callable[..., Any] | None, bool]:
    spec = g.spec
    if spec.is_class or spec.wants_ctx or g.decl.timeout_ms is not None:
        # The long way, through the run's failure handling (which applies
        # timeout_ms), not a plain call.
        return None, spec.is_async
    fn = spec.fn
    if not spec.wants_config:
        return fn, spec.is_async
    config = g.config

    def bound(*args: Any) -> Any:
        return fn(*args, config=config)

    return bound, spec.is_async


def describe(p: Plan, *, mode: str | None = None) -> dict[str, Any]:
    """The plan as plain data, for ``flowstream plan`` (``--json``) and tests."""
    nodes = p.graph.nodes
    segments = [
        {
            "head": s.head,
            "nodes": [{"id": gid, "type": nodes[gid].spec.type_id} for gid in s.nodes],
            "source": s.is_source,
            "why_own_task": p.not_fused.get(s.head, "a source" if s.is_source else ""),
        }
        for s in p.segments
    ]
    return {
        "workflow": p.graph.workflow.name,
        "mode": mode or p.graph.workflow.mode,
        "fuse": p.fuse,
        "nodes": len(nodes),
        "tasks": len(p.segments),
        "segments": segments,
        "direct": list(p.direct),
        "channels": [
            {
                "to": f"{c.node}.{c.port}",
                "from": [f"{n}.{port}" for n, port in c.producers],
                "capacity": c.capacity,
            }
            for c in p.channels
        ],
        "dag_schedule": p.schedule is not None,
        "expressions": _expressions(p),
        "lifting": _lifting(p),
        "parallel": describe_parallel(p.graph),
    }


def _lifting(p: Plan) -> list[dict[str, str]]:
    """Per user generator node: ``lifted: map|filter``, or why it is not.

    Nodes with a kernel of their own, one-shot calls, sources and batch-aware
    nodes are not listed (they are never lifted).
    """
    found = []
    on = lifting_enabled()
    for gid, g in p.graph.nodes.items():
        spec = g.spec
        if spec.kernel is not None or spec.shape != "stream" or not g.inputs:
            continue
        if spec.batched or spec.is_class:
            continue
        how = lift(spec)
        if how.kind is not None and on:
            text = f"lifted: {how.kind}"
        elif how.kind is not None:
            text = f"not lifted: FLOWSTREAM_LIFT=0 (a {how.kind})"
        else:
            text = f"not lifted: {how.why_not}"
        found.append({"node": gid, "type": spec.type_id, "runs": text})
    return found


def _expressions(p: Plan) -> list[dict[str, str]]:
    """Every CEL expression and callable, and how it runs (compiled or not)."""
    found = []
    declared = p.graph.parallel.declared if p.graph.parallel else p.graph
    for gid, g in declared.nodes.items():
        if g.config is None or not hasattr(g.config, "__struct_fields__"):
            continue
        for path, kind, text in expr_fields(g.config):
            how = describe_expr(text) if kind == "cel" else "Python callable"
            found.append({"node": gid, "field": path, "source": str(text), "runs": how})
    return found
