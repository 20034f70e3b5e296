from __future__ import annotations

import itertools
import re
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import given, settings, strategies as st

from flowstream import default_registry
from flowstream.core.workflow import Workflow, parse_connection
from flowstream.errors import Problem, WorkflowValidationError
from flowstream.nodes.source import Range
from flowstream.runtime.validation import Graph, validate

if TYPE_CHECKING:
    from pathlib import Path

REGISTRY = default_registry(entry_points=False)


def check(wf: Workflow, **kwargs: Any) -> Graph:
    return validate(wf, REGISTRY, **kwargs)


def problems_of(wf: Workflow, **kwargs: Any) -> list[Problem]:
    with pytest.raises(WorkflowValidationError) as info:
        check(wf, **kwargs)
    return info.value.problems


def only(problems: list[Problem]) -> Problem:
    assert len(problems) == 1, problems
    return problems[0]


def pipeline(*middle: tuple[str, str, dict[str, Any]]) -> Workflow:
    """source.range -> each middle node in turn -> sink.collect."""
    wf = Workflow("p").node("src", "source.range", stop=3)
    previous = "src"
    for node_id, type_id, config in middle:
        wf.node(node_id, type_id, config).connect(previous, node_id)
        previous = node_id
    return wf.node("out", "sink.collect").connect(previous, "out")


# --- a valid workflow ---------------------------------------------------------


def test_valid_workflow_gives_a_graph_in_topological_order() -> None:
    # Declared out of order on purpose.
    wf = (
        Workflow("diamond")
        .node("out", "sink.collect")
        .node("left", "transform.map", expr="x + 1")
        .node("src", "source.range", stop=5, start=1)
        .node("right", "transform.filter", expr="x > 2")
        .node("spare", "sink.null")
        .connect("src -> left")
        .connect("src -> right", capacity=2)
        .connect("left -> out")
        .connect("right -> out")
        .connect("right.error -> spare")
    )
    graph = check(wf)
    assert graph.workflow is wf
    order = list(graph.nodes)
    assert sorted(order) == sorted(n.id for n in wf.nodes)
    for conn in wf.connections:
        assert order.index(conn.from_node) < order.index(conn.to_node)
    assert [n.id for n in graph.terminals] == ["out", "spare"]
    src = graph.nodes["src"]
    assert src.spec is REGISTRY.get("source.range")
    assert src.config == Range(stop=5, start=1)
    assert [str(c) for c in src.outbound] == [
        "src.out -> left.in",
        "src.out -> right.in",
    ]
    assert src.inbound == []
    assert [str(c) for c in graph.nodes["out"].inbound] == [
        "left.out -> out.in",
        "right.out -> out.in",
    ]


def test_source_alone_is_its_own_terminal() -> None:
    graph = check(Workflow("w").node("only", "source.values", values=[1]))
    assert list(graph.nodes) == ["only"]
    assert [n.id for n in graph.terminals] == ["only"]


def test_capacity_zero_is_allowed() -> None:
    wf = Workflow("w").node("s", "source.values", values=[]).node("o", "sink.null")
    check(wf.connect("s", "o", capacity=0))


# --- ids and types ------------------------------------------------------------


def test_duplicate_node_ids() -> None:
    wf = pipeline(("m", "transform.map", {"expr": "x"}))
    wf.node("m", "sink.null")
    problem = only(problems_of(wf))
    assert (problem.node, problem.message) == ("m", "duplicate node id")


def test_duplicate_is_found_even_when_the_first_is_invalid() -> None:
    wf = Workflow("w").node("a", "transform.mapp").node("a", "source.values", values=[])
    problems = problems_of(wf)
    assert [(p.node, p.message) for p in problems][1] == ("a", "duplicate node id")


@pytest.mark.parametrize("bad_id", ["1abc", "a.b", "has space", "", "é", "-a"])
def test_bad_node_id_format(bad_id: str) -> None:
    wf = Workflow("w").node(bad_id, "source.values", values=[1])
    problem = only(problems_of(wf))
    assert problem.node == bad_id
    assert "a node id must start with a letter or _" in problem.message


