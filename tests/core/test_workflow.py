from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from flowstream.core.workflow import (
    Connection,
    ContinueOnError,
    ErrorHandling,
    RetryPolicy,
    RetryWorkflow,
    StopWorkflow,
    Workflow,
    WorkflowNode,
    describe_validation_error,
    dump_workflow,
    load_workflow,
    parse_connection,
    read_workflow,
    write_workflow,
)
from flowstream.errors import DecodeError, EncodeError, WorkflowValidationError

if TYPE_CHECKING:
    from pathlib import Path

    from flowstream.core.codec import DocumentFormat
    from flowstream.errors import Problem


def problems_of(text: str, fmt: DocumentFormat = "yaml") -> list[Problem]:
    with pytest.raises(WorkflowValidationError) as info:
        load_workflow(text, fmt)
    return info.value.problems


def where(problems: list[Problem]) -> list[tuple[str | None, str | None]]:
    return [(p.node, p.field) for p in problems]


# --- connection strings -------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a -> b", ("a", "out", "b", "in")),
        ("a->b", ("a", "out", "b", "in")),
        ("a.out -> b.in", ("a", "out", "b", "in")),
        ("route.even -> sink", ("route", "even", "sink", "in")),
        ("a -> join.right", ("a", "out", "join", "right")),
        ("  a . error  ->  b  ", ("a", "error", "b", "in")),
        ("node-1 -> _node_2", ("node-1", "out", "_node_2", "in")),
    ],
)
def test_connection_strings_parse(
    text: str, expected: tuple[str, str, str, str]
) -> None:
    conn = parse_connection(text)
    assert (conn.from_node, conn.from_port, conn.to_node, conn.to_port) == expected
    assert conn.capacity is None


@pytest.mark.parametrize(
    "text",
    [
        *["", "a", "a b", "a ->", "-> b", " -> ", "a => b", "a -> b -> c"],
        *["a. -> b", "a -> .in", ".out -> b", "a -> b."],
    ],
)
def test_bad_connection_strings_are_value_errors(text: str) -> None:
    with pytest.raises(ValueError, match="cannot read connection") as info:
        parse_connection(text)
    assert repr(text) in str(info.value)


def test_connection_str_names_both_ports() -> None:
    assert str(parse_connection("a -> b")) == "a.out -> b.in"


# --- builder ------------------------------------------------------------------

DEMO_YAML = """
name: demo
mode: stream
description: doubles numbers
error_handling: {mode: continue_on_error}
nodes:
  - id: numbers
    type: source.range
    config: {stop: 10}
  - id: double
    type: transform.map
    config: {expr: "x * 2"}
    retry: {max_attempts: 5, delay_ms: 10, backoff_multiplier: 3}
    error_handling: {mode: retry_workflow, max_attempts: 2}
  - id: route
    type: transform.filter
    config: {expr: "x > 2"}
    fuse: false
  - id: out
    type: sink.collect
connections:
  - numbers -> double
  - {from_node: double, to_node: route, capacity: 4}
  - route.out -> out.in
"""


def demo_builder() -> Workflow:
    return (
        Workflow(
            "demo",
            mode="stream",
            description="doubles numbers",
            error_handling=ContinueOnError(),
        )
        .node("numbers", "source.range", stop=10)
        .node(
            "double",
            "transform.map",
            {"expr": "x * 2"},
            retry=RetryPolicy(max_attempts=5, delay_ms=10, backoff_multiplier=3),
            error_handling=RetryWorkflow(max_attempts=2),
        )
        .node("route", "transform.filter", expr="x > 2", fuse=False)
        .node("out", "sink.collect")
        .connect("numbers -> double")
        .connect("double", "route", capacity=4)
        .connect("route.out", "out.in")
    )


