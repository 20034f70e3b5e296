"""Running flows: loops and max_steps, retries, on_error, events, validation."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from flowstream import (
    ExecutionEvent,
    NodeCompleted,
    NodeFailed,
    NodeStarted,
    RetryPolicy,
    RouteTaken,
    WorkflowCompleted,
    WorkflowStarted,
)
from flowstream.errors import WorkflowValidationError
from flowstream.routed import (
    Action,
    ExprCondition,
    Flow,
    MemoryStorage,
    SharedStore,
    SQLiteStorage,
    StepContext,
)


class FakeClock:
    def __init__(self) -> None:
        self.waits: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)


def counting_loop(limit: int) -> Flow:
    async def count(ctx: StepContext) -> Action:
        n = await ctx.store.get("n", type=int, default=0)
        await ctx.store.set("n", n + 1)
        return Action.simple("check")

    async def check(ctx: StepContext) -> Action:
        return Action.conditional(
            ExprCondition(f"store.n >= {limit}"),
            Action.complete("done"),
            "count",
        )

    return (
        Flow.builder("loop")
        .add_node("count", count)
        .add_node("check", check)
        .add_route("count", "check")
        .add_route("check", "count")
        .build()
    )


# --- loops and max_steps ---------------------------------------------------------


async def test_a_loop_runs_until_its_condition_completes_it() -> None:
    store = SharedStore()
    result = await counting_loop(3).arun(store=store)
    assert result.ok
    assert result.path == ["count", "check"] * 3
    assert await store.get("n") == 3


async def test_max_steps_stops_a_runaway_loop_naming_its_steps() -> None:
    flow = counting_loop(10**9)
    result = await flow.arun(max_steps=24)
    assert result.status == "failed"
    assert result.steps == 24
    assert result.failed_node == "count"
    assert result.error == (
        "max_steps (24) reached: the flow kept looping through count -> check -> count"
    )


async def test_max_steps_comes_from_the_builder() -> None:
    flow = counting_loop(10**9)
    limited = (
        Flow.builder("limited")
        .add_node("count", flow.nodes["count"].step)
        .add_node("check", flow.nodes["check"].step)
        .add_route("count", "check")
        .add_route("check", "count")
        .max_steps(7)
        .build()
    )
    assert limited.max_steps == 7
    result = await limited.arun()
    assert result.steps == 7
    assert "count -> check" in (result.error or "")


async def test_max_steps_without_a_loop_names_the_last_steps() -> None:
    async def step(ctx: StepContext) -> None:
        return None

    flow = (
        Flow.builder("line")
        .add_node("a", step)
        .add_node("b", step)
        .add_node("c", step)
        .add_route("a", "b")
        .add_route("b", "c")
        .build()
    )
    result = await flow.arun(max_steps=2)
    assert result.error == "max_steps (2) reached before step 'c' (after a -> b -> c)"
    with pytest.raises(ValueError, match="max_steps must be >= 1"):
        await flow.arun(max_steps=0)


# --- retries and on_error ---------------------------------------------------------


class Flaky:
    """Fails ``failures`` times, then routes on."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.attempts: list[int] = []

    async def execute(self, ctx: StepContext) -> Action:
        self.attempts.append(ctx.attempt)
        if len(self.attempts) <= self.failures:
            msg = f"boom {len(self.attempts)}"
            raise ConnectionError(msg)
        return Action.simple("done")


async def done(ctx: StepContext) -> Action:
    return Action.complete(dict(ctx.params))


def flaky_flow(step: Flaky, retry: RetryPolicy | None, on_error: str | None) -> Flow:
    builder = (
        Flow.builder("flaky")
        .add_node("fetch", step, retry=retry, on_error=on_error)
        .add_node("done", done)
        .add_route("fetch", "done")
    )
    if on_error is not None:
        builder.add_node("fallback", done)
    return builder.build()


async def test_a_failing_step_is_retried_with_backoff() -> None:
    step = Flaky(failures=2)
    events: list[ExecutionEvent] = []
    flow = flaky_flow(step, RetryPolicy(max_attempts=3, delay_ms=100), None)
    flow.bus.add_listener(events.append)
    clock = FakeClock()
    result = await flow.arun(sleep=clock.sleep)
    assert result.ok
    assert step.attempts == [1, 2, 3]
    assert clock.waits == [0.1, 0.2]
    assert result.path == ["fetch", "done"]
    failed = [e for e in events if isinstance(e, NodeFailed)]
    assert [(e.attempt, e.will_retry, e.error) for e in failed] == [
        (1, True, "boom 1"),
        (2, True, "boom 2"),
    ]
    assert {e.error_type for e in failed} == {"ConnectionError"}
    started = [
        e.attempt for e in events if isinstance(e, NodeStarted) and e.node_id == "fetch"
    ]
    assert started == [1, 2, 3]


