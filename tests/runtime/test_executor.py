from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, ClassVar

import msgspec
import pytest
from hypothesis import given, settings, strategies as st

from flowstream import FlowRuntime, default_registry
from flowstream.core.events import NodeCompleted, NodeFailed, WorkflowCompleted
from flowstream.core.node import node
from flowstream.core.values import Stream
from flowstream.core.workflow import (
    ContinueOnError,
    RetryPolicy,
    RetryWorkflow,
    Workflow,
)
from flowstream.runtime.events import EventBus
from flowstream.runtime.feeds import NO_ITEM

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

# --- user node types used by these tests ----------------------------------------


class Boom(msgspec.Struct, frozen=True, kw_only=True):
    bad: list[int] = []
    fail_times: int = 1_000_000


@node("test.explode")
async def explode(
    inp: AsyncIterator[int], *, config: Boom, ctx: Any
) -> AsyncIterator[int]:
    async for x in inp:
        if x in config.bad:
            seen = ctx.state.get(f"seen-{x}", 0)
            ctx.state[f"seen-{x}"] = seen + 1
            if seen < config.fail_times:
                msg = f"bad item {x}"
                raise ValueError(msg)
        yield x


@node("test.add")
async def add(a: int, b: int) -> int:
    return a + b


@node("test.inc")
def inc(x: int) -> int:
    return x + 1


@node("test.slow_inc")
async def slow_inc(x: int) -> int:
    await asyncio.sleep(0)
    return x + 1


@node("test.const")
async def const() -> int:
    return 10


@node("test.pairs", outputs=("even",))
async def pairs(inp: AsyncIterator[int], *, ctx: Any) -> AsyncIterator[int]:
    async for x in inp:
        if x % 2 == 0:
            ctx.emit("even", x)
        else:
            yield x


@node("test.zip")
async def zip_node(
    left: AsyncIterator[Any], right: AsyncIterator[Any]
) -> AsyncIterator[Any]:
    while True:
        try:
            a = await left.__anext__()
            b = await right.__anext__()
        except StopAsyncIteration:
            return
        yield [a, b]


@node("test.stream_out")
async def stream_out(inp: AsyncIterator[int]) -> AsyncIterator[Any]:
    async for n in inp:

        async def numbers(n: int = n) -> AsyncIterator[int]:
            for i in range(n):
                yield i

        yield Stream(numbers(), name=f"upto{n}")


@node("test.stream_sum")
async def stream_sum(inp: AsyncIterator[Stream[int]]) -> AsyncIterator[int]:
    async for stream in inp:
        total = 0
        async for i in stream:
            total += i
        yield total


@node("test.ticker")
async def ticker() -> AsyncIterator[int]:
    i = 0
    while True:
        yield i
        i += 1
        await asyncio.sleep(0)


class Lifecycle:
    """A class node recording its lifecycle calls."""

    calls: ClassVar[list[str]] = []

    async def initialize(self, ctx: Any) -> None:
        Lifecycle.calls.append("initialize")

    async def execute(self, inp: AsyncIterator[int]) -> AsyncIterator[int]:
        async for x in inp:
            yield x * 10

    async def shutdown(self) -> None:
        Lifecycle.calls.append("shutdown")


lifecycle = node("test.lifecycle")(Lifecycle)

TEST_NODES = [
    explode,
    add,
    inc,
    slow_inc,
    const,
    pairs,
    zip_node,
    stream_out,
    stream_sum,
    ticker,
    lifecycle,
]


@pytest.fixture
def runtime() -> FlowRuntime:
    registry = default_registry(entry_points=False)
    registry.register_all(TEST_NODES)
    return FlowRuntime(registry, EventBus())


@pytest.fixture(params=["fused", "unfused"])
def fuse(request: pytest.FixtureRequest) -> bool:
    return bool(request.param == "fused")


