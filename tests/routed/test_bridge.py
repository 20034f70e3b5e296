"""Both worlds together: a flow inside a dataflow, a dataflow as a step."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from flowstream import RetryPolicy, Workflow, default_registry
from flowstream.errors import WorkflowValidationError
from flowstream.routed import (
    Action,
    Flow,
    RunWorkflow,
    StepContext,
    dataflow_registry,
    flow_node,
)
from flowstream.testing import run_workflow

if TYPE_CHECKING:
    from flowstream.runtime.registry import NodeRegistry

ROOT = Path(__file__).resolve().parents[2]


class InFlight:
    def __init__(self) -> None:
        self.now = 0
        self.peak = 0


def squaring_flow(gauge: InFlight) -> Flow:
    async def square(ctx: StepContext) -> Action:
        gauge.now += 1
        gauge.peak = max(gauge.peak, gauge.now)
        try:
            for _ in range(3):
                await asyncio.sleep(0)  # stay in flight while others start
            x = await ctx.store.get("input", type=int)
            await ctx.store.set("seen", await ctx.store.keys())
            return Action.simple("report") if x >= 0 else Action.simple("nowhere")
        finally:
            gauge.now -= 1

    async def report(ctx: StepContext) -> Action:
        x = await ctx.store.get("input", type=int)
        return Action.complete(
            {"x": x, "square": x * x, "keys": await ctx.store.get("seen")}
        )

    async def nowhere(ctx: StepContext) -> Action:
        msg = "negative"
        raise ValueError(msg)

    return (
        Flow.builder("square")
        .add_node("square", square)
        .add_node("report", report)
        .add_node("nowhere", nowhere)
        .add_route("square", "report")
        .add_route("square", "nowhere")
        .build()
    )


def registry_with(*specs: Any) -> NodeRegistry:
    registry = dataflow_registry(default_registry(entry_points=False))
    registry.register_all(specs)
    return registry


@pytest.mark.parametrize("fuse", [True, False])
async def test_a_flow_runs_once_per_item_with_bounded_concurrency(fuse: bool) -> None:
    gauge = InFlight()
    spec = squaring_flow(gauge).as_node("auth.square", concurrency=3)
    wf = (
        Workflow("per-item")
        .node("src", "source.values", values=list(range(10)))
        .node("flow", "auth.square")
        .node("out", "sink.collect")
        .connect("src -> flow")
        .connect("flow -> out")
    )
    result = await run_workflow(wf, registry_with(spec), fuse=fuse)
    assert result.ok, result.error
    assert result.output("out") == [
        {"x": i, "square": i * i, "keys": ["input"]} for i in range(10)
    ]
    assert gauge.peak == 3  # ten items in one batch, three runs at a time


async def test_a_failed_run_sends_its_item_to_the_error_port() -> None:
    spec = flow_node(squaring_flow(InFlight()), "auth.square", concurrency=2)
    wf = (
        Workflow("errors")
        .node("src", "source.values", values=[2, -1, 3])
        .node("flow", "auth.square")
        .connect("src -> flow")
    )
    result = await run_workflow(wf, registry_with(spec))
    assert result.ok
    assert result.output("flow") == [
        {"x": 2, "square": 4, "keys": ["input"]},
        {"x": 3, "square": 9, "keys": ["input"]},
    ]
    [letter] = result.dead_letters
    assert letter.item == -1
    assert letter.node_id == "flow"
    assert letter.reason.startswith("flow 'square' failed: step 'nowhere'")


def test_flow_node_checks_its_arguments() -> None:
    flow = squaring_flow(InFlight())
    with pytest.raises(ValueError, match="concurrency must be >= 1"):
        flow.as_node("a.b", concurrency=0)
    with pytest.raises(ValueError, match=r"category\.verb"):
        flow.as_node("nodot")


async def test_routed_flow_node_from_a_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    wf = (
        Workflow("logins")
        .node("guesses", "source.values", values=[["s3cret"], ["no", "nope", "never"]])
        .node(
            "login",
            "routed.flow",
            # routed.flow's own concurrency is config; a node's
            # concurrency= beside config is for one-shot async calls.
            config={"concurrency": 4},
            flow="examples/routed_login.yaml",
            input_key="guesses",
        )
        .connect("guesses -> login")
    )
    result = await run_workflow(wf, dataflow_registry(default_registry()))
    assert result.ok, result.error
    assert result.output("login") == [
        {"user": "alice", "attempts": 1},
        {"locked": True, "attempts": 3},
    ]


async def test_routed_flow_node_from_a_python_flow() -> None:
    wf = (
        Workflow("logins")
        .node(
            "creds",
            "source.values",
            values=[
                {"user": "ann", "password": "s3cret"},
                {"user": "bo", "password": "x"},
            ],
        )
        .node("login", "routed.flow", flow="examples.routed_steps:login_flow")
        .connect("creds -> login")
    )
    result = await run_workflow(wf, dataflow_registry(default_registry()))
    assert result.output("login") == [
        {"user": "ann", "authenticated": True},
        {"authenticated": False},
    ]


async def test_routed_flow_node_config_is_checked() -> None:
    runtime_registry = dataflow_registry(default_registry(entry_points=False))
    wf = (
        Workflow("bad")
        .node("src", "source.values", values=[1])
        .node("a", "routed.flow", flow="flow.txt")
        .node("b", "routed.flow", {"concurrency": 0}, flow="x.yaml")
        .connect("src -> a")
        .connect("src -> b")
    )
    with pytest.raises(WorkflowValidationError) as info:
        await run_workflow(wf, runtime_registry)
    assert {p.node for p in info.value.problems} == {"a", "b"}


async def test_a_missing_flow_file_fails_the_run_at_start(tmp_path: Path) -> None:
    wf = (
        Workflow("missing")
        .node("src", "source.values", values=[1])
        .node("a", "routed.flow", flow=str(tmp_path / "nope.yaml"))
        .connect("src -> a")
    )
    result = await run_workflow(wf, dataflow_registry(default_registry()))
    assert result.status == "failed"
    assert "node 'a' (routed.flow) failed to start" in (result.error or "")


# --- a dataflow as a step -------------------------------------------------------------


def doubling() -> Workflow:
    return (
        Workflow("double")
        .node("numbers", "source.values", values=[])
        .node("double", "transform.map", expr="x * 2")
        .node("out", "sink.collect")
        .connect("numbers -> double")
        .connect("double -> out")
    )


async def total(ctx: StepContext) -> Action:
    return Action.complete(sum(await ctx.store.get("doubled", type=list[int])))


async def test_a_dataflow_as_a_step_stores_its_outputs() -> None:
    step = RunWorkflow(
        doubling(), set={"numbers.values": "store.items"}, outputs={"doubled": "out"}
    )
    flow = (
        Flow.builder("crunch")
        .add_node("crunch", step)
        .add_node("total", total)
        .add_route("crunch", "total")
        .build()
    )
    events: list[Any] = []
    flow.bus.add_listener(events.append)
    result = await flow.arun(inputs={"items": [1, 2, 3]})
    assert result.ok, result.error
    assert result.result == 12
    assert flow.nodes["crunch"].type == "step.run_workflow"
    # The dataflow's own events reach the flow's bus under its own run id.
    starts = [e for e in events if type(e).__name__ == "WorkflowStarted"]
    assert [e.mode for e in starts] == ["routed", "dag"]
    assert starts[1].run_id != result.run_id


async def test_all_outputs_by_default_and_next() -> None:
    async def show(ctx: StepContext) -> Action:
        return Action.complete(await ctx.store.get("outputs"))

    wf = (
        Workflow("n")
        .node("numbers", "source.values", values=[5])
        .node("out", "sink.collect")
    )
    wf.connect("numbers -> out")
    flow = (
        Flow.builder("o")
        .add_node("run", RunWorkflow(wf, next="show"))
        .add_node("show", show)
        .build()
    )
    assert (await flow.arun()).result == {"out": {"out": [5]}}


async def test_a_failing_dataflow_fails_the_step_for_on_error() -> None:
    async def fallback(ctx: StepContext) -> Action:
        return Action.complete(ctx.params["error"])

    step = RunWorkflow(doubling(), set={"numbers.values": "store.items"})
    flow = (
        Flow.builder("f")
        .add_node(
            "crunch",
            step,
            retry=RetryPolicy(max_attempts=2, delay_ms=0),
            on_error="fallback",
        )
        .add_node("fallback", fallback)
        .build()
    )
    result = await flow.arun(inputs={"items": ["a", 1]})
    assert result.path == ["crunch", "fallback"]
    assert result.result.startswith("workflow 'double' failed: ")
    assert "'double'" in result.result


def test_run_workflow_checks_what_it_is_given(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"must be 'node\.field'"):
        RunWorkflow(doubling(), set={"ghost.values": "1"})
    with pytest.raises(ValueError, match="has no node 'ghost'"):
        RunWorkflow(doubling(), outputs={"k": "ghost.out"})
    with pytest.raises(ValueError, match="invalid CEL"):
        RunWorkflow(doubling(), set={"numbers.values": "store."})
    with pytest.raises(ValueError, match="runs a dataflow"):
        RunWorkflow(Workflow("r", mode="routed"))
    with pytest.raises(WorkflowValidationError):
        RunWorkflow(Workflow("bad").node("a", "no.such"))


async def test_step_run_workflow_in_a_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    from flowstream.core.workflow import load_workflow

    flow = Flow.from_workflow(
        load_workflow(
            """
name: numbers-step
mode: routed
nodes:
  - id: numbers
    type: step.run_workflow
    config: {workflow: examples/numbers.yaml, outputs: {kept: result}, next: done}
  - id: done
    type: step.complete
    config: {result: "store.kept"}
""",
            "yaml",
        )
    )
    result = await flow.arun()
    assert result.result == [2, 4, 8, 10, 14, 16]
    with pytest.raises(WorkflowValidationError, match="No such file"):
        Flow.from_workflow(
            load_workflow(
                "name: m\nmode: routed\nnodes:\n"
                "  - {id: a, type: step.run_workflow, config: {workflow: nope.yaml}}\n",
                "yaml",
            )
        )
