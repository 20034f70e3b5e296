"""Routed workflow files: the model, built-in steps, Python steps, problems."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest

from flowstream import Route, Workflow, read_workflow, write_workflow
from flowstream.core.workflow import load_workflow, parse_route
from flowstream.errors import WorkflowValidationError
from flowstream.routed import Flow, read_flow

ROOT = Path(__file__).resolve().parents[2]
LOGIN = ROOT / "examples" / "routed_login.yaml"

COUNTER = """
name: counter
mode: routed
entry: start
max_steps: 40
nodes:
  - id: start
    type: step.set
    config: {values: {n: "0"}, next: count, params: {step: "2"}}
  - id: count
    type: step.set
    config: {values: {n: "store.n + params.step", history: "[params.step]"}}
  - id: again
    type: step.branch
    config: {if: "store.n < 10", then: count_more, else: done}
  - id: count_more
    type: step.set
    config: {next: count, params: {step: "3"}}
  - id: done
    type: step.complete
    config: {result: "{'n': store.n}"}
routes:
  - count -> again
  - {from_node: count_more, to_node: count}
"""


def load(text: str) -> Workflow:
    return load_workflow(text, "yaml")


def problems_of(text: str) -> set[str]:
    with pytest.raises(WorkflowValidationError) as info:
        Flow.from_workflow(load(text), source="flow.yaml")
    return {str(p) for p in info.value.problems}


# --- the workflow model -----------------------------------------------------------


def test_routed_fields_load() -> None:
    wf = load(COUNTER)
    assert wf.mode == "routed"
    assert wf.entry == "start"
    assert wf.max_steps == 40
    assert wf.routes == [
        Route(from_node="count", to_node="again"),
        Route(from_node="count_more", to_node="count"),
    ]
    assert str(wf.routes[0]) == "count -> again"


@pytest.mark.parametrize("name", ["flow.json", "flow.yaml", "flow.toml"])
def test_routed_workflows_round_trip(tmp_path: Path, name: str) -> None:
    wf = (
        Workflow("rt", mode="routed", entry="b", max_steps=9)
        .node("a", "step.set", values={"x": "1"}, on_error="b")
        .node("b", "step.complete", result="store.x")
        .route("b -> a")
        .route("a", "b")
    )
    path = tmp_path / name
    write_workflow(wf, path)
    assert read_workflow(path) == wf


def test_defaults_stay_out_of_routed_files() -> None:
    wf = Workflow("w", mode="routed").node("a", "step.complete").route("a -> a")
    assert msgspec.json.decode(msgspec.json.encode(wf)) == {
        "name": "w",
        "mode": "routed",
        "nodes": [{"id": "a", "type": "step.complete"}],
        "routes": [{"from_node": "a", "to_node": "a"}],
    }


@pytest.mark.parametrize("text", ["a", "a ->", "-> b", "a -> b -> c"])
def test_bad_route_strings(text: str) -> None:
    with pytest.raises(ValueError, match="cannot read route"):
        parse_route(text)


def test_sections_must_fit_the_mode() -> None:
    with pytest.raises(WorkflowValidationError) as info:
        load(
            """