def test_builder_equals_the_loaded_yaml() -> None:
    built = demo_builder()
    loaded = load_workflow(DEMO_YAML, "yaml")
    assert built == loaded
    assert loaded.get_node("double").retry == RetryPolicy(
        max_attempts=5, delay_ms=10.0, backoff_multiplier=3.0
    )
    assert loaded.connections[1] == Connection(
        from_node="double", to_node="route", capacity=4
    )


def test_builder_returns_the_same_workflow_and_merges_options() -> None:
    wf = Workflow("w")
    assert wf.node("a", "source.values", {"values": [1]}, extra=2) is wf
    assert wf.connect("a -> b") is wf
    assert wf.get_node("a").config == {"values": [1], "extra": 2}
    assert wf.mode == "dag"
    assert wf.error_handling is None  # None means stop_workflow


def test_builder_rejects_bad_connection_strings() -> None:
    with pytest.raises(ValueError, match="cannot read connection"):
        Workflow("w").connect("a", "b -> c")


def test_get_node_missing_is_a_key_error() -> None:
    with pytest.raises(KeyError, match="nope"):
        Workflow("w").node("a", "x.y").get_node("nope")


# --- round trips through files ------------------------------------------------

ids = st.from_regex(r"\A[A-Za-z_][A-Za-z0-9_-]{0,10}\Z")
type_ids = st.from_regex(r"\A[a-z]{1,8}\.[a-z_]{1,8}\Z")
ports = st.sampled_from(["out", "in", "error", "even", "left", "right"])
finite = st.floats(allow_nan=False, allow_infinity=False)
scalars_no_null = (
    st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | finite
    | st.text(max_size=12)
)


