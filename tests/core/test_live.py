"""Live callables: lambdas and functions wherever a reference or CEL is taken."""

from __future__ import annotations

import functools
import json
import os.path
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec
import pytest
from click.testing import CliRunner

from flowstream import (
    ContinueOnError,
    FlowRuntime,
    Workflow,
    default_registry,
    node,
    read_workflow,
)
from flowstream.cli import cli
from flowstream.core.workflow import FN_FIELDS, dump_workflow, write_workflow
from flowstream.errors import EncodeError, WorkflowValidationError
from flowstream.runtime.checkpointing.records import workflow_key
from flowstream.runtime.plan import describe, plan
from flowstream.runtime.validation import validate

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

EVENTS = [
    {"u": "a", "t": 1, "v": 2},
    {"u": "b", "t": 2, "v": 3},
    {"u": "a", "t": 12, "v": 5},
]


def add_v(acc: int, x: dict[str, int]) -> int:
    return acc + x["v"]


@node("test.double")
async def double(inp: AsyncIterator[int]) -> AsyncIterator[int]:
    async for x in inp:
        yield x * 2


def keyed_workflow() -> Workflow:
    return (
        Workflow("live")
        .node("src", "source.values", values=EVENTS)
        .node("kb", "transform.key_by", key=lambda x: x["u"])
        .node(
            "win",
            "window.tumbling",
            size_ms=10_000,
            key=lambda x: x["u"],
            timestamp=lambda x: x["t"] * 1000,  # epoch ms
            op="sum",
            value=lambda x: x["v"],
        )
        .node("red", "transform.reduce", key=lambda x: x["u"], fn=add_v, initial=0)
        .node(
            "rt",
            "control.route",
            routes={"big": lambda x: x["v"] > 2, "small": lambda x: x["v"] <= 2},
        )
        .node("o1", "sink.collect")
        .node("o2", "sink.collect")
        .node("o3", "sink.collect")
        .node("o4", "sink.collect")
        .node("o5", "sink.collect")
        .connect("src -> kb")
        .connect("src -> win")
        .connect("src -> red")
        .connect("src -> rt")
        .connect("kb -> o1")
        .connect("win -> o2")
        .connect("red -> o3")
        .connect("rt.big -> o4")
        .connect("rt.small -> o5")
    )


@pytest.mark.parametrize("mode", ["dag", "stream"])
@pytest.mark.parametrize("fuse", [True, False])
def test_lambdas_in_filter_and_map_run(mode: str, fuse: bool) -> None:
    wf = (
        Workflow("w")
        .node("src", "source.range", stop=10)
        .node("keep", "transform.filter", fn=lambda x: x % 2 == 1)
        .node("sq", "transform.map", expr=lambda x: x * x)
        .node("inc", "transform.map", fn=functools.partial(int.__add__, 1))
        .node("out", "sink.collect")
        .connect("src -> keep")
        .connect("keep -> sq")
        .connect("sq -> inc")
        .connect("inc -> out")
    )
    result = FlowRuntime().run(wf, mode=mode, fuse=fuse)
    assert result.ok, result.error
    assert result.output("out") == [2, 10, 26, 50, 82]


@pytest.mark.parametrize("mode", ["dag", "stream"])
def test_callables_as_keys_timestamps_reducers_and_routes(mode: str) -> None:
    result = FlowRuntime().run(keyed_workflow(), mode=mode)
    assert result.ok, result.error
    assert [r["key"] for r in result.output("o1")] == ["a", "b", "a"]
    windows = [(w["key"], w["start"], w["value"]) for w in result.output("o2")]
    assert windows == [("a", 0, 2), ("b", 0, 3), ("a", 10_000, 5)]
    assert result.output("o3") == [{"key": "a", "value": 7}, {"key": "b", "value": 3}]
    assert [x["v"] for x in result.output("o4")] == [3, 5]
    assert [x["v"] for x in result.output("o5")] == [2]


def test_join_keys_take_callables() -> None:
    wf = (
        Workflow("j")
        .node("left", "source.values", values=[{"id": 1, "t": 1}])
        .node("right", "source.values", values=[{"ref": 1, "t": 1}])
        .node(
            "join",
            "join.window",
            window_ms=1000,
            left_key=lambda x: x["id"],
            right_key=lambda x: x["ref"],
            left_time=lambda x: x["t"],
            right_time=lambda x: x["t"],
        )
        .node("out", "sink.collect")
        .connect("left -> join.left")
        .connect("right -> join.right")
        .connect("join -> out")
    )
    result = FlowRuntime().run(wf)
    assert result.ok, result.error
    assert len(result.output("out")) == 1


def test_a_failing_lambda_sends_the_item_to_dead_letters() -> None:
    wf = (
        Workflow("w")
        .node("src", "source.values", values=[1, 0, 2])
        .node(
            "inv",
            "transform.map",
            fn=lambda x: 1 / x,
            error_handling=ContinueOnError(),
        )
        .node("out", "sink.collect")
        .connect("src -> inv")
        .connect("inv -> out")
    )
    result = FlowRuntime().run(wf)
    assert result.output("out") == [1.0, 0.5]
    assert [d.item for d in result.dead_letters] == [0]


