"""The Ray backend: same results as local, credit-window backpressure, failures."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import msgspec
import pytest
import ray
from click.testing import CliRunner

from flowstream import FlowRuntime, Workflow, default_registry, node
from flowstream.cli import cli
from flowstream.runtime.ray import RayExecutor
from flowstream.runtime.ray.slots import remote_edges, slots_of
from flowstream.runtime.validation import validate

pytestmark = pytest.mark.usefixtures("ray_cluster")


def canon(items: list[Any]) -> list[bytes]:
    enc = msgspec.json.Encoder(order="deterministic")
    return sorted(enc.encode(x) for x in items)


def outputs(result: Any) -> dict[str, dict[str, list[bytes]]]:
    assert result.ok, result.error
    return {
        gid: {port: canon(items) for port, items in ports.items()}
        for gid, ports in result.outputs.items()
    }


def everything(par: int) -> Workflow:
    """Linear, keyed window, join and fan-out/fan-in, in one workflow."""
    events = [{"user": f"u{i % 5}", "ts": i * 0.1, "n": i} for i in range(300)]
    clicks = [{"user": f"u{i % 5}", "ts": i * 0.3} for i in range(100)]
    return (
        Workflow("everything", parallelism=par)
        .node("ev", "source.values", values=events)
        .node("cl", "source.values", values=clicks)
        # linear
        .node("big", "transform.filter", expr="x.n % 3 != 0")
        .node("lin_out", "sink.collect")
        # keyed event-time window
        .node(
            "per_user",
            "window.tumbling",
            size_ms=1000,
            time="event",
            timestamp_field="ts",
            key_field="user",
            op="sum",
            value="x.n",
        )
        .node("win_out", "sink.collect")
        # join
        .node(
            "pairs",
            "join.window",
            left_key="x.user",
            right_key="x.user",
            left_time="x.ts",
            right_time="x.ts",
            window_ms=200,
        )
        .node("join_out", "sink.collect")
        # fan-out from ev, fan-in into one port
        .node("a", "transform.map", expr="x.n * 2")
        .node("b", "transform.map", expr="x.n + 1000")
        .node("total", "transform.reduce", op="sum", key="x % 2", value="x")
        .node("fan_out", "sink.collect")
        .connect("ev -> big")
        .connect("big -> lin_out")
        .connect("ev -> per_user")
        .connect("per_user -> win_out")
        .connect("ev -> pairs.left")
        .connect("cl -> pairs.right")
        .connect("pairs -> join_out")
        .connect("ev -> a")
        .connect("ev -> b")
        .connect("a -> total")
        .connect("b -> total")
        .connect("total -> fan_out")
    )


def test_same_results_locally_and_on_ray() -> None:
    runtime = FlowRuntime()
    expected = outputs(runtime.run(everything(1)))
    assert all(ports["out"] for ports in expected.values())
    assert outputs(runtime.run(everything(2))) == expected
    result = runtime.run(everything(2), backend="ray")
    assert outputs(result) == expected
    # Both processes did part of the work: each keyed instance took items.
    assert result.stats["per_user[0]"].items_in > 0
    assert result.stats["per_user[1]"].items_in > 0


@node("test.square")
async def square(inp: int) -> int:
    return inp * inp


def test_a_bounded_collect_counts_its_drops_on_ray() -> None:
    # One slot per instance of the collect: each keeps its newest 5, and the
    # driver adds up what they let go under the declared node.
    wf = (
        Workflow("tail", mode="stream")
        .node("src", "source.range", stop=40)
        .node("last", "sink.collect", max_items=5, parallelism=2)
        .connect("src -> last")
    )
    result = FlowRuntime().run(wf, backend="ray")
    assert result.ok, result.error
    kept = len(result.output("last"))
    assert 5 <= kept <= 10
    assert result.outputs_dropped == {"last": 40 - kept}


def test_types_registered_by_hand_run_on_ray() -> None:
    # Neither type is a built-in or an installed pack, so no registry the
    # workers could build alone has them: the driver hands them over, the
    # module-level one by reference, the one made here pickled by value.
    # (One-shot functions: those may run several instances.)
    offset = 1000

    @node("test.shift")
    async def shift(inp: int) -> int:
        return inp + offset

    registry = default_registry(entry_points=False)
    registry.register(square)
    registry.register(shift)
    wf = (
        Workflow("by_hand")
        .node("src", "source.range", stop=2000)
        .node("sq", "test.square", parallelism=2)
        .node("sh", "test.shift", parallelism=2)
        .node("out", "sink.collect")
        .connect("src -> sq")
        .connect("sq -> sh")
        .connect("sh -> out")
    )
    runtime = FlowRuntime(registry)
    expected = sorted(x * x + 1000 for x in range(2000))
    assert sorted(runtime.run(wf).output("out")) == expected
    result = runtime.run(wf, backend="ray")
    assert result.ok, result.error
    assert sorted(result.output("out")) == expected
    assert result.stats["sq[0]"].items_in > 0
    assert result.stats["sq[1]"].items_in > 0


def test_a_slow_consumer_holds_each_edge_to_the_credit_window() -> None:
    # 12 batches of 1024 from the source, shared with the other process,
    # where each item costs 0.2 ms: the sender runs ahead until its window
    # of un-acknowledged batches is full, and no further. Channels of one
    # batch, so that a frame takes along at most one batch that waited
    # (`SEND_COALESCE`) and several frames cross.
    window = 2
    wf = (
        Workflow("slow")
        .node("src", "source.values", values=[0.0002] * 12288)
        .node("nap", "transform.map", fn="time:sleep", parallelism=2)
        .node("out", "sink.null", parallelism=2)
        .connect("src -> nap")
        .connect("nap -> out")
    )
    graph = validate(wf, default_registry())
    executor = FlowRuntime().executor(
        graph, backend="ray", credit_window=window, capacity=1
    )
    assert isinstance(executor, RayExecutor)
    meters: dict[int, tuple[int, int, int]] = {}

    async def main() -> Any:
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(executor.run())
            while not task.done():
                if executor._actors:
                    with contextlib.suppress(ray.exceptions.RayError):
                        meters.update(await executor.edge_meters())
                await asyncio.wait([task], timeout=0.05)
        return task.result()

    result = asyncio.run(main())
    assert result.ok, result.error
    (edge,) = remote_edges(graph, slots_of(graph))
    batches, _, peak = meters[0]
    assert edge.to_node == "nap[1]"
    assert batches >= 4
    assert peak == window


def test_a_failing_node_fails_the_run_and_names_its_instance() -> None:
    wf = (
        Workflow("fails", parallelism=2)
        .node("src", "source.range", stop=50)
        .node("div", "transform.map", expr="100 / (x - 37)")
        .node("out", "sink.collect")
        .connect("src -> div")
        .connect("div -> out")
    )
    result = FlowRuntime().run(wf, backend="ray")
    assert result.status == "failed"
    assert "div[" in (result.error or "")


def test_retry_workflow_runs_every_process_again_on_ray() -> None:
    from flowstream.core.events import WorkflowCompleted, WorkflowStarted
    from flowstream.core.workflow import RetryWorkflow

    wf = (
        Workflow("retried", parallelism=2)
        .node("src", "source.range", stop=50)
        .node("div", "transform.map", expr="100 / (x - 37)")
        .node("out", "sink.collect")
        .connect("src -> div")
        .connect("div -> out")
    )
    wf.error_handling = RetryWorkflow(max_attempts=2)
    executor = FlowRuntime().executor(wf, backend="ray")
    events: list[Any] = []
    executor.bus.add_listener(events.append)
    result = asyncio.run(executor.run())
    assert result.status == "failed"
    assert result.attempts == 2  # the driver's retries, not each slot's own
    started = [e.run_id for e in events if isinstance(e, WorkflowStarted)]
    ended = [e for e in events if isinstance(e, WorkflowCompleted)]
    assert len(set(started)) == 2  # one run id per attempt
    assert [e.status for e in ended] == ["failed", "failed"]
    assert result.run_id == started[-1]


PARALLEL_YAML = """
name: counts
mode: dag
parallelism: 2
nodes:
  - {id: src, type: source.range, config: {stop: 1000}}
  - {id: sq, type: transform.map, config: {expr: "x * x % 13"}}
  - {id: per_key, type: transform.reduce, config: {op: count, key: "x"}}
  - {id: out, type: sink.collect}
