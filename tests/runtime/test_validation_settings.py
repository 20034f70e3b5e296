"""Settings that validation used to let through and the run then misread."""

from __future__ import annotations

import math

import pytest

from flowstream import FlowRuntime, Workflow, validate
from flowstream.core.workflow import load_workflow
from flowstream.errors import WorkflowValidationError


def problems_of(text: str) -> list[str]:
    wf = load_workflow(text.encode(), "yaml")
    with pytest.raises(WorkflowValidationError) as caught:
        FlowRuntime().validate(wf)
    return [str(p) for p in caught.value.problems]


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf"])
def test_a_non_finite_timer_interval_is_refused(value: str) -> None:
    # .nan made a timer that never fires: a DAG run that never ended.
    (problem,) = problems_of(
        f"""
name: t
nodes:
  - {{id: tick, type: source.timer, config: {{interval_ms: {value}, count: 3}}}}
  - {{id: out, type: sink.collect}}
connections: [tick -> out]
"""
    )
    assert "node 'tick'" in problem
    assert "config.interval_ms" in problem
    assert "finite" in problem


@pytest.mark.parametrize(
    ("node", "config"),
    [
        ("time.delay", "{ms: .nan}"),
        ("transform.throttle", "{rate: 10, per_ms: .inf}"),
        ("window.tumbling", "{size_ms: 100, op: count, retain_ms: .inf}"),
        ("window.session", "{gap_ms: 100, op: count, allowed_lateness_ms: .inf}"),
    ],
)
def test_every_float_setting_of_a_built_in_node_must_be_finite(
    node: str, config: str
) -> None:
    problems = problems_of(
        f"""
name: t
nodes:
  - {{id: src, type: source.values, config: {{values: [1]}}}}
  - {{id: n, type: {node}, config: {config}}}
connections: [src -> n]
"""
    )
    assert any("node 'n'" in p and "finite" in p for p in problems), problems


def test_data_may_hold_any_float() -> None:
    wf = (
        Workflow("data")
        .node("src", "source.values", values=[math.nan, math.inf])
        .node("out", "sink.collect")
        .connect("src -> out")
    )
    validate(wf, FlowRuntime().registry)


def test_retry_workflow_on_a_node_is_refused() -> None:
    (problem,) = problems_of(
        """
name: t
nodes:
  - {id: src, type: source.range, config: {stop: 3},
     error_handling: {mode: retry_workflow, max_attempts: 2}}
  - {id: out, type: sink.collect}
connections: [src -> out]
"""
    )
    assert "node 'src'" in problem
    assert "error_handling" in problem
    assert "workflow level" in problem


def test_retry_workflow_at_workflow_level_is_fine() -> None:
    wf = load_workflow(
        b"""
name: t
error_handling: {mode: retry_workflow, max_attempts: 2}
nodes:
  - {id: src, type: source.range, config: {stop: 3}}
  - {id: out, type: sink.collect}
connections: [src -> out]
""",
        "yaml",
    )
    FlowRuntime().validate(wf)