def test_a_callable_in_a_field_that_takes_none_is_named() -> None:
    wf = (
        Workflow("w")
        .node("src", "source.range", stop=3)
        .node("log", "debug.log", message=lambda x: x)
        .connect("src -> log")
    )
    with pytest.raises(WorkflowValidationError) as info:
        FlowRuntime().validate(wf)
    (problem,) = info.value.problems
    assert (problem.node, problem.field) == ("log", "config.message")
    assert "takes no Python callable" in problem.message


def test_untrusted_validation_refuses_live_callables() -> None:
    wf = Workflow("w").node("src", "source.range", stop=3)
    wf.node("m", "transform.map", expr=lambda x: x).connect("src -> m")
    with pytest.raises(WorkflowValidationError) as info:
        validate(wf, default_registry(), allow_callables=False)
    assert "not allowed here" in str(info.value)
    assert info.value.problems[0].field == "config.expr"


def test_a_node_spec_is_a_type_without_registering_it() -> None:
    wf = (
        Workflow("w")
        .node("src", "source.range", stop=3)
        .node("d", double)
        .node("out", "sink.collect")
        .connect("src -> d")
        .connect("d -> out")
    )
    assert "test.double" not in default_registry()
    assert FlowRuntime().run(wf).output("out") == [0, 2, 4]


def test_writing_a_lambda_names_node_and_field(tmp_path: Path) -> None:
    with pytest.raises(EncodeError) as info:
        write_workflow(keyed_workflow(), tmp_path / "w.yaml")
    text = str(info.value)
    for where in (
        "'kb', config.key",
        "'win', config.timestamp",
        "'rt', config.routes.big",
    ):
        assert where in text
    assert "'red', config.fn" not in text  # add_v imports back: it is written
    assert not (tmp_path / "w.yaml").exists()


def test_importable_callables_are_written_as_references(tmp_path: Path) -> None:
    wf = (
        Workflow("w")
        .node("src", "source.values", values=["a/b", "c/d"])
        .node("base", "transform.map", fn=os.path.basename)
        .node("d", "transform.map", fn=len)
        .node("twice", double)
        .node("out", "sink.collect")
        .connect("src -> base")
        .connect("base -> d")
        .connect("d -> twice")
        .connect("twice -> out")
    )
    path = tmp_path / "w.yaml"
    write_workflow(wf, path)
    back = read_workflow(path)
    assert back.get_node("base").config == {"fn": "posixpath:basename"}
    assert back.get_node("twice").type == f"{__name__}:double"
    assert FlowRuntime().run(back).output("out") == [2, 2]


def test_a_callable_in_a_cel_field_is_not_written_even_if_importable() -> None:
    wf = Workflow("w").node("m", "transform.map", expr=os.path.basename)
    with pytest.raises(EncodeError, match=r"'m', config.expr.*CEL field"):
        dump_workflow(wf, "json")


def test_plan_shows_live_callables() -> None:
    graph = FlowRuntime().validate(keyed_workflow())
    shown = describe(plan(graph))
    runs = {(e["node"], e["field"]): e["runs"] for e in shown["expressions"]}
    assert runs[("kb", "key")] == "Python callable"
    assert runs[("red", "fn")] == "Python callable"
    json.dumps(shown)  # plain data, printable


LIVE_FLOW = keyed_workflow()


def test_cli_plan_takes_a_python_workflow() -> None:
    result = CliRunner().invoke(cli, ["plan", "--json", f"{__name__}:LIVE_FLOW"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["workflow"] == "live"
    bad = CliRunner().invoke(cli, ["plan", f"{__name__}:EVENTS"])
    assert bad.exit_code == 2
    assert "not a Workflow or Dataflow" in bad.output


def test_checkpoint_identity_of_a_live_workflow() -> None:
    assert len(workflow_key(keyed_workflow())) == 16


def test_every_reference_field_is_written_by_name() -> None:
    from flowstream.core.expr import expr_fields  # noqa: F401 (the marker walk)
    from flowstream.core.markers import markers_of

    names = set()
    for spec in default_registry():
        if spec.config_type is None:
            continue
        hints = __import__("typing").get_type_hints(
            spec.config_type, include_extras=True
        )
        for field in msgspec.structs.fields(spec.config_type):
            if any(k == "fn" for k, _ in markers_of(hints[field.name])):
                names.add(field.encode_name)
    assert names <= FN_FIELDS


def test_a_yaml_custom_node_type_by_reference_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # examples/my_nodes.py's docstring, end to end through a file and the CLI.
    path = tmp_path / "mean.yaml"
    path.write_text(
        "name: mean\n"
        "nodes:\n"
        "  - {id: src, type: source.values, config: {values: [2, 4, 6]}}\n"
        '  - {id: mean, type: "examples.my_nodes:running_mean"}\n'
        "connections: ['src -> mean']\n"
    )
    monkeypatch.chdir(Path(__file__).resolve().parents[2])
    result = CliRunner().invoke(cli, ["run", "--json", str(path)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["outputs"]["mean"]["out"] == [2.0, 3.0, 4.0]


def test_configs_without_callables_are_not_copied() -> None:
    values = [{"a": 1}, [1, 2]]
    wf = Workflow("w").node("src", "source.values", values=values)
    assert wf.get_node("src").config["values"] is values
    wf.node("m", "transform.map", fn=lambda x: x)
    result = FlowRuntime().run(wf.connect("src -> m"))
    assert all(x is y for x, y in zip(result.output("m"), values, strict=True))