def json_like(scalars: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.recursive(
        scalars,
        lambda children: (
            st.lists(children, max_size=3)
            | st.dictionaries(st.text(max_size=6), children, max_size=3)
        ),
        max_leaves=8,
    )


retries = st.builds(
    RetryPolicy,
    max_attempts=st.integers(min_value=1, max_value=100),
    delay_ms=st.floats(min_value=0, max_value=1e6),
    backoff_multiplier=st.floats(min_value=1, max_value=10),
    max_delay_ms=st.floats(min_value=0, max_value=1e9),
)
policies: st.SearchStrategy[ErrorHandling] = st.one_of(
    st.just(StopWorkflow()),
    st.just(ContinueOnError()),
    st.builds(RetryWorkflow, max_attempts=st.integers(min_value=1, max_value=10)),
)


@st.composite
def workflows(draw: st.DrawFn, values: st.SearchStrategy[Any]) -> Workflow:
    node_ids = draw(st.lists(ids, min_size=0, max_size=5, unique=True))
    nodes = [
        WorkflowNode(
            id=node_id,
            type=draw(type_ids),
            config=draw(st.dictionaries(st.text(max_size=6), values, max_size=3)),
            retry=draw(st.none() | retries),
            error_handling=draw(st.none() | policies),
            fuse=draw(st.booleans()),
        )
        for node_id in node_ids
    ]
    connections = []
    if node_ids:
        for _ in range(draw(st.integers(min_value=0, max_value=6))):
            connections.append(
                Connection(
                    from_node=draw(st.sampled_from(node_ids)),
                    from_port=draw(ports),
                    to_node=draw(st.sampled_from(node_ids)),
                    to_port=draw(ports),
                    capacity=draw(st.none() | st.integers(0, 10_000)),
                )
            )
    return Workflow(
        name=draw(st.text(max_size=10)),
        mode=draw(st.sampled_from(["dag", "stream"])),
        description=draw(st.text(max_size=20)),
        nodes=nodes,
        connections=connections,
        error_handling=draw(policies),
    )


round_trip_settings = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@round_trip_settings
@given(workflows(json_like(st.none() | scalars_no_null)))
def test_workflow_round_trips_through_json_and_yaml(
    tmp_path: Path, wf: Workflow
) -> None:
    for name in ("flow.json", "flow.yaml", "flow.yml"):
        path = tmp_path / name
        write_workflow(wf, path)
        assert read_workflow(path) == wf, path.read_text()


@round_trip_settings
@given(workflows(json_like(scalars_no_null)))
def test_workflow_round_trips_through_toml(tmp_path: Path, wf: Workflow) -> None:
    path = tmp_path / "flow.toml"
    write_workflow(wf, path)
    assert read_workflow(path) == wf, path.read_text()


@pytest.mark.parametrize("value", [None, [1, None], {"deep": {"er": None}}])
def test_null_config_value_cannot_be_written_as_toml(
    tmp_path: Path, value: Any
) -> None:
    wf = Workflow("w").node("a", "x.y", key=value)
    with pytest.raises(EncodeError, match="TOML"):
        dump_workflow(wf, "toml")
    path = tmp_path / "flow.toml"
    with pytest.raises(EncodeError):
        write_workflow(wf, path)
    assert not path.exists()
    # JSON and YAML keep the null.
    formats: list[DocumentFormat] = ["json", "yaml"]
    for fmt in formats:
        assert load_workflow(dump_workflow(wf, fmt), fmt) == wf


def test_defaults_are_omitted_from_files() -> None:
    wf = Workflow("w").node("a", "x.y").connect("a -> b")
    assert msgspec.yaml.decode(dump_workflow(wf, "yaml")) == {
        "name": "w",
        "nodes": [{"id": "a", "type": "x.y"}],
        "connections": [{"from_node": "a", "to_node": "b"}],
    }


def test_read_workflow_unknown_extension(tmp_path: Path) -> None:
    path = tmp_path / "flow.ini"
    path.write_text("name = x\n")
    with pytest.raises(DecodeError, match=r"flow\.ini: unknown file type '\.ini'"):
        read_workflow(path)


def test_read_workflow_invalid_document_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "flow.yaml"
    path.write_text("name: [unclosed\n")
    with pytest.raises(DecodeError, match=r"flow\.yaml: invalid YAML"):
        read_workflow(path)


def test_read_workflow_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_workflow(tmp_path / "nope.json")


# --- structural errors --------------------------------------------------------


def test_node_missing_type_names_node_and_field() -> None:
    problems = problems_of("name: w\nnodes:\n  - id: a\n")
    assert where(problems) == [("a", "type")]
    assert "missing required field `type`" in problems[0].message


def test_unknown_top_level_field() -> None:
    problems = problems_of("name: w\nnodez: []\n")
    assert where(problems) == [(None, "nodez")]
    assert "unknown field `nodez`" in problems[0].message


def test_wrong_field_types() -> None:
    problems = problems_of(
        """
name: w
mode: sideways
nodes:
  - {id: a, type: 3}
  - {id: b, type: x.y, config: [1, 2]}
  - {id: c, type: x.y, fuse: maybe}
connections:
  - {from_node: a, to_node: b, capacity: lots}
"""
    )
    assert where(problems) == [
        (None, "mode"),
        ("a", "type"),
        ("b", "config"),
        ("c", "fuse"),
        (None, "connections[0].capacity"),
    ]
    assert "expected `str`, got `int`" in problems[1].message


def test_every_problem_is_reported_at_once() -> None:
    problems = problems_of(
        """
name: w
bogus: 1
mode: sideways
nodes:
  - id: a
  - {id: b, type: x.y, colour: red, fuse: 7}
  - {type: x.y}
  - 5
connections:
  - a -> b -> c
  - "a ->"
  - {from_node: a}
  - {from_node: a, to_node: b, wire: thick}
"""
    )
    assert where(problems) == [
        (None, "bogus"),
        (None, "mode"),
        ("a", "type"),
        ("b", "colour"),
        ("b", "fuse"),
        ("nodes[2]", "id"),
        ("nodes[3]", None),
        (None, "connections[0]"),
        (None, "connections[1]"),
        (None, "connections[2].to_node"),
        (None, "connections[3].wire"),
    ]
    assert "cannot read connection 'a -> b -> c'" in problems[7].message


def test_error_message_lists_every_problem_with_the_source() -> None:
    with pytest.raises(WorkflowValidationError) as info:
        load_workflow("name: w\nnodes: [{id: a}, {id: b}]\n", "yaml", source="f.yaml")
    text = str(info.value)
    assert text.splitlines() == [
        "f.yaml: 2 problems",
        "  - node 'a', type: object missing required field `type`",
        "  - node 'b', type: object missing required field `type`",
    ]
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ("[1, 2]", [(None, None)]),
        ("name: w\nnodes: {a: 1}\n", [(None, "nodes")]),
        ("name: w\nconnections: 3\n", [(None, "connections")]),
        ("nodes: []\n", [(None, "name")]),
    ],
)
def test_malformed_sections(
    doc: str, expected: list[tuple[str | None, str | None]]
) -> None:
    assert where(problems_of(doc)) == expected


