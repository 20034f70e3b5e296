"""Parallelism: instances, edge kinds, stable key hashing, identical results."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections import Counter
from typing import TYPE_CHECKING, Any

import msgspec
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings, strategies as st

from flowstream import FlowRuntime, Workflow, default_registry
from flowstream.cli import cli
from flowstream.core.node import NodeContext, node
from flowstream.core.workflow import WorkflowNode
from flowstream.errors import WorkflowValidationError
from flowstream.runtime.parallel import KEY_GROUPS, key_group, owner
from flowstream.runtime.plan import describe, plan
from flowstream.runtime.validation import validate

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path


def graph_of(wf: Workflow):
    return validate(wf, default_registry())


def canon(items: list[Any]) -> list[bytes]:
    """A multiset of items, comparable whatever the order across instances."""
    enc = msgspec.json.Encoder(order="deterministic")
    return sorted(enc.encode(x) for x in items)


def run_outputs(wf: Workflow, **options: Any) -> dict[str, dict[str, list[bytes]]]:
    result = FlowRuntime().run(wf, **options)
    assert result.ok, result.error
    return {
        gid: {port: canon(items) for port, items in ports.items()}
        for gid, ports in result.outputs.items()
    }


def with_parallelism(wf: Workflow, par: dict[str, int]) -> Workflow:
    copy = msgspec.convert(msgspec.to_builtins(wf), Workflow)
    for n in copy.nodes:
        if n.id in par:
            n.parallelism = par[n.id]
    return copy


def keyed_pipeline() -> Workflow:
    return (
        Workflow("keyed")
        .node("src", "source.values", values=[{"k": i % 5, "v": i} for i in range(60)])
        .node("double", "transform.map", expr="{'k': x.k, 'v': x.v * 2}")
        .node("total", "transform.reduce", op="sum", key="x.k", value="x.v")
        .node("out", "sink.collect")
        .connect("src -> double")
        .connect("double -> total")
        .connect("total -> out")
    )


# --- the key hash ---------------------------------------------------------------


def test_key_groups_are_the_same_in_every_process() -> None:
    keys: list[Any] = [
        0,
        1,
        -7,
        2**40,
        "ann",
        "bob",
        b"raw",
        [1, "a"],
        {"b": 1, "a": 2},
    ]
    script = (
        "import json, sys; from flowstream.runtime.parallel import key_group; "
        "keys = json.loads(sys.argv[1]); "
        "keys[6] = b'raw'; print(json.dumps([key_group(k) for k in keys]))"
    )
    wire = [*keys[:6], None, *keys[7:]]
    groups = set()
    for seed in ("1", "2"):  # Python's own hash differs between these
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run(
            [sys.executable, "-c", script, json.dumps(wire)],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        )
        groups.add(tuple(json.loads(done.stdout)))
    assert groups == {tuple(key_group(k) for k in keys)}


def test_equal_dicts_hash_alike_and_types_stay_apart() -> None:
    assert key_group({"a": 1, "b": 2}) == key_group({"b": 2, "a": 1})
    assert len({key_group(k) for k in (1, "1", b"1", 1.0)}) > 1


def test_small_int_keys_spread_over_instances() -> None:
    counts = Counter(owner(key_group(k), 2) for k in range(1000))
    assert min(counts.values()) > 400
    assert {owner(g, 3) for g in range(KEY_GROUPS)} == {0, 1, 2}


def test_a_key_that_cannot_be_hashed_names_itself() -> None:
    with pytest.raises(TypeError, match="cannot hash partition key"):
        key_group(object())


# --- validation and the plan ----------------------------------------------------


def test_edges_get_their_kinds() -> None:
    wf = keyed_pipeline()
    wf.parallelism = 2
    shown = describe(plan(graph_of(wf)))["parallel"]
    assert {gid: n["parallelism"] for gid, n in shown["nodes"].items()} == {
        "src": 1,
        "double": 2,
        "total": 2,
        "out": 2,
    }
    kinds = [(e["from"], e["to"], e["kind"]) for e in shown["edges"]]
    assert kinds == [
        ("src.out", "double.in", "rebalance"),
        ("double.out", "total.in", "key"),
        ("total.out", "out.in", "forward"),
    ]
    assert shown["edges"][1]["key"] == "key: x.k"


def test_merge_and_broadcast_edges() -> None:
    wf = (
        Workflow("lookup")
        .node("items", "source.values", values=[{"id": 1}, {"id": 2}])
        .node("table", "source.values", values=[{"id": 1, "name": "a"}])
        .node(
            "join",
            "join.lookup",
            key="x.id",
            table_key="x.id",
            table_first=True,
            parallelism=3,
        )
        .node("out", "sink.collect")
        .connect("items -> join.in")
        .connect("table -> join.table")
        .connect("join -> out")
    )
    shown = describe(plan(graph_of(wf)))["parallel"]
    assert [e["kind"] for e in shown["edges"]] == ["rebalance", "broadcast", "merge"]
    graph = graph_of(wf)
    assert len(graph.nodes["table"].outbound) == 3  # one per instance


def test_a_workflow_without_parallelism_is_not_rewritten() -> None:
    graph = graph_of(keyed_pipeline())
    assert graph.parallel is None
    assert list(graph.nodes) == ["src", "double", "total", "out"]


@pytest.mark.parametrize(
    ("node", "why"),
    [
        ("src", "a source runs one instance"),
        ("total", "no key"),
        ("sink", "one writer per file"),
    ],
)
def test_parallelism_a_node_cannot_have_is_explained(node: str, why: str) -> None:
    wf = (
        Workflow("bad")
        .node("src", "source.range", stop=3)
        .node("total", "transform.reduce", op="sum")
        .node("sink", "file.sink", path="out.jsonl")
        .connect("src -> total")
        .connect("total -> sink")
    )
    wf.get_node(node).parallelism = 2
    with pytest.raises(WorkflowValidationError) as info:
        graph_of(wf)
    (problem,) = info.value.problems
    assert (problem.node, problem.field) == (node, "parallelism")
    assert why in problem.message
    assert "cannot run 2 instances" in problem.message


def test_a_workflow_default_leaves_nodes_that_cannot_split_alone() -> None:
    wf = (
        Workflow("default", parallelism=4)
        .node("src", "source.range", stop=50)
        .node("total", "transform.reduce", op="sum")
        .node("out", "sink.collect")
        .connect("src -> total")
        .connect("total -> out")
    )
    graph = graph_of(wf)
    assert graph.parallel is not None
    assert graph.parallel.parallelism == {"src": 1, "total": 1, "out": 4}
    assert run_outputs(wf) == {"out": {"out": canon([{"key": None, "value": 1225}])}}


def test_out_of_range_parallelism_names_the_value() -> None:
    with pytest.raises(msgspec.ValidationError, match="parallelism must be between"):
        msgspec.convert({"id": "a", "type": "t", "parallelism": 0}, WorkflowNode)
    with pytest.raises(msgspec.ValidationError, match="got 129"):
        msgspec.convert({"name": "w", "parallelism": 129}, Workflow)


# --- same results ---------------------------------------------------------------


@pytest.mark.parametrize("fuse", [True, False])
def test_keyed_pipeline_gives_the_same_totals_in_parallel(fuse: bool) -> None:
    wf = keyed_pipeline()
    expected = run_outputs(wf, fuse=fuse)
    for par in ({"double": 2}, {"total": 3}, {"double": 3, "total": 2, "out": 2}):
        assert run_outputs(with_parallelism(wf, par), fuse=fuse) == expected, par


def test_an_updating_aggregate_runs_in_parallel_with_each_key_in_order() -> None:
    wf = (
        Workflow("best", mode="stream")
        .node("bids", "source.range", stop=2000)
        .node("rec", "transform.map", expr="{'k': x % 7, 'n': (x * 37) % 101}")
        .node("best", "transform.aggregate", op="max", key="x.k", value="x.n")
        .node("out", "sink.collect")
        .connect("bids -> rec")
        .connect("rec -> best")
        .connect("best -> out")
    )
    expected = FlowRuntime().run(wf).outputs["out"]["out"]
    result = FlowRuntime().run(with_parallelism(wf, {"best": 2}))
    assert result.ok, result.error
    got = result.outputs["out"]["out"]

    def per_key(changes: list[dict[str, Any]]) -> dict[Any, list[Any]]:
        found: dict[Any, list[Any]] = {}
        for c in changes:
            found.setdefault(c["key"], []).append((c["op"], c["value"]))
        return found

    # Keys interleave differently; each key's changelog is the same.
    assert per_key(got) == per_key(expected)
    assert {s for s in result.stats if s.startswith("best[")} == {"best[0]", "best[1]"}


def test_each_instance_of_a_keyed_node_sees_only_its_keys() -> None:
    wf = with_parallelism(keyed_pipeline(), {"total": 2})
    result = FlowRuntime().run(wf)
    assert result.ok
    seen = {gid: result.stats[gid].items_out for gid in ("total[0]", "total[1]")}
    by_owner = Counter(owner(key_group(k), 2) for k in range(5))
    assert seen == {"total[0]": by_owner[0], "total[1]": by_owner[1]}


def test_keyed_event_time_window_and_join_in_parallel() -> None:
    events = [{"user": f"u{i % 4}", "ts": i * 0.25, "n": i} for i in range(40)]
    clicks = [{"user": f"u{i % 4}", "ts": i * 0.5} for i in range(20)]
    wf = (
        Workflow("windows")
        .node("ev", "source.values", values=events)
        .node("cl", "source.values", values=clicks)
        .node(
            "per_user",
            "window.tumbling",
            size_ms=1000,
            time="event",
            timestamp_field="ts",
            key_field="user",
            op="sum",
            value="x.n",
        )
        .node(
            "pairs",
            "join.window",
            left_key="x.user",
            right_key="x.user",
            left_time="x.ts",
            right_time="x.ts",
            window_ms=500,
        )
        .node("w_out", "sink.collect")
        .node("j_out", "sink.collect")
        .connect("ev -> per_user")
        .connect("ev -> pairs.left")
        .connect("cl -> pairs.right")
        .connect("per_user -> w_out")
        .connect("pairs -> j_out")
    )
    expected = run_outputs(wf)
    assert expected["w_out"]["out"]
    assert expected["j_out"]["out"]
    par = {"per_user": 2, "pairs": 3, "w_out": 2}
    assert run_outputs(with_parallelism(wf, par)) == expected


# Random small DAGs: a source, then nodes that each read one or two earlier
# nodes (fan-in on one port) and may be read by several (fan-out), each with a
# random parallelism. Only order-insensitive results are compared: maps,
# filters, key_by, keyed reduce (sums), dedupe of whole items.
_OPS: list[tuple[str, dict[str, Any]]] = [
    ("transform.map", {"expr": "x * 3 % 17"}),
    ("transform.map", {"expr": "x + 1"}),
    ("transform.filter", {"expr": "x % 2 == 0"}),
    ("transform.flat_map", {"expr": "[x, x + 100]"}),
    ("transform.reduce", {"op": "sum", "key": "x % 4", "value": "x"}),
    ("transform.reduce", {"op": "count", "key": "x % 3"}),
    ("transform.dedupe", {"max_keys": 1000}),
]
_INT_OUT = {0, 1, 2, 3, 6}  # ops whose outputs are ints (fit every op's input)


@st.composite
def dags(draw: st.DrawFn) -> tuple[Workflow, dict[str, int]]:
    values = draw(st.lists(st.integers(0, 50), min_size=0, max_size=30))
    wf = Workflow("random").node("n0", "source.values", values=values)
    int_nodes = ["n0"]
    par: dict[str, int] = {}
    has_out = {"n0": False}
    count = draw(st.integers(1, 5))
    for i in range(1, count + 1):
        op = draw(st.integers(0, len(_OPS) - 1))
        type_id, config = _OPS[op]
        nid = f"n{i}"
        wf.node(nid, type_id, dict(config))
        ups = draw(st.lists(st.sampled_from(int_nodes), min_size=1, max_size=2))
        for up in dict.fromkeys(ups):
            wf.connect(f"{up} -> {nid}")
            has_out[up] = True
        has_out[nid] = False
        if op in _INT_OUT:
            int_nodes.append(nid)
        par[nid] = draw(st.integers(1, 3))
    return wf, par


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(dags(), st.booleans())
def test_random_dags_give_the_same_results_in_parallel(
    case: tuple[Workflow, dict[str, int]], fuse: bool
) -> None:
    wf, par = case
    expected = run_outputs(wf, fuse=fuse)
    assert run_outputs(with_parallelism(wf, par), fuse=fuse) == expected


@pytest.mark.parametrize("key", [None, "x % 7"])
async def test_partitioned_items_flow_while_the_source_runs(key: str | None) -> None:
    # An endless source: what a partition step takes must leave batch by
    # batch, not at the end of its input (which never comes).
    wf = Workflow("endless", mode="stream").node("src", "source.timer", interval_ms=1)
    if key is None:
        wf.node("work", "transform.map", expr="x + 1", parallelism=2)
    else:
        wf.node("work", "transform.scan", op="count", key=key, parallelism=2)
    wf.node("out", "sink.null").connect("src -> work").connect("work -> out")
    executor = FlowRuntime().executor(wf)
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(executor.run())
        deadline = asyncio.get_running_loop().time() + 20
        while not all(
            (s := executor.statistics().get(f"work[{i}]")) and s.items_in >= 2
            for i in (0, 1)
        ):
            assert asyncio.get_running_loop().time() < deadline, executor.statistics()
            await asyncio.wait([task], timeout=0.01)
        executor.stop()
    assert task.result().ok


def test_cli_plan_prints_instances_and_edge_kinds(tmp_path: Path) -> None:
    path = tmp_path / "wf.yaml"
    path.write_text(
        "name: p\nparallelism: 2\nnodes:\n"
        "  - {id: src, type: source.range, config: {stop: 5}}\n"
        "  - {id: n, type: transform.reduce, config: {op: count, key: x}}\n"
        "  - {id: out, type: sink.collect, parallelism: 1}\n"
        'connections: ["src -> n", "n -> out"]\n'
    )
    result = CliRunner().invoke(cli, ["plan", str(path)])
    assert result.exit_code == 0, result.output
    assert "parallelism n: 2 instances (n[0], n[1])" in result.output
    assert "edge src.out -> n.in: key by key: x, 1 -> 2" in result.output
    assert "edge n.out -> out.in: merge, 2 -> 1" in result.output


def test_cli_address_without_the_ray_backend_is_a_usage_error(
    tmp_path: Path,
) -> None:
    path = tmp_path / "wf.yaml"
    path.write_text(
        "name: p\nnodes: [{id: s, type: source.range, config: {stop: 1}}]\n"
    )
    result = CliRunner().invoke(cli, ["run", str(path), "--address", "h:1"])
    assert result.exit_code == 2
    assert "--address names a Ray cluster" in result.output


def test_warnings_name_the_declared_node_once() -> None:
    wf = (
        Workflow("warn", mode="stream")
        .node("src", "source.timer", interval_ms=10)
        .node("n", "transform.scan", op="count", key="x", max_keys=None)
        .node("out", "sink.null")
        .connect("src -> n")
        .connect("n -> out")
    )
    wf.get_node("n").parallelism = 3
    warnings = graph_of(wf).warnings()
    assert [(w.node, w.field) for w in warnings] == [("n", "max_keys")]


async def test_partition_sends_each_item_to_its_key_groups_owner() -> None:
    # `partition` remembers the port of int and str keys; equal keys of other
    # classes (True == 1 == 1.0) still go by their own encoding's group.
    from flowstream.runtime.parallel import Partition, partition

    keys: list[Any] = [1, True, 1.0, "a", 1, True, 1.0, "a", (1, 2), (1.0, 2)]
    keys += list(range(300)) * 2
    emitted: list[tuple[str, Any]] = []

    class Ctx:
        def emit_many(self, port: str, items: list[Any]) -> None:
            emitted.extend((port, item) for item in items)

    async def batches() -> AsyncIterator[list[Any]]:
        yield [{"k": k} for k in keys]

    config = Partition(n=3, how="key", rule=lambda x: x["k"])
    async for _ in partition.fn(batches(), config=config, ctx=Ctx()):
        pass
    assert sorted(map(repr, (item["k"] for _, item in emitted))) == sorted(
        map(repr, keys)
    )
    for port, item in emitted:
        assert port == f"p{owner(key_group(item['k']), 3)}", item


@node("test.small_batches", batched=True)
async def small_batches() -> AsyncIterator[list[int]]:
    """0..3999 in batches of 16."""
    for i in range(0, 4000, 16):
        yield list(range(i, i + 16))


@node("test.slow_first_instance")
async def slow_first_instance(x: int, *, ctx: NodeContext) -> int:
    """One-shot: instance 0 takes 2 ms per item, the others no time."""
    if getattr(ctx, "instance", 0) == 0:
        await asyncio.sleep(0.002)
    return x


async def test_round_robin_gives_a_full_instances_share_to_one_with_room() -> None:
    # Strict turns would hand each instance half the items and hold the fast
    # one to the slow one's pace; instead the fast one takes what the slow
    # one has no room for. Every item still arrives once.
    registry = default_registry(entry_points=False)
    registry.register_all([small_batches, slow_first_instance])
    wf = (
        Workflow("uneven")
        .node("src", "test.small_batches")
        .node("work", "test.slow_first_instance", parallelism=2)
        .node("out", "sink.collect")
        .connect("src -> work")
        .connect("work -> out")
    )
    result = await FlowRuntime(registry).arun(wf, capacity=2)
    assert result.ok, result.error
    assert sorted(result.output("out")) == list(range(4000))
    slow, fast = (result.stats[f"work[{i}]"].items_in for i in (0, 1))
    assert slow + fast == 4000
    assert fast > 4 * slow, (slow, fast)


async def test_round_robin_gives_whole_batches_to_the_emptiest_inputs() -> None:
    # Equal room: each batch is split item after item (across batches);
    # unequal: the batch goes whole to those with the most room, so that an
    # instance that empties its input sooner gets more.
    from flowstream.runtime.parallel import Partition, partition

    rooms = {"p0": 2, "p1": 2, "p2": 2}
    emitted: list[tuple[str, list[Any]]] = []

    class Ctx:
        def room(self, port: str) -> int:
            return rooms[port]

        def emit_many(self, port: str, items: list[Any]) -> None:
            if items:  # as NodeRuntime.emit_many: nothing to send, no batch
                emitted.append((port, items))

    feed: asyncio.Queue[list[int]] = asyncio.Queue()

    async def batches() -> AsyncIterator[list[Any]]:
        while batch := await feed.get():
            yield batch

    config = Partition(n=3, how="round_robin")
    gen = partition.fn(batches(), config=config, ctx=Ctx())

    async def step(batch: list[int]) -> list[tuple[str, list[Any]]]:
        emitted.clear()
        await feed.put(batch)
        await anext(gen)
        return sorted(emitted)

    assert await step([0, 1, 2, 3]) == [("p0", [0, 3]), ("p1", [1]), ("p2", [2])]
    # The turn goes on from where the last batch left it: item 4 to p1.
    assert await step([4, 5]) == [("p1", [4]), ("p2", [5])]
    rooms.update(p0=1, p1=3, p2=0)
    assert await step([6, 7, 8]) == [("p1", [6, 7, 8])]
    rooms.update(p0=3, p1=3, p2=1)
    assert sorted(x for _, xs in await step(list(range(10))) for x in xs) == list(
        range(10)
    )
    assert {port for port, _ in emitted} == {"p0", "p1"}
    rooms.update(p0=0, p1=0, p2=0)  # all full: strict turns, each waits
    assert [port for port, _ in await step([20, 21, 22])] == ["p0", "p1", "p2"]
    await gen.aclose()


async def test_room_tells_how_many_batches_a_port_takes_without_waiting() -> None:
    from flowstream.runtime.channel import open_channel

    send, recv = open_channel[int](2)
    assert send.room() == 2
    send.send_nowait([1])
    assert send.room() == 1
    send.send_nowait([2])
    assert send.room() == 0
    assert await recv.receive() == [1]
    assert send.room() == 1
    send.close()
    assert send.room() == 0
    recv.close()