name: mixed
entry: a
nodes: [{id: a, type: source.values, on_error: a}]
routes: ["a -> a", "nonsense"]
"""
        )
    assert {str(p) for p in info.value.problems} == {
        "routes[1]: cannot read route 'nonsense'; write 'a -> b'",
        "entry: only a routed workflow (mode: routed) has entry",
        "routes: only a routed workflow (mode: routed) has routes",
        "node 'a', on_error: only a routed workflow (mode: routed) has on_error routes",
    }
    with pytest.raises(WorkflowValidationError, match="routes, not connections"):
        load("name: r\nmode: routed\nnodes: []\nconnections: ['a -> b']\n")
    with pytest.raises(WorkflowValidationError, match=r"routes\[0\].to_node"):
        load("name: r\nmode: routed\nroutes: [{from_node: a}]\n")


# --- running files ----------------------------------------------------------------


async def test_built_in_steps_run_a_file() -> None:
    flow = Flow.from_workflow(load(COUNTER))
    assert flow.max_steps == 40
    assert ("again", "count_more") in flow.routes
    assert ("start", "count") in flow.routes
    result = await flow.arun()
    assert result.ok
    assert result.result == {"n": 11}  # 0 + 2 + 3 + 3 + 3
    assert result.path == [
        "start",
        "count",
        "again",
        "count_more",
        "count",
        "again",
        "count_more",
        "count",
        "again",
        "count_more",
        "count",
        "again",
        "done",
    ]
    assert flow.nodes["count"].type == "step.set"


async def test_the_login_example() -> None:
    flow = read_flow(LOGIN)
    result = await flow.arun()
    assert result.result == {"user": "alice", "attempts": 3}
    assert result.path[:4] == ["start", "login", "check", "retry"]
    locked = await flow.arun(inputs={"guesses": ["a", "b", "c", "d"]})
    assert locked.result == {"locked": True, "attempts": 3}
    quick = await flow.arun(inputs={"guesses": ["s3cret"]})
    assert quick.path == ["start", "login", "check", "welcome"]


async def test_step_set_deletes_and_fails_clearly() -> None:
    flow = Flow.from_workflow(
        load(
            """
name: d
mode: routed
nodes:
  - {id: a, type: step.set, config: {values: {x: "store.y + 1"}, delete: [y]}}
  - {id: b, type: step.complete, config: {result: "has(store.y)"}}
routes: [a -> b]
"""
        )
    )
    assert (await flow.arun(inputs={"y": 1})).result is False
    failed = await flow.arun()
    assert failed.failed_node == "a"
    assert failed.error == (
        "step 'a' (step.set) failed: ValueError: expression 'store.y + 1' failed: "
        "no key 'y'"
    )


async def test_retry_and_on_error_in_files() -> None:
    flow = Flow.from_workflow(
        load(
            """
name: e
mode: routed
nodes:
  - id: risky
    type: step.set
    config: {values: {x: "store.missing"}}
    retry: {max_attempts: 2, delay_ms: 0}
    on_error: rescue
  - id: rescue
    type: step.complete
    config: {result: "params.node + ': ' + params.error_type"}
"""
        )
    )
    assert flow.nodes["risky"].retry is not None
    result = await flow.arun()
    assert result.result == "risky: ValueError"
    assert result.path == ["risky", "rescue"]


async def test_python_steps_by_reference() -> None:
    flow = Flow.from_workflow(
        load(
            """
name: py
mode: routed
nodes:
  - {id: input, type: "examples.routed_steps:read_input"}
  - {id: check, type: "examples.routed_steps:CheckPassword", config: {secret: open}}
  - {id: welcome, type: "examples.routed_steps:welcome"}
  - {id: login_failed, type: step.complete, config: {result: "'denied'"}}
routes: [input -> check, check -> welcome, check -> login_failed]
"""
        )
    )
    assert flow.nodes["check"].type == "examples.routed_steps.CheckPassword"
    ok = await flow.arun(inputs={"input": {"user": "ann", "password": "open"}})
    assert ok.result == {"user": "ann", "authenticated": True}
    denied = await flow.arun(inputs={"input": {"user": "ann", "password": "s3cret"}})
    assert denied.result == "denied"


def test_every_problem_of_a_file_at_once() -> None:
    found = problems_of(
        """
name: broken
mode: routed
error_handling: {mode: continue_on_error}
nodes:
  - {id: start, type: step.sett}
  - {id: calc, type: step.set, config: {values: {x: "store.y +"}}}
  - {id: pick, type: step.branch, config: {if: "store.x >", then: calc, else: nowhere}}
  - {id: typo, type: step.set, config: {valeus: {}}}
  - {id: py, type: "examples.routed_steps:Nope"}
  - {id: cls, type: "examples.routed_steps:CheckPassword", config: {pepper: 1}}
  - {id: island, type: step.complete, error_handling: {mode: stop_workflow}}
  - {id: flow, type: "examples.routed_steps:login_flow"}