def test_same_errors_from_json_and_toml() -> None:
    json_problems = problems_of('{"name": "w", "nodes": [{"id": "a"}]}', "json")
    toml_problems = problems_of('name = "w"\n[[nodes]]\nid = "a"\n', "toml")
    assert where(json_problems) == where(toml_problems) == [("a", "type")]


# --- failure policies in files ------------------------------------------------


@pytest.mark.parametrize(
    ("text", "policy"),
    [
        ("{mode: stop_workflow}", StopWorkflow()),
        ("{mode: continue_on_error}", ContinueOnError()),
        ("{mode: retry_workflow}", RetryWorkflow(max_attempts=3)),
        ("{mode: retry_workflow, max_attempts: 7}", RetryWorkflow(max_attempts=7)),
    ],
)
def test_error_handling_in_files(text: str, policy: Any) -> None:
    wf = load_workflow(
        f"name: w\nerror_handling: {text}\nnodes:\n"
        f"  - {{id: a, type: x.y, error_handling: {text}}}\n",
        "yaml",
    )
    assert wf.error_handling == policy
    assert wf.get_node("a").error_handling == policy
    assert b"mode" in dump_workflow(wf, "json") or policy == StopWorkflow()


@pytest.mark.parametrize(
    "text",
    [
        "{mode: give_up}",
        "{max_attempts: 3}",
        "{mode: continue_on_error, max_attempts: 3}",
        "{mode: retry_workflow, max_attempts: 0}",
        "continue_on_error",
    ],
)
def test_bad_error_handling_names_the_node(text: str) -> None:
    problems = problems_of(
        f"name: w\nnodes:\n  - {{id: a, type: x.y, error_handling: {text}}}\n"
    )
    assert len(problems) == 1
    assert problems[0].node == "a"
    assert (problems[0].field or "").startswith("error_handling")


def test_retry_in_files() -> None:
    wf = load_workflow(
        "name: w\nnodes:\n  - id: a\n    type: x.y\n"
        "    retry: {max_attempts: 4, delay_ms: 50, backoff_multiplier: 1.5}\n",
        "yaml",
    )
    assert wf.get_node("a").retry == RetryPolicy(
        max_attempts=4, delay_ms=50.0, backoff_multiplier=1.5
    )


@pytest.mark.parametrize(
    "text",
    [
        "{max_attempts: 0}",
        "{delay_ms: -1}",
        "{delay_ms: .nan}",
        "{delay_ms: .inf}",
        "{backoff_multiplier: 0.5}",
        "{backoff_multiplier: .nan}",
        "{max_delay_ms: -5}",
        "{max_attempts: 3, retries: 2}",
        "{max_attempts: three}",
    ],
)
def test_bad_retry_names_the_node(text: str) -> None:
    problems = problems_of(
        f"name: w\nnodes:\n  - {{id: a, type: x.y, retry: {text}}}\n"
    )
    assert [(p.node, p.field.split(".")[0] if p.field else None) for p in problems] == [
        ("a", "retry")
    ]


# --- RetryPolicy --------------------------------------------------------------


