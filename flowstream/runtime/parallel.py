"""Parallelism: a node declared with ``parallelism: N`` runs as N instances.

The expansion is a rewrite of the validated `Graph`, so every executor runs
it unchanged: node ``count`` with parallelism 2 becomes ``count[0]`` and
``count[1]``, and every connection gets a **kind**:

* ``forward``: one instance feeds one instance (equal parallelism, or both 1);
* ``merge``: every upstream instance feeds the single downstream one;
* ``key``: each upstream instance hashes the key of every item (the key the
  downstream node groups by: ``transform.reduce``'s (``scan``'s,
  ``aggregate``'s) ``key``, a window's
  ``key``, the ``left_key``/``right_key`` of ``join.window``,
  ``join.interval`` and ``join.changelog``) and sends it to the
  instance that owns the key;
* ``rebalance``: stateless downstream instances get the items round-robin;
* ``broadcast``: every upstream instance sends everything to every
  downstream instance (``join.lookup``'s ``table``, so each instance holds the
  whole table while the lookups are spread).

``key`` and ``rebalance`` edges go through a ``runtime.partition`` node
behind each upstream instance (fused into its task), with one output port
per downstream instance; merging is plain fan-in. Keys are hashed stably
(CRC-32 of the key's MessagePack encoding with map keys sorted, mixed; never
Python's salted ``hash``) into `MAX_PARALLELISM` **key groups**, and each
instance owns a contiguous range of groups, so a key lands on the same
instance in every process, and state can move between parallelisms by group.

Sources run one instance unless their type splits its input
(`NodeSpec.partitioned`: ``file.source`` reads byte ranges of its file,
each instance the lines starting in its range). Nodes that cannot run
several instances: other sources, aggregates with no key
(one global group), and order- or resource-bound nodes (``control.zip``,
``transform.batch``, ``transform.throttle``, file and stdio sinks...).
A workflow-wide ``parallelism`` leaves them at one instance; a node that sets
its own is a validation problem that says why.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, cast

import msgspec

from ..core.expr import expr_function
from ..core.node import node
from ..core.workflow import MAX_PARALLELISM, Connection, WorkflowNode
from ..errors import Problem

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from ..core.node import NodeContext
    from .context import NodeRuntime
    from .validation import Graph, GraphNode

__all__ = [
    "KEY_GROUPS",
    "Edge",
    "EdgeKind",
    "Expansion",
    "check_parallelism",
    "describe_parallel",
    "expand",
    "instance_ids",
    "key_group",
    "owner",
    "parallelism_of",
]

KEY_GROUPS = MAX_PARALLELISM
"""How many key groups keys hash into (one instance owns one or more)."""

EdgeKind = Literal["forward", "merge", "key", "rebalance", "broadcast"]

# Map keys sorted: equal dicts always encode (and so hash) the same. MessagePack
# keeps 1, 1.0, "1" and b"1" apart.
_key_encoder = msgspec.msgpack.Encoder(order="deterministic")


_KNOWN_KEYS = 1 << 16  # int/str keys whose port `partition` remembers


def key_group(key: Any) -> int:
    """Return the key group (``0 <= g < KEY_GROUPS``) of a key, in any process.

    Raises:
        TypeError: The key has no MessagePack form.
    """
    try:
        data = _key_encoder.encode(key)
    except (TypeError, msgspec.EncodeError) as exc:
        msg = f"cannot hash partition key {key!r:.60}: {exc}"
        raise TypeError(msg) from exc
    # CRC-32's low bits barely differ for short keys (small ints all fell in
    # the lower half); a multiplicative mix spreads them, and the top bits
    # pick the group.
    mixed = (zlib.crc32(data) * 0x9E3779B1) & 0xFFFFFFFF
    return (mixed * KEY_GROUPS) >> 32


def owner(group: int, n: int) -> int:
    """Return which of ``n`` instances owns key group ``group`` (contiguous ranges)."""
    return group * n // KEY_GROUPS


# --- what each node type allows ------------------------------------------------

_STATELESS = frozenset(
    {
        "control.route",
        "control.split",
        "debug.log",
        "http.request",
        "http.sink",
        "kafka.sink",
        "nats.sink",
        "redis.sink",
        "sink.collect",
        "sink.null",
        "time.delay",
        "transform.filter",
        "transform.flat_map",
        "transform.json_parse",
        "transform.json_stringify",
        "transform.key_by",
        "transform.map",
        "transform.map_async",
        "transform.select",
        "wasm.filter",
        "wasm.flat_map",
        "wasm.map",
    }
)

_WHY_NOT = {
    "control.merge": "it interleaves its inputs in one order; run its upstreams in "
    "parallel instead",
    "control.zip": "it pairs the n-th items of its inputs, which needs them all",
    "transform.batch": "its batches are cut from one ordered stream",
    "transform.throttle": "its rate is one budget for all items",
    "file.sink": "one writer per file",
    "sqlite.sink": "one writer per database file",
    "stdio.sink": "one writer per standard output",
    "ws.sink": "one server per listening address",
    "routed.flow": "a routed flow runs its steps in order",
}


@dataclass(frozen=True, slots=True)
class _Keyed:
    text: str  # what the key is, for `flowstream plan`
    fn: Callable[[Any], Any]


_Spread = Literal["spread"]
_Broadcast = Literal["broadcast"]
_Rule = _Keyed | _Spread | _Broadcast


def _record_key(x: Any) -> Any:
    return x["key"] if type(x) is dict else None


def _identity(x: Any) -> Any:
    return x


def _cel_or(config: Any, field: str) -> _Keyed | None:
    text = getattr(config, field, None)
    if text is None:
        return None
    return _Keyed(f"{field}: {text}", expr_function(text))


def _rules(g: GraphNode) -> dict[str, _Rule] | str:
    """How each input port of ``g`` is partitioned; a str says why it cannot be."""
    type_id, config = g.spec.type_id, g.config
    if not g.inputs:
        check = g.spec.partitioned
        if check is None:
            return (
                "a source runs one instance (only sources whose input "
                "splits, such as file.source, run several)"
            )
        why = check(config)
        return {} if why is None else why
    if type_id in _STATELESS or (g.spec.shape == "call" and type_id not in _WHY_NOT):
        return dict.fromkeys(g.inputs, "spread")
    if type_id in ("transform.reduce", "transform.scan", "transform.aggregate"):
        rule = _cel_or(config, "key")
        if rule is None and config.keyed:
            rule = _Keyed("keyed: true (the records' key)", _record_key)
        if rule is None:
            return "it has no key (one global aggregate); set key or keyed: true"
        return {"in": rule}
    if type_id == "transform.dedupe":
        return {"in": _cel_or(config, "key") or _Keyed("the whole item", _identity)}
    if type_id.startswith("window."):
        rule = _cel_or(config, "key")
        if rule is None and config.key_field is not None:
            field = config.key_field

            def by_field(x: Any) -> Any:
                return x.get(field) if type(x) is dict else None

            rule = _Keyed(f"key_field: {field}", by_field)
        if rule is None:
            return "it has no key (one set of windows); set key or key_field"
        return {"in": rule}
    if type_id in ("join.window", "join.interval", "join.changelog"):
        left, right = _cel_or(config, "left_key"), _cel_or(config, "right_key")
        assert left is not None
        assert right is not None
        return {"left": left, "right": right}
    if type_id == "join.lookup":
        return {port: "spread" if port == "in" else "broadcast" for port in g.inputs}
    why = _WHY_NOT.get(type_id)
    if why is not None:
        return why
    return (
        f"flowstream cannot tell whether {type_id} keeps state across items; "
        "only built-in keyed or stateless nodes and one-shot functions run "
        "several instances"
    )


def parallelism_of(g: GraphNode, default: int) -> int:
    """The instances ``g`` runs: its own ``parallelism``, else ``default`` if it can."""
    if g.decl.parallelism is not None:
        return g.decl.parallelism
    # A source splits only when it says so itself: the workflow's default
    # never changes how a run reads its input.
    if default > 1 and g.inputs and isinstance(_rules(g), dict):
        return default
    return 1


def check_parallelism(nodes: dict[str, GraphNode], default: int) -> list[Problem]:
    """One problem per node that sets ``parallelism`` > 1 but cannot have it."""
    problems = []
    for gid, g in nodes.items():
        wanted = g.decl.parallelism
        if wanted is None or wanted == 1:
            continue
        rules = _rules(g)
        if isinstance(rules, str):
            message = f"cannot run {wanted} instances: {rules}"
            problems.append(Problem(message, node=gid, field="parallelism"))
    return problems


# --- the expansion -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Edge:
    """One declared connection after expansion: its kind and its ends' instances."""

    connection: Connection
    kind: EdgeKind
    senders: int
    receivers: int
    key: str | None  # what a ``key`` edge hashes