def test_unknown_node_type_with_suggestion() -> None:
    wf = pipeline(("m", "transform.mapp", {"expr": "x"}))
    problem = only(problems_of(wf))
    assert (problem.node, problem.field) == ("m", "type")
    assert "unknown node type 'transform.mapp'" in problem.message
    assert "did you mean 'transform.map'" in problem.message


def test_node_type_by_reference_is_imported() -> None:
    # examples/my_nodes.py's docstring: type: "examples.my_nodes:running_mean".
    wf = pipeline(("m", "examples.my_nodes:running_mean", {}))
    graph = check(wf)
    assert graph.nodes["m"].spec.type_id == "example.running_mean"


@pytest.mark.parametrize(
    ("ref", "why"),
    [
        ("examples.my_nodes:nothing", "has no attribute 'nothing'"),
        ("examples.my_nodes:TYPE_CHECKING", "is a bool, not a node type"),
        ("no_such_module_xyz:f", "cannot import module 'no_such_module_xyz'"),
    ],
)
def test_node_type_by_bad_reference_is_named(ref: str, why: str) -> None:
    problem = only(problems_of(pipeline(("m", ref, {}))))
    assert (problem.node, problem.field) == ("m", "type")
    assert why in problem.message


def test_node_type_by_reference_needs_callables_allowed() -> None:
    wf = pipeline(("m", "examples.my_nodes:running_mean", {}))
    problem = only(problems_of(wf, allow_callables=False))
    assert "Python callables are not allowed here" in problem.message


# --- connections --------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "missing", "field"),
    [("ghost -> out", "ghost", "from_node"), ("src -> ghost", "ghost", "to_node")],
)
def test_connection_to_a_missing_node(text: str, missing: str, field: str) -> None:
    wf = Workflow("w").node("src", "source.range", stop=1).node("out", "sink.null")
    wf.connect("src -> out").connect(text)
    problem = only(problems_of(wf))
    assert problem.field == field
    assert (
        problem.message == f"connection {parse_connection(text)}: no node {missing!r}"
    )


def test_unknown_output_port() -> None:
    wf = Workflow("w").node("src", "source.range", stop=1).node("out", "sink.null")
    problem = only(problems_of(wf.connect("src.evens -> out")))
    assert (problem.node, problem.field) == ("src", "evens")
    assert "source.range has no output port 'evens' (outputs: out, error)" in (
        problem.message
    )


def test_unknown_input_port() -> None:
    wf = Workflow("w").node("src", "source.range", stop=1).node("out", "sink.null")
    problems = problems_of(wf.connect("src -> out.left"))
    assert [(p.node, p.field) for p in problems] == [("out", "left"), ("out", "in")]
    assert "sink.null has no input port 'left' (inputs: in)" in problems[0].message
    assert problems[1].message == "input port 'in' is not connected"


def test_a_source_has_no_input_ports() -> None:
    wf = (
        Workflow("w")
        .node("a", "source.range", stop=1)
        .node("b", "source.range", stop=1)
    )
    problem = only(problems_of(wf.connect("a -> b")))
    assert (problem.node, problem.field) == ("b", "in")
    assert "has no input port 'in' (inputs: none)" in problem.message


def test_unconnected_input_port() -> None:
    wf = Workflow("w").node("m", "transform.map", expr="x")
    problem = only(problems_of(wf))
    assert (problem.node, problem.field) == ("m", "in")
    assert problem.message == "input port 'in' is not connected"


def test_negative_capacity() -> None:
    wf = Workflow("w").node("s", "source.values", values=[]).node("o", "sink.null")
    problem = only(problems_of(wf.connect("s", "o", capacity=-1)))
    assert problem.field == "capacity"
    assert problem.message == "connection s.out -> o.in: capacity must be >= 0"


# --- cycles -------------------------------------------------------------------


def test_cycle_names_the_nodes_in_order() -> None:
    wf = (
        Workflow("w")
        .node("src", "source.range", stop=1)
        .node("a", "transform.map", expr="x")
        .node("b", "transform.map", expr="x")
        .node("c", "transform.map", expr="x")
        .connect("src -> a")
        .connect("a -> b")
        .connect("b -> c")
        .connect("c -> a")
    )
    problem = only(problems_of(wf))
    assert problem.node == "a"
    assert problem.message == "cycle: a -> b -> c -> a"