def test_retry_delay_backs_off() -> None:
    policy = RetryPolicy(delay_ms=100, backoff_multiplier=2)
    assert [policy.delay_s(n) for n in (1, 2, 3, 4)] == [0.1, 0.2, 0.4, 0.8]


def test_retry_delay_is_capped() -> None:
    policy = RetryPolicy(delay_ms=100, backoff_multiplier=10, max_delay_ms=5_000)
    assert [policy.delay_s(n) for n in (1, 2, 3, 4, 5)] == [0.1, 1.0, 5.0, 5.0, 5.0]


def test_retry_delay_constant_without_backoff() -> None:
    policy = RetryPolicy(delay_ms=20, backoff_multiplier=1)
    assert {policy.delay_s(n) for n in range(1, 50)} == {0.02}


@given(
    retries,
    st.integers(min_value=1, max_value=100_000),
)
@settings(max_examples=200, deadline=None)
def test_retry_delay_stays_within_bounds(policy: RetryPolicy, attempt: int) -> None:
    # A long retry must never overflow: late attempts wait exactly the cap.
    delay = policy.delay_s(attempt)
    assert math.isfinite(delay)
    assert 0 <= delay <= policy.max_delay_ms / 1000
    assert delay >= min(policy.delay_ms, policy.max_delay_ms) / 1000 - 1e-12


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"max_attempts": 0}, "max_attempts must be >= 1, got 0"),
        ({"max_attempts": -3}, "max_attempts must be >= 1"),
        ({"delay_ms": -1}, "delay_ms must be"),
        ({"delay_ms": math.nan}, "delay_ms must be"),
        ({"delay_ms": math.inf}, "delay_ms must be"),
        ({"max_delay_ms": -1}, "max_delay_ms must be >= 0"),
        ({"max_delay_ms": math.nan}, "max_delay_ms must be >= 0"),
        ({"backoff_multiplier": 0.5}, "backoff_multiplier must be"),
        ({"backoff_multiplier": math.nan}, "backoff_multiplier must be"),
        ({"backoff_multiplier": math.inf}, "backoff_multiplier must be"),
    ],
)
def test_bad_retry_policies_are_rejected(kwargs: dict[str, Any], pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        RetryPolicy(**kwargs)


def test_retry_workflow_needs_one_attempt() -> None:
    with pytest.raises(ValueError, match="max_attempts must be >= 1"):
        RetryWorkflow(max_attempts=0)


def test_policies_are_frozen() -> None:
    policy = RetryPolicy()
    with pytest.raises(AttributeError):
        policy.max_attempts = 9  # type: ignore[misc]


# --- helpers ------------------------------------------------------------------


class Inner(msgspec.Struct, forbid_unknown_fields=True):
    n: int


class Outer(msgspec.Struct):
    inner: list[Inner]


def test_describe_validation_error_splits_message_and_path() -> None:
    def describe(raw: Any) -> tuple[str, str | None]:
        with pytest.raises(msgspec.ValidationError) as info:
            msgspec.convert(raw, Outer)
        return describe_validation_error(info.value)

    assert describe({"inner": [{"n": "x"}]}) == (
        "expected `int`, got `str`",
        "inner[0].n",
    )
    assert describe({"inner": [{}]}) == (
        "object missing required field `n`",
        "inner[0].n",
    )
    assert describe({"inner": [{"n": 1, "m": 2}]}) == (
        "object contains unknown field `m`",
        "inner[0].m",
    )
    assert describe({}) == ("object missing required field `inner`", "inner")
    assert describe(5) == ("expected `object`, got `int`", None)


def test_the_document_functions_keep_their_old_import_path() -> None:
    # They live in workflow_files; code written against core.workflow still
    # gets the very same functions, and a misspelt name still fails.
    from flowstream.core import workflow, workflow_files

    for name in workflow_files.__all__:
        assert getattr(workflow, name) is getattr(workflow_files, name)
    with pytest.raises(AttributeError, match="read_workflows"):
        _ = workflow.read_workflows