@dataclass(frozen=True, slots=True)
class Expansion:
    """How a graph was expanded (for `flowstream plan` and executors).

    Attributes:
        declared: The graph as declared, one node per id.
        parallelism: Instances per declared node.
        instances: The instance ids of each declared node.
        edges: Every declared connection, with its kind.
    """

    declared: Graph
    parallelism: dict[str, int]
    instances: dict[str, tuple[str, ...]]
    edges: tuple[Edge, ...]


def instance_ids(gid: str, n: int) -> tuple[str, ...]:
    """The ids of ``gid``'s instances: itself when it has one."""
    return (gid,) if n == 1 else tuple(f"{gid}[{i}]" for i in range(n))


class Partition(msgspec.Struct, frozen=True, kw_only=True):
    """Config of a ``runtime.partition`` node (made by `expand`, never decoded).

    Attributes:
        n: Output ports ``p0`` .. ``p{n-1}``, one per downstream instance.
        how: ``key`` (by the hash of ``rule(item)``) or ``round_robin``.
        rule: The key function for ``key``.
    """

    n: int
    how: Literal["key", "round_robin"]
    rule: Any = None


def _partition_ports(config: Partition) -> tuple[tuple[str, ...], tuple[str, ...]]:
    return ("in",), tuple(f"p{i}" for i in range(config.n))