def test_self_loop_is_a_cycle() -> None:
    wf = Workflow("w").node("a", "transform.map", expr="x").connect("a -> a")
    assert only(problems_of(wf)).message == "cycle: a -> a"


def test_two_separate_cycles_are_both_reported() -> None:
    wf = Workflow("w")
    for node_id in "abcd":
        wf.node(node_id, "transform.map", expr="x")
    wf.connect("a -> b").connect("b -> a").connect("c -> d").connect("d -> c")
    assert [p.message for p in problems_of(wf)] == [
        "cycle: a -> b -> a",
        "cycle: c -> d -> c",
    ]


# --- config -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "field", "pattern"),
    [
        ({"stop": "3"}, "config.stop", r"^expected `int`, got `str`$"),
        ({"stop": 3, "stpe": 1}, "config.stpe", r"unknown field `stpe`"),
        ({"start": 1}, "config.stop", r"missing required field `stop`"),
        ({"stop": 3, "step": 0}, "config.step", r"step must not be 0"),
    ],
)
def test_bad_config(config: dict[str, Any], field: str, pattern: str) -> None:
    wf = Workflow("w").node("r", "source.range", config)
    problem = only(problems_of(wf))
    assert (problem.node, problem.field) == ("r", field)
    assert re.search(pattern, problem.message), problem.message


def test_config_given_to_a_node_that_takes_none() -> None:
    wf = Workflow("w").node("s", "source.values", values=[]).node("o", "sink.null", x=1)
    problem = only(problems_of(wf.connect("s -> o")))
    assert (problem.node, problem.field) == ("o", "config")
    assert problem.message == "takes no config, got x"


@pytest.mark.parametrize(
    "config", [{}, {"expr": "x", "fn": "operator:neg"}], ids=["neither", "both"]
)
def test_map_needs_exactly_one_of_expr_and_fn(config: dict[str, Any]) -> None:
    problem = only(problems_of(pipeline(("m", "transform.map", config))))
    assert (problem.node, problem.field) == ("m", "config")
    assert "set exactly one of 'expr'" in problem.message


def test_cel_expression_that_does_not_compile() -> None:
    wf = pipeline(("m", "transform.map", {"expr": "x +\n  * 2"}))
    problem = only(problems_of(wf))
    assert (problem.node, problem.field) == ("m", "config.expr")
    assert problem.message.startswith("invalid CEL expression 'x +\\n  * 2': ")
    assert problem.message.endswith(
        ": syntax error at line 2, column 3: unexpected '*'"
    )


def test_valid_python_callable() -> None:
    graph = check(pipeline(("m", "transform.map", {"fn": "operator:neg"})))
    assert graph.nodes["m"].config.fn == "operator:neg"


@pytest.mark.parametrize(
    ("ref", "pattern"),
    [
        ("no_such_module_zz:f", r"cannot import module 'no_such_module_zz'"),
        ("operator:no_such_attr", r"module 'operator' has no attribute 'no_such_attr'"),
        ("math:pi", r"'math:pi' is a float, not a callable"),
        ("not a ref", r"expected `str` matching"),
    ],
)
def test_python_callable_that_does_not_resolve(ref: str, pattern: str) -> None:
    problem = only(problems_of(pipeline(("m", "transform.map", {"fn": ref}))))
    assert problem.node == "m"
    assert (problem.field or "").startswith("config")
    assert re.search(pattern, problem.message), problem.message