connections: ["src -> sq", "sq -> per_key", "per_key -> out"]
"""


def test_cli_runs_on_ray_with_the_same_outputs(tmp_path) -> None:
    path = tmp_path / "counts.yaml"
    path.write_text(PARALLEL_YAML)
    local = CliRunner().invoke(cli, ["run", str(path), "--json"])
    on_ray = CliRunner().invoke(cli, ["run", str(path), "--json", "--backend", "ray"])
    assert local.exit_code == 0, local.output
    assert on_ray.exit_code == 0, on_ray.output

    def outs(text: str) -> list[bytes]:
        return canon(json.loads(text)["outputs"]["out"]["out"])

    assert outs(on_ray.stdout) == outs(local.stdout)
    assert len(outs(local.stdout)) == 7  # the squares mod 13


def test_a_killed_actor_fails_the_run_naming_its_nodes() -> None:
    wf = (
        Workflow("killed")
        # Long enough (4 s a slot) to outlast the statistics' first poll of
        # a slot whose loop runs sleeping batches back to back.
        .node("src", "source.values", values=[0.0005] * 16384)
        .node("nap", "transform.map", fn="time:sleep", parallelism=2)
        .node("out", "sink.null", parallelism=2)
        .connect("src -> nap")
        .connect("nap -> out")
    )
    executor = FlowRuntime().executor(wf, backend="ray")
    assert isinstance(executor, RayExecutor)

    async def main() -> Any:
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(executor.run())
            deadline = asyncio.get_running_loop().time() + 30
            # Kill the second slot once it has taken items.
            while not executor.statistics().get("nap[1]", None) or (
                executor.statistics()["nap[1]"].items_in == 0
            ):
                assert asyncio.get_running_loop().time() < deadline
                assert not task.done(), task.result().error
                await asyncio.wait([task], timeout=0.05)
            ray.kill(executor._actors[1])
        return task.result()

    result = asyncio.run(main())
    assert result.status == "failed"
    assert "the process running" in (result.error or "")
    assert "nap[1]" in (result.error or "")


def test_a_split_file_source_reads_each_line_once_on_ray(tmp_path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps({"i": i}) + "\n" for i in range(5000)))

    def wf(par: int) -> Workflow:
        return (
            Workflow("split")
            .node("src", "file.source", path=str(path), parallelism=par)
            .node("count", "transform.reduce", op="count", key="x.i % 7")
            .node("out", "sink.collect")
            .connect("src -> count")
            .connect("count -> out")
        )

    runtime = FlowRuntime()
    expected = outputs(runtime.run(wf(1)))
    result = runtime.run(wf(2), backend="ray")
    assert outputs(result) == expected
    # Each process read its own part of the file, not all of it.
    parts = [result.stats[f"src[{i}]"].items_out for i in (0, 1)]
    assert sum(parts) == 5000
    assert all(parts)