@node("runtime.partition", config=Partition, ports=_partition_ports, batched=True)
async def partition(
    *inputs: AsyncIterator[list[Any]], config: Partition, ctx: NodeContext
) -> AsyncIterator[list[Any]]:
    """Send each item to the downstream instance that should get it.

    By key: the instance owning the key's group (an item whose key cannot be
    computed goes to instance 0, whose node then reports it exactly as a
    single instance would). Round-robin: item after item, across batches.
    Holds no state besides the round-robin position.

    Round-robin gives way to the ready: while the instances' inputs are not
    equally full, a batch goes whole to those with the most room (on Ray,
    an instance sharing its process with the source is slower than one
    alone, and strict turns would hold the other back to its pace; the
    faster one empties its input sooner, so it gets more batches).
    """
    n = config.n
    ports = [f"p{i}" for i in range(n)]
    emit_many = ctx.emit_many
    if config.how == "round_robin":
        room = cast("NodeRuntime", ctx).room
        every = list(range(n))
        start = 0
        async for batch in inputs[0]:
            rooms = [room(port) for port in ports]
            most = max(rooms)
            to = every
            if most and min(rooms) < most:
                to = [j for j in every if rooms[j] == most]
            k = len(to)
            if k == 1:
                emit_many(ports[to[0]], batch)
            else:
                for i, j in enumerate(to):
                    emit_many(ports[j], batch[(i - start) % k :: k])
                start = (start + len(batch)) % n
            # Emitted items leave when the node yields: each input batch
            # leaves as one batch per port, not all at the end of the input.
            yield []
    else:
        rule = config.rule
        # The port of each int or str key seen, so that a repeated key costs
        # a dict lookup, not an encoding and a CRC (only these two classes:
        # 1, 1.0 and True are equal dict keys with different encodings).
        # Bounded: cleared when full.
        known: dict[Any, int] = {}
        by_group_i = [owner(g, n) for g in range(KEY_GROUPS)]
        async for batch in inputs[0]:
            parts: list[list[Any]] = [[] for _ in ports]
            for x in batch:
                try:
                    key = rule(x)
                    cls = key.__class__
                    if cls is int or cls is str:
                        seen = known.get(key)
                        if seen is None:
                            if len(known) >= _KNOWN_KEYS:
                                known.clear()
                            seen = known[key] = by_group_i[key_group(key)]
                        i = seen
                    else:
                        i = by_group_i[key_group(key)]
                except Exception:  # the node itself reports a bad key
                    i = 0
                parts[i].append(x)
            for port, part in zip(ports, parts, strict=True):
                emit_many(port, part)
            yield []


def _edge_kind(rule: _Rule | None, a: int, b: int) -> EdgeKind:
    if b == 1:
        return "forward" if a == 1 else "merge"
    if rule == "broadcast":
        return "broadcast"
    if isinstance(rule, _Keyed):
        return "key"
    return "forward" if a == b else "rebalance"