def test_python_callable_whose_module_fails_to_import(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "flowstream_broken_mod.py").write_text("1 / 0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    wf = pipeline(("m", "transform.map", {"fn": "flowstream_broken_mod:f"}))
    problem = only(problems_of(wf))
    assert problem.field == "config.fn"
    assert "ZeroDivisionError" in problem.message


def test_callables_can_be_disallowed() -> None:
    wf = pipeline(("m", "transform.filter", {"fn": "operator:truth"}))
    check(wf)
    problem = only(problems_of(wf, allow_callables=False))
    assert (problem.node, problem.field) == ("m", "config.fn")
    assert "Python callables are not allowed here ('operator:truth')" in problem.message
    # CEL is still fine.
    check(pipeline(("m", "transform.filter", {"expr": "x > 1"})), allow_callables=False)


# --- everything at once -------------------------------------------------------


def test_every_problem_is_reported_in_one_error() -> None:
    wf = (
        Workflow("everything")
        .node("src", "source.range", stop=3)
        .node("src", "sink.null")  # duplicate id
        .node("9lives", "source.values", values=[])  # bad id
        .node("typo", "transform.mapp")  # unknown type
        .node("cfg", "source.range", stopp=3)  # unknown config field
        .node("req", "source.range")  # missing required field
        .node("both", "transform.map", expr="x", fn="operator:neg")
        .node("cel", "transform.map", expr="x +")
        .node("imp", "transform.map", fn="no_such_module_zz:f")
        .node("py", "transform.filter", fn="operator:truth")  # not allowed
        .node("lonely", "transform.map", expr="x")  # unconnected input
        .node("a", "transform.map", expr="x")
        .node("b", "transform.map", expr="x")
        .node("out", "sink.collect")
        .connect("src -> both")
        .connect("src -> cel")
        .connect("src -> imp")
        .connect("src -> py")
        .connect("ghost -> out")  # missing node
        .connect("src.evens -> out")  # unknown output port
        .connect("src -> out.left")  # unknown input port
        .connect("src", "a", capacity=-2)  # negative capacity
        .connect("a -> b")
        .connect("b -> a")  # cycle
        .connect("cfg.nope -> out")  # bad port on a node with bad config
    )
    with pytest.raises(WorkflowValidationError) as info:
        check(wf, allow_callables=False, source="everything.yaml")
    exc = info.value
    found = {(p.node, p.field): p.message for p in exc.problems}
    expected = {
        ("src", None): "duplicate node id",
        ("9lives", None): "a node id must start",
        ("typo", "type"): "did you mean 'transform.map'",
        ("cfg", "config.stopp"): "unknown field `stopp`",
        ("req", "config.stop"): "missing required field `stop`",
        ("both", "config"): "set exactly one of",
        ("cel", "config.expr"): "invalid CEL expression 'x +'",
        ("imp", "config.fn"): "Python callables are not allowed",
        ("py", "config.fn"): "Python callables are not allowed",
        ("lonely", "in"): "input port 'in' is not connected",
        (None, "from_node"): "no node 'ghost'",
        ("src", "evens"): "no output port 'evens'",
        ("out", "left"): "no input port 'left'",
        (None, "capacity"): "capacity must be >= 0",
        ("a", None): "cycle: a -> b -> a",
        ("cfg", "nope"): "no output port 'nope'",
    }
    for key, text in expected.items():
        assert key in found, (key, list(found))
        assert text in found[key], (key, found[key])
    assert len(exc.problems) == len(expected)
    assert str(exc).startswith(f"everything.yaml: {len(expected)} problems\n")


# --- properties ---------------------------------------------------------------


@st.composite
def dags(draw: st.DrawFn) -> tuple[int, set[tuple[int, int]]]:
    size = draw(st.integers(min_value=1, max_value=9))
    pairs = [(i, j) for i in range(size) for j in range(i + 1, size)]
    edges = draw(st.sets(st.sampled_from(pairs), max_size=15)) if pairs else set()
    return size, edges


def dag_workflow(
    size: int, edges: set[tuple[int, int]], shuffle: list[int]
) -> Workflow:
    targets = {j for _, j in edges}
    wf = Workflow("dag")
    for i in shuffle:  # declaration order must not matter
        if i in targets:
            wf.node(f"n{i}", "transform.map", expr="x")
        else:
            wf.node(f"n{i}", "source.values", values=[i])
    for i, j in sorted(edges):
        wf.connect(f"n{i}", f"n{j}")
    return wf


def reachable(edges: set[tuple[int, int]], start: int) -> set[int]:
    seen, todo = set(), [start]
    while todo:
        current = todo.pop()
        for i, j in edges:
            if i == current and j not in seen:
                seen.add(j)
                todo.append(j)
    return seen


@settings(max_examples=150, deadline=None)
@given(dags(), st.data())
def test_random_dags_validate_in_topological_order(
    dag: tuple[int, set[tuple[int, int]]], data: st.DataObject
) -> None:
    size, edges = dag
    shuffle = data.draw(st.permutations(range(size)))
    graph = check(dag_workflow(size, edges, shuffle))
    order = list(graph.nodes)
    assert sorted(order) == sorted(f"n{i}" for i in range(size))
    for i, j in edges:
        assert order.index(f"n{i}") < order.index(f"n{j}")
    sources = {i for i, _ in edges}
    assert {n.id for n in graph.terminals} == {
        f"n{i}" for i in range(size) if i not in sources
    }


@settings(max_examples=150, deadline=None)
@given(dags(), st.data())
def test_a_back_edge_is_always_reported_as_a_cycle(
    dag: tuple[int, set[tuple[int, int]]], data: st.DataObject
) -> None:
    size, edges = dag
    # Close a path a ~> b with b -> a (or a self loop when a == b).
    a = data.draw(st.integers(min_value=0, max_value=size - 1))
    b = data.draw(st.sampled_from(sorted(reachable(edges, a) | {a})))
    shuffle = data.draw(st.permutations(range(size)))
    wf = dag_workflow(size, edges, shuffle).connect(f"n{b}", f"n{a}")
    with pytest.raises(WorkflowValidationError) as info:
        check(wf)
    cycles = [p.message for p in info.value.problems if p.message.startswith("cycle: ")]
    assert cycles
    all_edges = {(f"n{i}", f"n{j}") for i, j in edges} | {(f"n{b}", f"n{a}")}
    for message in cycles:
        path = message.removeprefix("cycle: ").split(" -> ")
        assert path[0] == path[-1]
        assert len(set(path[:-1])) == len(path) - 1  # a simple cycle
        assert all(step in all_edges for step in itertools.pairwise(path))
        # Every cycle runs through the new edge.
        assert (f"n{b}", f"n{a}") in set(itertools.pairwise(path))


def test_a_config_check_names_the_field_it_is_about() -> None:
    # Checks in a config's __post_init__ get no path from msgspec; their
    # message starts with the field, and the problem names it.
    found = problems_of(
        pipeline(
            ("b", "transform.batch", {"size": 0}),
            ("d", "time.delay", {"ms": -1}),
        )
    )
    by_node = {p.node: p for p in found}
    assert by_node["b"].field == "config.size"
    assert "size must be >= 1" in by_node["b"].message
    assert by_node["d"].field == "config.ms"


# --- CEL cost -----------------------------------------------------------------

NESTED_MAP = "x.map(a, x.map(b, x.map(c, a + b + c)))"


def test_a_cel_expression_over_the_cost_ceiling_is_refused_naming_node_and_field() -> (
    None
):
    wf = pipeline(("costly", "transform.map", {"expr": NESTED_MAP}))
    problem = only(problems_of(wf))
    assert problem.node == "costly"
    assert problem.field == "config.expr"
    assert "may cost up to" in problem.message
    assert "over the limit of 10,000,000" in problem.message


def test_the_cel_cost_ceiling_is_a_validation_option() -> None:
    nested = "x.map(a, x.map(b, a + b))"  # ~ 1,000 * 1,000 steps
    check(pipeline(("m", "transform.map", {"expr": nested})))
    problem = only(
        problems_of(
            pipeline(("m", "transform.map", {"expr": nested})), max_cel_cost=100_000
        )
    )
    assert (problem.node, problem.field) == ("m", "config.expr")
    check(pipeline(("m", "transform.map", {"expr": "x * 2"})), max_cel_cost=100)


def test_nested_maps_over_literal_lists_are_refused_before_they_run() -> None:
    # Issue 11: seven nested maps over ten-element lists (10**7 results) ran
    # 408 s at 1.8 GB; now validation refuses it with the estimate.
    ten = "[0,1,2,3,4,5,6,7,8,9]"
    source = "1"
    for var in "abcdefg":
        source = f"{ten}.map({var}, {source})"
    problem = only(problems_of(pipeline(("deep", "transform.map", {"expr": source}))))
    assert (problem.node, problem.field) == ("deep", "config.expr")
    assert "may cost up to" in problem.message