async def test_retries_used_up_fail_the_run_naming_the_step() -> None:
    step = Flaky(failures=5)
    flow = flaky_flow(step, RetryPolicy(max_attempts=2, delay_ms=0), None)
    result = await flow.arun(sleep=FakeClock().sleep)
    assert result.status == "failed"
    assert result.failed_node == "fetch"
    assert (
        result.error
        == "step 'fetch' (tests.routed.test_flow.Flaky) failed: ConnectionError: boom 2"
    )
    assert result.path == ["fetch"]


async def test_on_error_routes_to_a_fallback_with_the_error() -> None:
    step = Flaky(failures=5)
    events: list[ExecutionEvent] = []
    flow = flaky_flow(step, RetryPolicy(max_attempts=2, delay_ms=0), "fallback")
    flow.bus.add_listener(events.append)
    result = await flow.arun(sleep=FakeClock().sleep)
    assert result.ok
    assert result.path == ["fetch", "fallback"]
    assert result.result == {
        "error": "boom 2",
        "error_type": "ConnectionError",
        "node": "fetch",
    }
    [route] = [e for e in events if isinstance(e, RouteTaken)]
    assert (route.from_node, route.to_node, route.action) == (
        "fetch",
        "fallback",
        "error",
    )
    assert [e.will_retry for e in events if isinstance(e, NodeFailed)] == [True, False]


async def test_on_error_without_retry_goes_at_the_first_failure() -> None:
    step = Flaky(failures=1)
    result = await flaky_flow(step, None, "fallback").arun()
    assert result.path == ["fetch", "fallback"]
    assert step.attempts == [1]


async def test_an_on_error_loop_is_caught_by_max_steps() -> None:
    async def broken(ctx: StepContext) -> Action:
        msg = "still broken"
        raise RuntimeError(msg)

    async def recover(ctx: StepContext) -> Action:
        return Action.simple("work")

    flow = (
        Flow.builder("retry-forever")
        .add_node("work", broken, on_error="recover")
        .add_node("recover", recover)
        .add_route("recover", "work")
        .build()
    )
    result = await flow.arun(max_steps=10)
    assert "looping through work -> recover -> work" in (result.error or "")


# --- events -----------------------------------------------------------------------


async def test_every_step_emits_events_with_the_run_id() -> None:
    events: list[ExecutionEvent] = []
    flow = counting_loop(1)
    flow.bus.add_listener(events.append)
    result = await flow.arun()
    kinds = [type(e).__name__ for e in events]
    assert kinds == [
        "WorkflowStarted",
        "NodeStarted",
        "NodeCompleted",
        "RouteTaken",
        "NodeStarted",
        "NodeCompleted",
        "WorkflowCompleted",
    ]
    assert {e.run_id for e in events} == {result.run_id}
    start = events[0]
    assert isinstance(start, WorkflowStarted)
    assert (start.workflow, start.mode, start.nodes) == ("loop", "routed", 2)
    route = events[3]
    assert isinstance(route, RouteTaken)
    assert (route.from_node, route.to_node, route.action, route.step) == (
        "count",
        "check",
        "simple",
        1,
    )
    completed = events[2]
    assert isinstance(completed, NodeCompleted)
    assert completed.node_type == "tests.routed.test_flow.counting_loop.<locals>.count"
    assert completed.stats.items_in == 1
    end = events[-1]
    assert isinstance(end, WorkflowCompleted)
    assert (end.status, end.error) == ("completed", None)


async def test_a_failed_run_ends_with_a_failed_event() -> None:
    events: list[ExecutionEvent] = []
    flow = flaky_flow(Flaky(failures=1), None, None)
    flow.bus.add_listener(events.append)
    result = await flow.arun()
    end = events[-1]
    assert isinstance(end, WorkflowCompleted)
    assert end.status == "failed"
    assert end.error == result.error


async def test_steps_publish_their_own_events() -> None:
    async def chatty(ctx: StepContext) -> None:
        ctx.event("progress", {"done": 1})
        ctx.logger.debug("hello")

    events: list[ExecutionEvent] = []
    flow = Flow.builder("chat").add_node("chatty", chatty).build()
    flow.bus.add_listener(events.append)
    await flow.arun()
    [custom] = [e for e in events if type(e).__name__ == "NodeEvent"]
    assert custom.node_id == "chatty"  # type: ignore[union-attr]


async def test_a_cancelled_run_says_so_and_is_cancelled() -> None:
    entered = asyncio.Event()

    async def forever(ctx: StepContext) -> None:
        entered.set()
        await asyncio.Event().wait()

    events: list[ExecutionEvent] = []
    flow = Flow.builder("stuck").add_node("forever", forever).build()
    flow.bus.add_listener(events.append)
    task = asyncio.create_task(flow.arun())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    end = events[-1]
    assert isinstance(end, WorkflowCompleted)
    assert end.status == "cancelled"