def expand(graph: Graph) -> Graph:
    """Return ``graph`` with every node as its instances (itself if none has > 1).

    The result's ``parallel`` says how (`Expansion`); its nodes are in
    topological order, each instance remembering its declared node.
    """
    from .validation import Graph, GraphNode  # validation calls expand

    default = graph.workflow.parallelism
    if default == 1 and all(
        g.decl.parallelism in (None, 1) for g in graph.nodes.values()
    ):
        return graph  # the usual case, decided without a call per node
    par = {gid: parallelism_of(g, default) for gid, g in graph.nodes.items()}
    if all(p == 1 for p in par.values()):
        return graph
    inst = {gid: instance_ids(gid, p) for gid, p in par.items()}
    out: dict[str, GraphNode] = {}
    edges: list[Edge] = []
    wires: list[tuple[str, str, str, str, int | None]] = []
    for gid, g in graph.nodes.items():
        b = par[gid]
        rules = _rules(g) if b > 1 else {}
        assert isinstance(rules, dict)  # check_parallelism ruled the rest out
        for conn in g.inbound:
            a = par[conn.from_node]
            rule = rules.get(conn.to_port)
            kind = _edge_kind(rule, a, b)
            keyed = rule if isinstance(rule, _Keyed) else None
            edges.append(Edge(conn, kind, a, b, keyed.text if keyed else None))
            senders, receivers = inst[conn.from_node], inst[gid]
            cap = conn.capacity
            if kind in ("forward", "merge", "broadcast"):
                for i, s in enumerate(senders):
                    for j, r in enumerate(receivers):
                        if kind == "forward" and i != j and b > 1:
                            continue
                        wires.append((s, conn.from_port, r, conn.to_port, cap))
                continue
            for s in senders:
                pid = f"{s}=>{gid}.{conn.to_port}"
                how: Literal["key", "round_robin"] = "key" if keyed else "round_robin"
                config = Partition(n=b, how=how, rule=keyed.fn if keyed else None)
                inputs, outputs = partition.resolve_ports(config)
                decl = WorkflowNode(id=pid, type=partition.type_id)
                out[pid] = GraphNode(
                    decl, partition, config, inputs, outputs, internal=True
                )
                wires.append((s, conn.from_port, pid, "in", None))
                for j, r in enumerate(receivers):
                    wires.append((pid, f"p{j}", r, conn.to_port, cap))
        for iid in inst[gid]:
            decl = msgspec.structs.replace(g.decl, id=iid)
            out[iid] = GraphNode(
                decl, g.spec, g.config, g.inputs, g.outputs, instance_of=gid
            )
    for s, sp, r, rp, cap in wires:
        conn = Connection(
            from_node=s, from_port=sp, to_node=r, to_port=rp, capacity=cap
        )
        out[s].outbound.append(conn)
        out[r].inbound.append(conn)
    expansion = Expansion(graph, par, inst, tuple(edges))
    return Graph(graph.workflow, out, parallel=expansion)


def describe_parallel(graph: Graph) -> dict[str, Any] | None:
    """The expansion as plain data for ``flowstream plan``; None without one."""
    ex = graph.parallel
    if ex is None:
        return None
    return {
        "nodes": {
            gid: {
                "parallelism": n,
                "instances": list(ex.instances[gid]),
                **(
                    {"reads": "each instance reads its own part of the input"}
                    if n > 1 and not ex.declared.nodes[gid].inputs
                    else {}
                ),
            }
            for gid, n in ex.parallelism.items()
        },
        "edges": [
            {
                "from": f"{e.connection.from_node}.{e.connection.from_port}",
                "to": f"{e.connection.to_node}.{e.connection.to_port}",
                "kind": e.kind,
                "instances": f"{e.senders} -> {e.receivers}",
                **({"key": e.key} if e.key else {}),
                "means": _MEANS[e.kind],
            }
            for e in ex.edges
        ],
    }


_MEANS: dict[str, str] = {
    "forward": "each instance feeds its counterpart",
    "merge": "every instance feeds the one downstream",
    "key": "each item goes to the instance owning its key's group",
    "rebalance": "items spread round-robin over the instances",
    "broadcast": "every item goes to every instance",
}