routes: [start -> calc, calc -> pick, pick -> ghost, start -> typo, typo -> py]
"""
    )
    assert (
        "error_handling: steps fail with retry and on_error, not error_handling"
        in found
    )
    assert (
        "node 'start', type: unknown node type 'step.sett' "
        "(did you mean 'step.set', 'step.complete'?)" in found
    )
    assert any(p.startswith("node 'calc', config.values.x: invalid CEL") for p in found)
    assert any(p.startswith("node 'pick', config.if: invalid CEL") for p in found)
    assert "node 'typo', config.valeus: object contains unknown field `valeus`" in found
    assert (
        "node 'py', type: module 'examples.routed_steps' has no attribute 'Nope'"
        in found
    )
    assert any(p.startswith("node 'cls', config: cannot make") for p in found)
    assert "node 'island': unreachable from the entry step 'start'" in found
    assert (
        "node 'island', error_handling: steps fail with retry and on_error, "
        "not error_handling" in found
    )
    assert "node 'pick', routes: route pick -> ghost: no step 'ghost'" in found
    assert (
        "node 'flow', type: examples.routed_steps:login_flow is a Flow, not a step"
        in found
    )
    # pick's "else: nowhere" is not checked: pick itself is invalid.
    assert len(found) == 11, found


def test_a_dataflow_is_not_a_routed_flow() -> None:
    found = problems_of("name: d\nnodes: [{id: a, type: step.complete}]\n")
    assert found == {"mode: mode is 'dag'; a routed flow needs mode: routed"}


def test_python_steps_can_be_refused() -> None:
    from flowstream.routed import flow_from_workflow

    wf = load(
        "name: p\nmode: routed\nnodes:\n"
        '  - {id: a, type: "examples.routed_steps:welcome"}\n'
    )
    with pytest.raises(WorkflowValidationError, match="not allowed here"):
        flow_from_workflow(wf, allow_callables=False)


def test_read_flow_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: b\nmode: routed\nnodes: []\n")
    with pytest.raises(WorkflowValidationError) as info:
        Flow.read(path)
    assert info.value.source == str(path)
    assert str(info.value).startswith(f"{path}: 1 problem")


def test_step_configs_check_themselves() -> None:
    found = problems_of(
        """
name: c
mode: routed
nodes:
  - {id: a, type: step.set, config: {params: {x: "1"}}}
"""
    )
    assert found == {
        "node 'a', config: params are passed to the next step: set 'next' too"
    }


def test_module_attr_steps_may_be_objects_or_specs(
    tmp_path: Path, monkeypatch: Any
) -> None:
    module = tmp_path / "my_routed_steps.py"
    module.write_text(
        "from flowstream import Action, node\n"
        "from flowstream.routed.steps import SetConfig\n"
        "class Done:\n"
        "    async def execute(self, ctx):\n"
        "        return Action.complete('object')\n"
        "done = Done()\n"
        "class Spec:\n"
        "    def __init__(self, config):\n"
        "        self.config = config\n"
        "    async def execute(self, ctx):\n"
        "        return Action.complete(sorted(self.config.values))\n"
        "spec = node('mine.spec', config=SetConfig)(Spec)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    obj = Flow.from_workflow(
        load('name: o\nmode: routed\nnodes: [{id: a, type: "my_routed_steps:done"}]\n')
    )
    assert obj.run().result == "object"
    spec = Flow.from_workflow(
        load(
            "name: s\nmode: routed\nnodes:\n"
            '  - {id: a, type: "my_routed_steps:spec", config: {values: {k: "1"}}}\n'
        )
    )
    assert spec.run().result == ["k"]
    with pytest.raises(WorkflowValidationError, match="takes no config"):
        Flow.from_workflow(
            load(
                "name: o\nmode: routed\nnodes:\n"
                '  - {id: a, type: "my_routed_steps:done", config: {x: 1}}\n'
            )
        )