@pytest.fixture(params=["dag", "stream"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def linear(n: int = 100) -> Workflow:
    return (
        Workflow("linear")
        .node("src", "source.range", stop=n)
        .node("double", "transform.map", expr="x * 2")
        .node("keep", "transform.filter", expr="x % 3 != 0")
        .node("inc", "transform.map", fn="operator:neg")
        .node("out", "sink.collect")
        .connect("src -> double")
        .connect("double -> keep")
        .connect("keep -> inc")
        .connect("inc -> out")
    )


async def test_linear_pipeline(runtime: FlowRuntime, fuse: bool, mode: str) -> None:
    result = await runtime.arun(linear(5000), fuse=fuse, mode=mode)
    expected = [-(x * 2) for x in range(5000) if (x * 2) % 3 != 0]
    assert result.status == "completed", result.error
    assert result.output("out") == expected
    assert result.stats["src"].items_out == 5000
    assert result.stats["keep"].items_in == 5000
    assert result.stats["keep"].items_out == len(expected)
    assert result.stats["out"].items_in == len(expected)


async def test_fusion_is_transparent_for_user_generators(runtime: FlowRuntime) -> None:
    wf = (
        Workflow("g")
        .node("src", "source.range", stop=3000)
        .node("p", "test.pairs")
        .node("inc", "test.inc")
        .node("evens", "sink.collect")
        .node("odds", "sink.collect")
        .connect("src -> p")
        .connect("p -> inc")
        .connect("inc -> odds")
        .connect("p.even -> evens")
    )
    fused = await runtime.arun(wf, fuse=True)
    unfused = await runtime.arun(wf, fuse=False)
    assert fused.outputs == unfused.outputs
    assert fused.output("odds") == [x + 1 for x in range(3000) if x % 2]
    assert fused.output("evens") == [x for x in range(3000) if x % 2 == 0]


async def test_fan_out_and_fan_in(runtime: FlowRuntime, fuse: bool, mode: str) -> None:
    wf = Workflow("fan").node("src", "source.range", stop=2000)
    for i in range(4):
        wf.node(f"b{i}", "transform.map", expr=f"x + {i * 10_000}")
        wf.connect("src", f"b{i}")
        wf.connect(f"b{i}", "merged")
    wf.node("merged", "sink.collect")
    result = await runtime.arun(wf, fuse=fuse, mode=mode)
    got = result.output("merged")
    assert len(got) == 8000
    assert sorted(got) == sorted(x + i * 10_000 for i in range(4) for x in range(2000))
    # Each branch keeps its own order through the merge.
    for i in range(4):
        branch = [x for x in got if i * 10_000 <= x < i * 10_000 + 2000]
        assert branch == sorted(branch)


async def test_direct_dag_of_one_shot_nodes(runtime: FlowRuntime) -> None:
    wf = (
        Workflow("dag")
        .node("a", "test.const")
        .node("b", "test.inc")
        .node("c", "test.slow_inc")
        .node("sum", "test.add")
        .connect("a -> b")
        .connect("a -> c")
        .connect("b -> sum.a")
        .connect("c -> sum.b")
    )
    result = await runtime.arun(wf, max_parallel=1)
    assert result.status == "completed", result.error
    assert result.outputs == {"sum": {"out": [22]}}


async def test_one_shot_node_applied_per_item_after_a_stream(
    runtime: FlowRuntime, fuse: bool
) -> None:
    wf = (
        Workflow("per-item")
        .node("src", "source.values", values=[1, 2, 3])
        .node("inc", "test.slow_inc")
        .node("out", "sink.collect")
        .connect("src -> inc")
        .connect("inc -> out")
    )
    result = await runtime.arun(wf, fuse=fuse)
    assert result.output("out") == [2, 3, 4]


async def test_zip_of_two_streams_stops_at_the_shorter(runtime: FlowRuntime) -> None:
    wf = (
        Workflow("zip")
        .node("a", "source.range", stop=5)
        .node("b", "source.range", stop=100_000)
        .node("z", "test.zip")
        .connect("a -> z.left")
        .connect("b -> z.right")
    )
    result = await runtime.arun(wf)
    assert result.status == "completed", result.error
    assert result.output("z") == [[i, i] for i in range(5)]


async def test_stream_values_are_read_incrementally(runtime: FlowRuntime) -> None:
    wf = (
        Workflow("streams")
        .node("src", "source.values", values=[3, 4])
        .node("mk", "test.stream_out")
        .node("sum", "test.stream_sum")
        .connect("src -> mk")
        .connect("mk -> sum")
    )
    result = await runtime.arun(wf)
    assert result.output("sum") == [3, 6]


async def test_stop_workflow_fails_the_run_naming_the_node(
    runtime: FlowRuntime, fuse: bool
) -> None:
    wf = (
        Workflow("fail")
        .node("src", "source.range", stop=10)
        .node("boom", "test.explode", bad=[3])
        .node("out", "sink.collect")
        .connect("src -> boom")
        .connect("boom -> out")
    )
    result = await runtime.arun(wf, fuse=fuse)
    assert result.status == "failed"
    assert result.error is not None
    assert "'boom'" in result.error
    assert "bad item 3" in result.error


async def test_continue_on_error_sends_item_to_dead_letters(
    runtime: FlowRuntime, fuse: bool
) -> None:
    wf = (
        Workflow("cont")
        .node("src", "source.range", stop=10)
        .node("boom", "test.explode", bad=[3, 7], error_handling=ContinueOnError())
        .node("out", "sink.collect")
        .connect("src -> boom")
        .connect("boom -> out")
    )
    result = await runtime.arun(wf, fuse=fuse)
    assert result.status == "completed", result.error
    assert result.output("out") == [0, 1, 2, 4, 5, 6, 8, 9]
    assert [d.item for d in result.dead_letters] == [3, 7]
    assert all("bad item" in d.reason for d in result.dead_letters)
    assert result.stats["boom"].errors == 2
    assert result.stats["boom"].dead_letters == 2


async def test_error_port_receives_failures_when_connected(
    runtime: FlowRuntime,
) -> None:
    wf = (
        Workflow("errport", error_handling=ContinueOnError())
        .node("src", "source.values", values=[1, "x", 3])
        .node("m", "transform.map", expr="x * 2")
        .node("ok", "sink.collect")
        .node("bad", "sink.collect")
        .connect("src -> m")
        .connect("m -> ok")
        .connect("m.error -> bad")
    )
    result = await runtime.arun(wf)
    assert result.output("ok") == [2, 6]
    [letter] = result.output("bad")
    assert letter["node"] == "m"
    assert letter["item"] == "x"
    assert result.dead_letters == []


async def test_retry_policy_retries_then_succeeds(runtime: FlowRuntime) -> None:
    delays: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        delays.append(seconds)

    wf = (
        Workflow("retry")
        .node(
            "boom",
            "test.explode",
            bad=[2],
            fail_times=2,
            retry=RetryPolicy(max_attempts=3, delay_ms=100, backoff_multiplier=2),
        )
        .node("src", "source.range", stop=4)
        .node("out", "sink.collect")
        .connect("src -> boom")
        .connect("boom -> out")
    )
    result = await runtime.arun(wf, sleep=fake_sleep)
    assert result.status == "completed", result.error
    assert result.output("out") == [0, 1, 2, 3]
    assert delays == [0.1, 0.2]


async def test_retry_workflow_reruns_the_run(runtime: FlowRuntime) -> None:
    wf = (
        Workflow("rw", error_handling=RetryWorkflow(max_attempts=2))
        .node("src", "source.range", stop=3)
        .node("boom", "test.explode", bad=[1])
        .connect("src -> boom")
    )
    result = await runtime.arun(wf)
    assert result.status == "failed"
    assert result.attempts == 2


async def test_events_cover_the_lifecycle(runtime: FlowRuntime) -> None:
    seen: list[Any] = []
    runtime.bus.add_listener(seen.append)
    await runtime.arun(linear(10))
    kinds = [type(e).__name__ for e in seen]
    assert kinds[0] == "WorkflowStarted"
    assert kinds[-1] == "WorkflowCompleted"
    completed = {e.node_id for e in seen if isinstance(e, NodeCompleted)}
    assert completed == {"src", "double", "keep", "inc", "out"}
    assert isinstance(seen[-1], WorkflowCompleted)
    assert seen[-1].status == "completed"


async def test_failure_events(runtime: FlowRuntime) -> None:
    seen: list[Any] = []
    runtime.bus.add_listener(seen.append)
    wf = (
        Workflow("f")
        .node("src", "source.range", stop=5)
        .node("boom", "test.explode", bad=[1])
        .connect("src -> boom")
    )
    await runtime.arun(wf)
    failed = [e for e in seen if isinstance(e, NodeFailed)]
    assert len(failed) == 1
    assert failed[0].node_id == "boom"
    assert failed[0].error_type == "ValueError"


async def test_class_node_lifecycle_runs_whatever_happens(runtime: FlowRuntime) -> None:
    Lifecycle.calls = []
    wf = (
        Workflow("life")
        .node("src", "source.values", values=[1, 2])
        .node("life", "test.lifecycle")
        .node("boom", "test.explode", bad=[20])
        .connect("src -> life")
        .connect("life -> boom")
    )
    result = await runtime.arun(wf)
    assert result.status == "failed"
    assert Lifecycle.calls == ["initialize", "shutdown"]


async def test_stream_mode_stop_drains_and_leaves_no_tasks(
    runtime: FlowRuntime,
) -> None:
    wf = (
        Workflow("ticks", mode="stream")
        .node("tick", "test.ticker")
        .node("double", "transform.map", expr="x * 2")
        .node("out", "sink.collect")
        .connect("tick -> double")
        .connect("double -> out")
    )
    before = asyncio.all_tasks()
    executor = runtime.executor(wf)
    run = asyncio.ensure_future(executor.run())
    for _ in range(1000):
        await asyncio.sleep(0)
        if (
            executor.statistics().get("out")
            and executor.statistics()["out"].items_in > 50
        ):
            break
    executor.stop()
    result = await run
    assert result.status == "completed", result.error
    got = result.output("out")
    assert len(got) > 50
    # Drained: everything the source emitted reached the sink, in order.
    assert got == [2 * i for i in range(len(got))]
    assert result.stats["tick"].items_out == len(got)
    assert asyncio.all_tasks() - before == set()


async def test_second_stop_cancels(runtime: FlowRuntime) -> None:
    wf = (
        Workflow("ticks", mode="stream")
        .node("tick", "test.ticker")
        .node("slow", "test.slow_inc")
        .connect("tick -> slow")
    )
    executor = runtime.executor(wf)
    run = asyncio.ensure_future(executor.run())
    for _ in range(20):
        await asyncio.sleep(0)
    executor.stop()
    executor.stop()
    result = await run
    assert result.status == "cancelled"


async def test_no_task_leaks_after_failure(runtime: FlowRuntime) -> None:
    before = asyncio.all_tasks()
    wf = (
        Workflow("f")
        .node("src", "source.range", stop=100_000)
        .node("boom", "test.explode", bad=[5000])
        .node("m", "transform.map", expr="x + 1", fuse=False)
        .connect("src -> boom")
        .connect("boom -> m")
    )
    result = await runtime.arun(wf, fuse=False)
    assert result.status == "failed"
    assert asyncio.all_tasks() - before == set()


def test_run_is_usable_without_a_loop(runtime: FlowRuntime) -> None:
    result = runtime.run(linear(10))
    assert result.ok


# --- backpressure and bounded concurrency -----------------------------------------


class Flow:
    produced = 0
    consumed = 0
    peak = 0


class BatchCfg(msgspec.Struct, frozen=True, kw_only=True):
    batches: int
    size: int


@node("test.fast_batches", batched=True)
async def fast_batches(*, config: BatchCfg) -> AsyncIterator[list[int]]:
    for b in range(config.batches):
        Flow.produced += config.size
        Flow.peak = max(Flow.peak, Flow.produced - Flow.consumed)
        yield list(range(b * config.size, (b + 1) * config.size))


class SlowCfg(msgspec.Struct, frozen=True, kw_only=True):
    pauses: list[int]


@node("test.slow_sink")
async def slow_sink(inp: AsyncIterator[int], *, config: SlowCfg) -> AsyncIterator[int]:
    i = 0
    async for x in inp:
        for _ in range(config.pauses[i % len(config.pauses)]):
            await asyncio.sleep(0)
        Flow.consumed += 1
        i += 1
        yield x


@settings(max_examples=40, deadline=None)
@given(
    capacity=st.integers(min_value=0, max_value=4),
    batches=st.integers(min_value=1, max_value=30),
    size=st.integers(min_value=1, max_value=20),
    pauses=st.lists(st.integers(min_value=0, max_value=3), min_size=1, max_size=5),
)
def test_fast_producer_never_outruns_the_channel_bound(
    capacity: int, batches: int, size: int, pauses: list[int]
) -> None:
    registry = default_registry(entry_points=False)
    registry.register_all([fast_batches, slow_sink])
    Flow.produced = Flow.consumed = Flow.peak = 0
    wf = (
        Workflow("bp")
        .node("src", "test.fast_batches", batches=batches, size=size)
        .node("slow", "test.slow_sink", pauses=pauses)
        .connect("src", "slow", capacity=capacity)
    )
    result = FlowRuntime(registry).run(wf)
    assert result.ok, result.error
    assert result.output("slow") == list(range(batches * size))
    # In flight: the channel's batches, plus one batch being handed over by
    # the producer and one being worked through by the consumer.
    assert Flow.peak <= (capacity + 2) * size


class Gate:
    running = 0
    peak = 0


@node("test.gated")
async def gated(x: int) -> int:
    Gate.running += 1
    Gate.peak = max(Gate.peak, Gate.running)
    for _ in range(3):
        await asyncio.sleep(0)
    Gate.running -= 1
    return x


async def test_max_parallel_bounds_suspended_calls(runtime: FlowRuntime) -> None:
    runtime.registry.register(gated)
    wf = Workflow("wide").node("root", "test.const")
    for i in range(20):
        wf.node(f"g{i}", "test.gated").connect("root", f"g{i}")
    Gate.running = Gate.peak = 0
    result = await runtime.arun(wf, max_parallel=3)
    assert result.ok, result.error
    assert Gate.peak == 3
    assert all(result.output(f"g{i}") == [10] for i in range(20))


async def test_fuse_false_on_a_node_keeps_results(runtime: FlowRuntime) -> None:
    wf = linear(300)
    wf.nodes[2] = msgspec.structs.replace(wf.nodes[2], fuse=False)
    fused = await runtime.arun(linear(300))
    split = await runtime.arun(wf)
    assert split.outputs == fused.outputs


async def test_stream_mode_keeps_only_sink_collect_outputs(
    runtime: FlowRuntime,
) -> None:
    wf = (
        Workflow("s", mode="stream")
        .node("src", "source.range", stop=10)
        .node("m", "transform.map", expr="x + 1")
        .node("c", "sink.collect")
        .connect("src -> m")
        .connect("src -> c")
    )
    result = await runtime.arun(wf)
    assert result.outputs == {"c": {"out": list(range(10))}}
    assert result.stats["m"].items_out == 10


@node("test.idle_marks", timed=True)
async def idle_marks(inp: AsyncIterator[int]) -> AsyncIterator[Any]:
    from flowstream.runtime.feeds import next_item

    while True:
        try:
            item = await next_item(inp, 0.005)
        except StopAsyncIteration:
            return
        yield item if item is not NO_ITEM else "idle"


@node("test.sleepy_source")
async def sleepy_source() -> AsyncIterator[int]:
    for i in range(3):
        await asyncio.sleep(0.03)
        yield i


async def test_timed_node_waits_with_deadlines_and_loses_nothing(
    runtime: FlowRuntime, fuse: bool
) -> None:
    runtime.registry.register_all([idle_marks, sleepy_source])
    wf = (
        Workflow("timed")
        .node("src", "test.sleepy_source")
        .node("marks", "test.idle_marks")
        .connect("src -> marks")
    )
    result = await runtime.arun(wf, fuse=fuse)
    got = result.output("marks")
    assert [x for x in got if x != "idle"] == [0, 1, 2]
    assert "idle" in got


async def test_next_item_refuses_untimed_inputs() -> None:
    from flowstream.runtime.feeds import ItemFeed, next_item

    async def batches() -> AsyncIterator[list[int]]:
        yield [1]

    with pytest.raises(TypeError, match="timed=True"):
        await next_item(ItemFeed(batches()), 1.0)


# --- ports named by the config ---------------------------------------------------


class RouteCfg(msgspec.Struct, frozen=True, kw_only=True):
    routes: dict[str, int]


@node("test.route", ports=lambda cfg: (("in",), tuple(cfg.routes)))
async def route_by_modulus(
    *inputs: AsyncIterator[int], config: RouteCfg, ctx: Any
) -> AsyncIterator[int]:
    async for x in inputs[0]:
        for port, m in config.routes.items():
            if x % m == 0:
                ctx.emit(port, x)
    return
    yield  # an async generator that emits only through ctx


class ConcatCfg(msgspec.Struct, frozen=True, kw_only=True):
    names: list[str]


@node("test.concat", ports=lambda cfg: (tuple(cfg.names), ()))
async def concat(*inputs: AsyncIterator[Any], config: ConcatCfg) -> AsyncIterator[Any]:
    for feed in inputs:
        async for x in feed:
            yield x


async def test_ports_named_by_config(runtime: FlowRuntime, fuse: bool) -> None:
    runtime.registry.register_all([route_by_modulus, concat])
    wf = (
        Workflow("dyn")
        .node("src", "source.range", stop=12)
        .node("r", "test.route", routes={"by3": 3, "by4": 4})
        .node("c", "test.concat", names=["first", "second"])
        .connect("src -> r")
        .connect("r.by3 -> c.first")
        .connect("r.by4 -> c.second")
    )
    result = await runtime.arun(wf, fuse=fuse)
    assert result.ok, result.error
    assert result.output("c") == [0, 3, 6, 9, 0, 4, 8]


def test_ports_named_by_config_are_validated(runtime: FlowRuntime) -> None:
    from flowstream.errors import WorkflowValidationError

    runtime.registry.register_all([route_by_modulus])
    wf = (
        Workflow("dyn")
        .node("src", "source.range", stop=12)
        .node("r", "test.route", routes={"by3": 3})
        .node("out", "sink.collect")
        .connect("src -> r")
        .connect("r.by5 -> out")
    )
    with pytest.raises(WorkflowValidationError, match="no output port 'by5'"):
        runtime.validate(wf)


# --- sources that stop themselves, and failing initialization ---------------------


@node("test.buffered_source", stops_itself=True)
async def buffered_source(*, ctx: Any) -> AsyncIterator[int]:
    # Emits while running; on stop, hands over what it "took in" (3 more) first.
    i = 0
    while not ctx.stopping.is_set():
        yield i
        i += 1
        await asyncio.sleep(0)
    for j in range(3):
        yield i + j


async def test_a_source_that_stops_itself_drains_its_backlog(
    runtime: FlowRuntime,
) -> None:
    runtime.registry.register(buffered_source)
    wf = (
        Workflow("self-stop", mode="stream")
        .node("src", "test.buffered_source")
        .node("out", "sink.collect")
        .connect("src -> out")
    )
    executor = runtime.executor(wf)
    run = asyncio.ensure_future(executor.run())
    for _ in range(100):
        await asyncio.sleep(0)
    executor.stop()
    result = await run
    got = result.output("out")
    assert result.ok, result.error
    assert got == list(range(len(got)))
    assert len(got) >= 3


class Unready:
    async def initialize(self, ctx: Any) -> None:
        msg = "port 1 refused"
        raise ConnectionRefusedError(msg)

    async def execute(self, inp: AsyncIterator[int]) -> AsyncIterator[int]:
        async for x in inp:
            yield x

    async def shutdown(self) -> None:
        pass


async def test_failing_initialize_names_the_node(runtime: FlowRuntime) -> None:
    runtime.registry.register(node("test.unready")(Unready))
    seen: list[Any] = []
    runtime.bus.add_listener(seen.append)
    wf = (
        Workflow("u")
        .node("src", "source.values", values=[1])
        .node("u", "test.unready")
        .connect("src -> u")
    )
    result = await runtime.arun(wf)
    assert result.status == "failed"
    assert result.error is not None
    assert "'u'" in result.error
    assert "port 1 refused" in result.error
    assert [type(e).__name__ for e in seen] == ["WorkflowCompleted"]


async def test_retry_workflow_starts_each_attempt_with_fresh_state(
    runtime: FlowRuntime,
) -> None:
    wf = (
        Workflow("rw", error_handling=RetryWorkflow(max_attempts=2))
        .node("src", "source.values", values=[1, 2, 3])
        .node("boom", "test.explode", bad=[3], fail_times=1)
        .node("total", "transform.reduce", op="sum")
        .connect("src -> boom")
        .connect("boom -> total")
    )
    result = await runtime.arun(wf)
    # test.explode fails once on 3 (counted in run state, which is per
    # attempt), so the second attempt fails again: state did not leak.
    assert result.status == "failed"
    assert result.attempts == 2


@node("test.quiet_sum")
async def quiet_sum(
    inp: AsyncIterator[int], *, config: Boom, ctx: Any
) -> AsyncIterator[int]:
    # Yields only at the end, so failures on different items come back to back.
    async for x in inp:
        if x in config.bad and not ctx.state.get(f"failed-{x}"):
            ctx.state[f"failed-{x}"] = True
            msg = f"flaky {x}"
            raise ValueError(msg)
        ctx.state["total"] = ctx.state.get("total", 0) + x
    yield ctx.state.get("total", 0)


async def test_each_failing_item_gets_its_own_retry_budget(
    runtime: FlowRuntime,
) -> None:
    async def no_wait(seconds: float) -> None:
        return None

    runtime.registry.register(quiet_sum)
    wf = (
        Workflow("budget")
        .node("src", "source.values", values=[1, 2, 3, 4])
        .node(
            "sum",
            "test.quiet_sum",
            bad=[2, 3],
            retry=RetryPolicy(max_attempts=2, delay_ms=0),
        )
        .connect("src -> sum")
    )
    result = await runtime.arun(wf, sleep=no_wait)
    assert result.ok, result.error
    assert result.output("sum") == [10]


@node("test.deadline")
async def deadline_call(x: int) -> int:
    # Enters a task-bound context before its first suspension.
    async with asyncio.timeout(10):
        await asyncio.sleep(0)
        return x * 2


async def test_one_shot_calls_keep_task_bound_contexts(runtime: FlowRuntime) -> None:
    runtime.registry.register(deadline_call)
    wf = (
        Workflow("tb")
        .node("a", "test.const")
        .node("b", "test.deadline")
        .node("c", "test.deadline")
        .connect("a -> b")
        .connect("b -> c")
    )
    result = await runtime.arun(wf)
    assert result.ok, result.error
    assert result.output("c") == [40]


async def test_a_source_that_never_waits_can_still_be_stopped(
    runtime: FlowRuntime,
) -> None:
    wf = (
        Workflow("hot", mode="stream")
        .node("src", "source.range", stop=10**12)
        .node("neg", "transform.map", fn="operator:neg")
        .node("sink", "sink.null")
        .connect("src -> neg")
        .connect("neg -> sink")
    )
    executor = runtime.executor(wf)  # fused: one task that never waits on I/O
    run = asyncio.ensure_future(executor.run())
    for _ in range(3):
        await asyncio.sleep(0)  # the loop gets turns while the source runs
    executor.stop()
    result = await run
    assert result.ok, result.error
    assert 0 < result.stats["sink"].items_in < 10**12


async def test_composed_kernels_count_every_node_and_isolate_failures(
    runtime: FlowRuntime,
) -> None:
    wf = (
        Workflow("composed", error_handling=ContinueOnError())
        .node("src", "source.values", values=[1, 2, 3, "x", 4, 5, 6])
        .node("double", "transform.map", expr="x * 2")
        .node("keep", "transform.filter", expr="x % 3 != 0")
        .node("inc", "transform.map", expr="x + 1")
        .node("odd", "transform.filter", expr="x % 2 == 1")
        .node("out", "sink.collect")
        .connect("src -> double")
        .connect("double -> keep")
        .connect("keep -> inc")
        .connect("inc -> odd")
        .connect("odd -> out")
    )
    fused = await runtime.arun(wf)
    unfused = await runtime.arun(wf, fuse=False)
    assert fused.output("out") == unfused.output("out") == [3, 5, 9, 11]
    assert [d.item for d in fused.dead_letters] == ["x"]
    for node_id in ("double", "keep", "inc", "odd", "out"):
        assert fused.stats[node_id].items_in == unfused.stats[node_id].items_in
        assert fused.stats[node_id].items_out == unfused.stats[node_id].items_out
    assert (fused.stats["keep"].items_in, fused.stats["keep"].items_out) == (6, 4)


async def test_dead_letters_kept_in_the_result_are_bounded(
    runtime: FlowRuntime,
) -> None:
    seen: list[Any] = []
    runtime.bus.add_listener(seen.append)
    wf = (
        Workflow("many-bad", error_handling=ContinueOnError())
        .node("src", "source.values", values=["bad"] * 30 + [1])
        .node("m", "transform.map", expr="x * 2")
        .node("out", "sink.collect")
        .connect("src -> m")
        .connect("m -> out")
    )
    result = await runtime.arun(wf, max_dead_letters=10)
    assert result.ok, result.error
    assert result.output("out") == [2]
    assert len(result.dead_letters) == 10
    assert result.dead_letters_not_kept == 20
    assert result.stats["m"].dead_letters == 30
    letters = [e for e in seen if getattr(e, "name", None) == "dead_letter"]
    assert len(letters) == 30
