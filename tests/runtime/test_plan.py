"""The plan: segments, why a node heads its own task, channels, the DAG schedule."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from flowstream import NodeRegistry, Workflow
from flowstream.runtime.plan import describe, plan
from flowstream.runtime.validation import validate

ROOT = Path(__file__).resolve().parents[2]


def graph_of(wf: Workflow):
    return validate(wf, NodeRegistry.default())


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

    reg = NodeRegistry.default()
    reg.register(one)
    reg.register(add)
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