# --- isolation --------------------------------------------------------------------


async def remember(ctx: StepContext) -> Action:
    mine = await ctx.store.get("input")
    await ctx.store.set("mine", mine)
    for _ in range(3):
        await asyncio.sleep(0)  # let the other runs write their own keys
    return Action.complete(
        {"mine": await ctx.store.get("mine"), "keys": await ctx.store.keys()}
    )


async def test_concurrent_runs_on_one_backend_are_isolated(tmp_path: Any) -> None:
    flow = Flow.builder("iso").add_node("remember", remember).build()
    memory = MemoryStorage()
    async with SQLiteStorage(tmp_path / "iso.db") as sqlite:
        for storage in (memory, sqlite):
            results = await asyncio.gather(
                *(flow.arun(storage=storage, inputs={"input": i}) for i in range(20))
            )
            assert [r.result for r in results] == [
                {"mine": i, "keys": ["input", "mine"]} for i in range(20)
            ]
            assert len({r.namespace for r in results}) == 20
            assert {r.namespace for r in results} == {r.run_id for r in results}
        assert len(await sqlite.namespaces()) == 20
    assert len(memory.namespaces()) == 20


async def test_a_fixed_namespace_keeps_state_across_runs() -> None:
    storage = MemoryStorage()
    flow = counting_loop(1)
    first = await flow.arun(storage=storage, namespace="job-1", max_steps=100)
    assert first.namespace == "job-1"
    store = SharedStore(storage, "job-1")
    assert await store.get("n") == 1
    await flow.arun(store=store)
    assert await store.get("n") == 2  # counted on from the stored value
    with pytest.raises(ValueError, match="either store"):
        await flow.arun(store=store, namespace="x")


# --- validation -------------------------------------------------------------------


async def noop(ctx: StepContext) -> None:
    return None


def test_build_reports_every_problem_at_once() -> None:
    builder = (
        Flow.builder("broken")
        .add_node("start", noop)
        .add_node("start", noop)
        .add_node("bad id", noop)
        .add_node("not_a_step", object())  # type: ignore[arg-type]
        .add_node("lonely", noop)
        .add_node("fails", noop, on_error="nowhere")
        .add_route("start", "missing")
        .add_route("ghost", "start")
        .add_route("start", "fails")
        .max_steps(0)
    )
    with pytest.raises(WorkflowValidationError) as info:
        builder.build()
    err = info.value
    found = {(p.node, p.field, p.message) for p in err.problems}
    assert (None, "max_steps", "must be an int >= 1, got 0") in found
    assert ("start", None, "duplicate step id") in found
    assert ("start", "routes", "route start -> missing: no step 'missing'") in found
    assert (None, "routes", "route ghost -> start: no step 'ghost'") in found
    assert ("fails", "on_error", "no step 'nowhere'") in found
    assert ("lonely", None, "unreachable from the entry step 'start'") in found
    assert ("not_a_step", None, "unreachable from the entry step 'start'") not in found
    assert any(p.node == "bad id" for p in err.problems)
    assert any(p.node == "not_a_step" and p.field == "step" for p in err.problems)
    assert len(err.problems) == 8
    assert str(err).startswith("flow 'broken': 8 problems")


def test_a_flow_needs_an_entry_step() -> None:
    with pytest.raises(WorkflowValidationError, match="no steps, so no entry step"):
        Flow.builder("empty").build()
    with pytest.raises(
        WorkflowValidationError, match="entry step 'nope' does not exist"
    ):
        Flow.builder("e").add_node("a", noop).entry("nope").build()


def test_the_entry_may_be_any_step() -> None:
    flow = (
        Flow.builder("e")
        .add_node("a", noop)
        .add_node("b", noop)
        .add_route("b", "a")
        .entry("b")
        .build()
    )
    assert flow.entry == "b"
    assert flow.routes == [("b", "a")]
    assert "entry='b'" in repr(flow)
    with pytest.raises(WorkflowValidationError, match=r"node 'b'.*unreachable"):
        Flow.builder("e").add_node("a", noop).add_node("b", noop).add_route(
            "b", "a"
        ).build()


def test_targets_of_a_step_become_routes() -> None:
    class Chooser:
        def targets(self) -> list[str]:
            return ["left", "right", "nowhere"]

        async def execute(self, ctx: StepContext) -> Action:
            return Action.simple("left")

    builder = Flow.builder("t").add_node("choose", Chooser())
    builder.add_node("left", noop).add_node("right", noop)
    with pytest.raises(WorkflowValidationError) as info:
        builder.build()
    assert [str(p) for p in info.value.problems] == [
        "node 'choose', config: routes to unknown step 'nowhere'"
    ]


def test_run_blocks_for_scripts() -> None:
    result = counting_loop(2).run()
    assert result.ok
    assert result.steps == 4
