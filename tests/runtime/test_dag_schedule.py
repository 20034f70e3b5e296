"""DAG runs over the plan's flat schedule: same results and policies as ever.

A graph of one-shot calls only is run as a topological loop of plain calls
(`flowstream.runtime.dag`); these tests pin that it keeps every behaviour of
the general path: failures and their policies, side outputs, classes, async
calls that suspend, counters and events.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import pytest

from flowstream import (
    ContinueOnError,
    FlowRuntime,
    NodeContext,
    RetryPolicy,
    Workflow,
    default_registry,
    node,
)
from flowstream.core.events import NodeCompleted, NodeStarted
from flowstream.runtime.local import WorkflowExecutor


class Bad(msgspec.Struct, frozen=True, kw_only=True):
    bad: int = -1
    fail_times: int = 1_000_000


calls: dict[str, int] = {}


@node("t.one")
def one() -> int:
    return 1


@node("t.add")
def add(a: int, b: int) -> int:
    return a + b


@node("t.fragile", config=Bad)
def fragile(x: int, *, config: Bad) -> int:
    if x == config.bad:
        calls["fragile"] = calls.get("fragile", 0) + 1
        if calls["fragile"] <= config.fail_times:
            msg = f"bad item {x}"
            raise ValueError(msg)
    return x * 10


@node("t.noisy", outputs=("side",))
def noisy(x: int, *, ctx: NodeContext) -> int:
    ctx.emit("side", x + 100)
    return x


@node("t.waits")
async def waits(x: int) -> int:
    await asyncio.sleep(0)
    return x + 1


class Doubler:
    started = 0
    stopped = 0

    async def initialize(self, ctx: NodeContext) -> None:
        Doubler.started += 1

    def execute(self, x: int) -> int:
        return 2 * x

    async def shutdown(self) -> None:
        Doubler.stopped += 1


doubler = node("t.double")(Doubler)


@pytest.fixture
def runtime() -> FlowRuntime:
    calls.clear()
    reg = default_registry()
    for spec in (one, add, fragile, noisy, waits, doubler):
        reg.register(spec)
    return FlowRuntime(reg)


def diamond(middle: str, **config: Any) -> Workflow:
    return (
        Workflow("diamond")
        .node("a", "t.one")
        .node("b", "t.one")
        .node("s", "t.add")
        .node("m", middle, **config)
        .node("end", "t.add")
        .connect("a -> s.a")
        .connect("b -> s.b")
        .connect("s -> m")
        .connect("m -> end.a")
        .connect("a -> end.b")
    )


async def test_plain_calls_make_no_run_time_objects(runtime: FlowRuntime) -> None:
    graph = runtime.validate(diamond("t.double"))
    ex = WorkflowExecutor(graph)
    result = await ex.run()
    assert result.ok, result.error
    assert result.outputs == {"end": {"out": [5]}}
    assert set(ex._nodes) == {"m"}  # only the class node has an instance
    assert result.stats["s"].items_in == 2
    assert result.stats["s"].items_out == 1
    assert result.stats["a"].items_in == 0


async def test_a_failing_call_fails_the_run_naming_the_node(
    runtime: FlowRuntime,
) -> None:
    result = await runtime.arun(diamond("t.fragile", bad=2))
    assert result.status == "failed"
    assert result.error is not None
    assert "'m'" in result.error
    assert "bad item 2" in result.error


async def test_continue_on_error_dead_letters_and_skips_dependents(
    runtime: FlowRuntime,
) -> None:
    wf = diamond("t.fragile", bad=2)
    wf.nodes[3] = msgspec.structs.replace(wf.nodes[3], error_handling=ContinueOnError())
    result = await runtime.arun(wf)
    assert result.status == "completed", result.error
    assert [d.item for d in result.dead_letters] == [2]
    assert result.stats["m"].errors == 1
    assert result.stats["m"].dead_letters == 1
    assert result.stats["m"].items_out == 0
    # end got nothing on port a: zipped with nothing, it is never called.
    assert result.outputs == {"end": {"out": []}}
    assert result.stats["end"].items_in == 1


async def test_retry_policy_counts_the_first_plain_attempt(
    runtime: FlowRuntime,
) -> None:
    delays: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        delays.append(seconds)

    wf = diamond("t.fragile", bad=2, fail_times=2)
    wf.nodes[3] = msgspec.structs.replace(
        wf.nodes[3], retry=RetryPolicy(max_attempts=3, delay_ms=10)
    )
    result = await runtime.arun(wf, sleep=fake_sleep)
    assert result.ok, result.error
    assert result.outputs == {"end": {"out": [21]}}
    assert calls["fragile"] == 3
    assert len(delays) == 2
    assert result.stats["m"].errors == 2


async def test_side_outputs_of_a_ctx_node_are_kept(runtime: FlowRuntime) -> None:
    result = await runtime.arun(diamond("t.noisy"))
    assert result.ok, result.error
    assert result.outputs["m"] == {"side": [102]}
    assert result.outputs["end"] == {"out": [3]}
    assert result.stats["m"].items_out == 2


async def test_class_nodes_are_initialized_and_shut_down(
    runtime: FlowRuntime,
) -> None:
    Doubler.started = Doubler.stopped = 0
    result = await runtime.arun(diamond("t.double"))
    assert result.ok, result.error
    assert (Doubler.started, Doubler.stopped) == (1, 1)


async def test_suspending_calls_run_and_events_are_published(
    runtime: FlowRuntime,
) -> None:
    wf = Workflow("wide").node("root", "t.one")
    for i in range(10):
        wf.node(f"w{i}", "t.waits").connect("root", f"w{i}")
    seen: list[Any] = []
    sub = runtime.bus.subscribe()
    result = await runtime.arun(wf, max_parallel=4)
    while True:
        try:
            seen.append(sub.receive_nowait())
        except Exception:
            break
    sub.close()
    assert result.ok, result.error
    assert all(result.output(f"w{i}") == [2] for i in range(10))
    started = {e.node_id for e in seen if isinstance(e, NodeStarted)}
    completed = {e.node_id for e in seen if isinstance(e, NodeCompleted)}
    assert started == completed == {"root", *(f"w{i}" for i in range(10))}


async def test_a_fan_in_port_zips_all_its_producers(runtime: FlowRuntime) -> None:
    wf = (
        Workflow("fanin")
        .node("a", "t.one")
        .node("b", "t.one")
        .node("c", "t.waits")
        .connect("a -> c")
        .connect("b -> c")
    )
    result = await runtime.arun(wf)
    assert result.ok, result.error
    assert result.output("c") == [2, 2]
    assert result.stats["c"].items_in == 2
