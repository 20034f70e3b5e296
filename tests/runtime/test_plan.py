"""The plan: segments, why a node heads its own task, channels, the DAG schedule."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from hypothesis import given, settings, strategies as st

from flowstream import NodeRegistry, Workflow, default_registry
from flowstream.runtime.plan import describe, plan
from flowstream.runtime.validation import validate

ROOT = Path(__file__).resolve().parents[2]


def graph_of(wf: Workflow):
    return validate(wf, default_registry())


def linear() -> Workflow:
    return (
        Workflow("linear")
        .node("src", "source.range", stop=10)
        .node("double", "transform.map", expr="x * 2")
        .node("keep", "transform.filter", expr="x % 3 != 0")
        .node("out", "sink.collect")
        .connect("src -> double")
        .connect("double -> keep")
        .connect("keep -> out")
    )


def test_a_linear_chain_is_one_task() -> None:
    p = plan(graph_of(linear()))
    assert [s.nodes for s in p.segments] == [("src", "double", "keep", "out")]
    assert p.channels == ()
    assert p.not_fused == {}
    assert p.direct == ()
    assert p.schedule is None


def test_fusion_off_gives_every_node_a_task_and_says_why() -> None:
    p = plan(graph_of(linear()), fuse=False)
    assert [s.head for s in p.segments] == ["src", "double", "keep", "out"]
    assert set(p.not_fused.values()) == {"fusion is off for this run"}
    assert [(c.node, c.port, c.producers) for c in p.channels] == [
        ("double", "in", (("src", "out"),)),
        ("keep", "in", (("double", "out"),)),
        ("out", "in", (("keep", "out"),)),
    ]


def test_fan_out_and_fan_in_are_named() -> None:
    wf = (
        Workflow("fan")
        .node("src", "source.range", stop=3)
        .node("a", "transform.map", expr="x + 1")
        .node("b", "transform.map", expr="x + 2", fuse=False)
        .node("both", "sink.collect")
        .connect("src -> a")
        .connect("src -> b")
        .connect("a -> both")
        .connect("b -> both")
    )
    p = plan(graph_of(wf))
    assert p.not_fused["a"] == "fan-out: src.out feeds 2 inputs"
    assert p.not_fused["b"] == "fuse: false"
    assert p.not_fused["both"] == "fan-in: 2 connections into port 'in'"
    (into_both,) = [c for c in p.channels if c.node == "both"]
    assert into_both.producers == (("a", "out"), ("b", "out"))


def test_a_graph_is_planned_once_per_fusion_setting() -> None:
    g = graph_of(linear())
    assert plan(g) is plan(g)
    assert plan(g, fuse=False) is not plan(g)


def one_shot_registry() -> NodeRegistry:
    from flowstream import node

    @node("t.one")
    def one() -> int:
        return 1

    @node("t.add")
    def add(a: int, b: int) -> int:
        return a + b

    @node("t.inc")
    def inc(x: int) -> int:
        return x + 1

    reg = default_registry()
    reg.register(one)
    reg.register(add)
    reg.register(inc)
    return reg


def test_a_dag_of_calls_gets_a_flat_schedule() -> None:
    wf = (
        Workflow("dag")
        .node("x", "t.one")
        .node("y", "t.one")
        .node("s", "t.add")
        .connect("x -> s.a")
        .connect("y -> s.b")
    )
    p = plan(validate(wf, one_shot_registry()))
    assert p.segments == ()
    assert p.direct == ("x", "y", "s")
    sched = p.schedule
    assert sched is not None
    assert sched.ids == ("x", "y", "s")
    assert sched.ports == ((), (), ((0,), (1,)))
    assert sched.targets == ((2,), (2,), ())
    assert sched.indegree == (0, 0, 2)
    assert sched.collected == ((), (), ("out",))


def test_describe_is_plain_data() -> None:
    shown = describe(plan(graph_of(linear()), fuse=False))
    assert shown["tasks"] == 4
    assert shown["segments"][1]["why_own_task"] == "fusion is off for this run"
    json.dumps(shown)


def test_the_plan_command_prints_tasks_and_reasons() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "flowstream", "plan", "examples/ws_ingest.yaml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "6 nodes in 5 tasks" in out
    assert "rows.fields.n 'x.value.n': field path" in out
    assert "fan-in: 2 connections into port 'in'" in out
    assert "channel ingest.error, per_sensor.error => dead_letters.in" in out
    shown = json.loads(
        subprocess.run(
            [
                sys.executable,
                "-m",
                "flowstream",
                "plan",
                "--json",
                "--no-fuse",
                "examples/numbers.yaml",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert [s["head"] for s in shown["segments"]] == [
        "numbers",
        "double",
        "keep",
        "result",
    ]


def test_the_plan_says_how_each_expression_runs() -> None:
    wf = (
        Workflow("exprs")
        .node("src", "source.values", values=["a", "b"])
        .node("odd", "transform.filter", expr='x.startsWith("a") || x == "b"')
        .node("field", "transform.map", expr="x")
        .node("out", "sink.collect")
        .connect("src -> odd")
        .connect("odd -> field")
        .connect("field -> out")
    )
    shown = describe(plan(graph_of(wf)))
    runs = {e["node"]: e["runs"] for e in shown["expressions"]}
    assert runs == {"odd": "compiled", "field": "field path"}


# --- the flat schedule against a plain restatement of what it holds ------------


def _reference_order(wf: Workflow) -> list[str]:
    """Kahn's order, ready nodes in declaration order (validation's contract)."""
    left = {n.id: 0 for n in wf.nodes}
    for c in wf.connections:
        left[c.to_node] += 1
    ready = [gid for gid, k in left.items() if not k]
    order: list[str] = []
    while ready:
        gid = ready.pop(0)
        order.append(gid)
        for c in wf.connections:
            if c.from_node == gid:
                left[c.to_node] -= 1
                if not left[c.to_node]:
                    ready.append(c.to_node)
    return order


@st.composite
def dags_of_calls(draw: st.DrawFn) -> Workflow:
    """Sources, one-port and two-port calls; edges, ports and order shuffled."""
    size = draw(st.integers(1, 9))
    decls: list[tuple[str, str]] = []
    conns: list[str] = []
    for i in range(size):
        kind = "t.one" if i == 0 else draw(st.sampled_from(["t.one", "t.inc", "t.add"]))
        decls.append((f"n{i}", kind))
        for port in {"t.one": (), "t.inc": ("in",), "t.add": ("a", "b")}[kind]:
            fans = draw(st.integers(1, 2)) if kind == "t.add" else 1
            for _ in range(fans):
                src = draw(st.integers(0, i - 1))
                # Only ``out``: validation refuses a side port into a call
                # the run makes directly (its values would be dropped).
                conns.append(f"n{src} -> n{i}.{port}")
    wf = Workflow("dag")
    for gid, kind in draw(st.permutations(decls)):
        wf.node(gid, kind)
    for text in draw(st.permutations(conns)):
        wf.connect(text)
    return wf


@settings(max_examples=150, deadline=None)
@given(dags_of_calls())
def test_the_flat_schedule_holds_what_its_fields_say(wf: Workflow) -> None:
    graph = validate(wf, one_shot_registry())
    assert list(graph.nodes) == _reference_order(wf)
    sched = plan(graph).schedule
    assert sched is not None
    index = {gid: i for i, gid in enumerate(graph.nodes)}
    for i, g in enumerate(graph.nodes.values()):
        feeds = [
            tuple(
                index[c.from_node]
                for c in g.inbound
                if c.to_port == port and c.from_port == "out"
            )
            for port in g.inputs
        ]
        assert sched.ports[i] == tuple(feeds)
        one_each = all(len(f) == 1 for f in feeds)
        assert sched.singles[i] == (tuple(f[0] for f in feeds) if one_each else None)
        assert sched.indegree[i] == len(g.inbound)
        assert sched.targets[i] == tuple(
            j
            for j, h in enumerate(graph.nodes.values())
            for c in h.inbound
            if c.from_node == g.id
        )
        read = {c.from_port for c in g.outbound}
        assert sched.collected[i] == tuple(
            p for p in g.outputs if p not in read and p != "error"
        )
    assert sched.roots == tuple(i for i, k in enumerate(sched.indegree) if not k)
