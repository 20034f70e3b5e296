"""Operating runs on Ray: poison records, causes named, recent outputs, dead actors."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import time
from contextlib import closing
from typing import TYPE_CHECKING, Any, Literal

import msgspec
import pytest

from flowstream import FlowRuntime, Workflow, default_registry
from flowstream.core.events import NodeEvent
from flowstream.core.workflow import Checkpoint
from flowstream.runtime.ray import RayBackendError, RayExecutor
from flowstream.runtime.ray.actor import SlotActor
from flowstream.runtime.ray.nodetypes import node_types
from flowstream.runtime.ray.probe import SAMPLE_BYTES, SAMPLE_RECORDS, OutputSample
from flowstream.runtime.validation import validate
from flowstream.server.observe import OUTPUT_RECORDS, RecentOutputs

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.usefixtures("ray_cluster")

N = 200


def poisoned(
    tmp: Path, poison: Literal["stop", "dead_letter"], stop: int = N
) -> Workflow:
    """Record 13 fails ``invert`` (either instance) on every run."""
    wf = (
        Workflow("poisoned", mode="stream", parallelism=2)
        .node("numbers", "source.range", stop=stop, parallelism=1)
        .node("invert", "transform.map", expr="{'x': x, 'y': 100 / (x - 13)}")
        .node(
            "rows",
            "sqlite.sink",
            path=str(tmp / "t.db"),
            table="t",
            key="x",
            parallelism=1,  # one writer
        )
        .connect("numbers -> invert")
        .connect("invert -> rows")
    )
    wf.checkpoint = Checkpoint(
        path=str(tmp / "c.db"), interval_ms=1, max_restarts=2, poison=poison
    )
    return wf


def test_a_poison_record_is_counted_in_the_driver_and_dead_lettered(
    tmp_path: Path,
) -> None:
    runtime = FlowRuntime()
    first = runtime.run(poisoned(tmp_path, "dead_letter"), backend="ray")
    assert first.status == "failed"
    assert "invert" in (first.error or "")
    assert "item 13: CelError" in (first.error or "")
    assert "has now failed" not in (first.error or "")
    second = runtime.run(poisoned(tmp_path, "dead_letter"), backend="ray")
    assert second.status == "failed"
    assert "this record has now failed 2 runs at node 'invert'" in (second.error or "")
    assert "send it to the dead letters" in (second.error or "")
    # Under poison: stop the next start is refused before any actor runs.
    refused = runtime.run(poisoned(tmp_path, "stop"), backend="ray")
    assert refused.status == "failed"
    assert refused.stats == {}
    assert "poison record at node 'invert'" in (refused.error or "")
    assert "failed the last 2 runs" in (refused.error or "")
    # Under dead_letter it runs, skips record 13 with the local reason, and
    # the keyed sink holds every other record exactly once.
    result = runtime.run(poisoned(tmp_path, "dead_letter"), backend="ray")
    assert result.ok, result.error
    [letter] = result.dead_letters
    assert (letter.node_id, letter.instances) == ("invert", 2)
    assert letter.item == 13
    assert letter.reason.startswith("poison record: failed 2 runs (")
    assert "now CelError" in letter.reason
    with closing(sqlite3.connect(tmp_path / "t.db")) as conn:
        rows = conn.execute("select x, count(*) from t group by x").fetchall()
    assert sorted(rows) == [(x, 1) for x in range(N) if x != 13]


def test_recent_outputs_reach_the_probe_in_the_driver_as_a_bounded_sample() -> None:
    n = 3000
    wf = (
        Workflow("recent", mode="stream", parallelism=2)
        .node("src", "source.range", stop=n, parallelism=1)
        # Paced (about 1.5 s), so that the driver polls the slots mid-run.
        .node("pace", "transform.throttle", rate=200, per_ms=100, burst=200)
        .node("sq", "transform.map", expr="{'i': x, 'sq': x * x}")
        .node("out", "sink.collect", parallelism=1)
        .connect("src -> pace")
        .connect("pace -> sq")
        .connect("sq -> out")
    )
    calls: list[tuple[str, str, list[Any]]] = []
    recent = RecentOutputs()

    def probe(node_id: str, port: str, batch: list[Any]) -> None:
        calls.append((node_id, port, list(batch)))
        recent.take(node_id, port, batch)

    result = FlowRuntime().run(wf, backend="ray", output_probe=probe)
    assert result.ok, result.error
    collected = result.output("out")
    assert len(collected) == n
    assert len(calls) > 1  # mid-run, not only at the end
    assert {(node, port) for node, port, _ in calls} == {("out", "out")}
    position = {r["i"]: k for k, r in enumerate(collected)}
    for _, _, batch in calls:
        assert 0 < len(batch) <= SAMPLE_RECORDS
        # The latest records collected, in their order.
        at = [position[r["i"]] for r in batch]
        assert at == list(range(at[0], at[0] + len(batch)))
    assert sum(len(b) for _, _, b in calls) < n  # a sample, not every record
    # What the server shows once the run ended: its last records.
    shown = recent.snapshot()["out"]["out"].records
    assert [msgspec.json.decode(r) for r in shown] == collected[-OUTPUT_RECORDS:]


def test_a_sample_keeps_the_newest_records_within_its_byte_bound() -> None:
    sample = OutputSample()
    sample.take("out", "out", [{"i": i, "pad": "x" * 2000} for i in range(40)])
    sample.take("out", "out", [{"i": i, "pad": "x" * 2000} for i in range(40, 80)])
    sample.take("big", "out", [b"y" * (SAMPLE_BYTES + 1), object()])
    sample.take("huge", "out", [b"y" * (SAMPLE_BYTES + 1)])
    found = {(node, port): payload for node, port, payload in sample.drain()}
    kept = msgspec.msgpack.decode(found[("out", "out")])
    assert len(found[("out", "out")]) <= SAMPLE_BYTES
    assert [r["i"] for r in kept] == list(range(80 - len(kept), 80))
    assert 25 < len(kept) < SAMPLE_RECORDS
    big = msgspec.msgpack.decode(found[("big", "out")])
    assert len(big) == 1  # the object's repr; the bytes record over the bound
    assert big[0].startswith("<object object at")
    [huge] = msgspec.msgpack.decode(found[("huge", "out")])
    assert huge == f"(a record of {SAMPLE_BYTES + 6} bytes, not shown)"  # bin 32
    assert sample.drain() == []  # taken once


def waiting(store: Path | None) -> Workflow:
    """A stream that idles: its timer fires once a minute, nothing else moves."""
    wf = (
        Workflow("idle", mode="stream", parallelism=2)
        .node("tick", "source.timer", interval_ms=60_000, parallelism=1)
        .node("m", "transform.map", expr="x")
        .node("out", "sink.null")
        .connect("tick -> m")
        .connect("m -> out")
    )
    if store is not None:
        wf.checkpoint = Checkpoint(path=str(store), interval_ms=50)
    return wf


async def until_running(executor: RayExecutor, task: asyncio.Task[Any]) -> None:
    """Wait (with a deadline) till every slot's nodes report counters."""
    deadline = time.monotonic() + 60
    while "m[1]" not in executor.statistics() or "tick" not in executor.statistics():
        assert not task.done(), task.result().error
        assert time.monotonic() < deadline, "the run did not start"
        await asyncio.wait([task], timeout=0.05)


def test_an_idle_actor_killed_fails_the_run_naming_its_nodes() -> None:
    executor = FlowRuntime().executor(waiting(None), backend="ray")
    assert isinstance(executor, RayExecutor)

    async def main() -> Any:
        task = asyncio.create_task(executor.run())
        await until_running(executor, task)
        # Slot 1 waits for input that comes once a minute.
        os.kill(await executor._actors[1].ping.remote(), signal.SIGKILL)
        return await asyncio.wait_for(task, 60)

    result = asyncio.run(main())
    assert result.status == "failed"
    assert "the process running m[1], out[1] died" in (result.error or "")


def test_an_unresponsive_actor_is_taken_for_dead_and_the_run_rolls_back(
    tmp_path: Path,
) -> None:
    executor = FlowRuntime().executor(
        waiting(tmp_path / "c.db"), backend="ray", health_timeout_s=1.0
    )
    assert isinstance(executor, RayExecutor)
    events: list[Any] = []
    executor.bus.add_listener(events.append)

    async def main() -> Any:
        task = asyncio.create_task(executor.run())
        await until_running(executor, task)
        first = executor._actors
        # The source's process stops: alive to Ray, deaf to the driver.
        pid = await first[0].ping.remote()
        os.kill(pid, signal.SIGSTOP)
        try:
            deadline = time.monotonic() + 60
            while executor._actors is first:
                assert not task.done(), task.result().error
                assert time.monotonic() < deadline, "not taken for dead"
                await asyncio.wait([task], timeout=0.05)
            await until_running(executor, task)
            executor.stop()
            return await asyncio.wait_for(task, 60)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)  # if Ray has not yet

    result = asyncio.run(main())
    assert result.ok, result.error
    assert result.attempts == 2
    (rolled,) = [
        e for e in events if isinstance(e, NodeEvent) and e.name == "run.rolled_back"
    ]
    assert {"tick", "m[0]", "out[0]"} <= set(rolled.data["nodes"])
    assert "m[1]" not in rolled.data["nodes"]
    assert (
        "is taken for dead: it has not answered a health check for 1 s"
        in (rolled.data["error"])
    )


def test_a_cancel_while_the_run_rolls_back_ends_it(tmp_path: Path) -> None:
    executor = FlowRuntime().executor(waiting(tmp_path / "c.db"), backend="ray")
    assert isinstance(executor, RayExecutor)

    async def main() -> Any:
        task = asyncio.create_task(executor.run())
        await until_running(executor, task)
        first = executor._actors
        os.kill(await first[1].ping.remote(), signal.SIGKILL)
        deadline = time.monotonic() + 60
        while executor._actors is first:  # the next attempt's actors are placed
            assert not task.done(), task.result().error
            assert time.monotonic() < deadline, "no rollback"
            await asyncio.sleep(0.005)
        executor.cancel()  # before they run: it must not be lost
        return await asyncio.wait_for(task, 60)

    result = asyncio.run(main())
    assert result.status == "cancelled"
    assert result.attempts == 2


@pytest.mark.parametrize("bad", [0.0, -1.0, float("inf"), float("nan")])
def test_a_health_timeout_that_is_not_a_positive_number_is_refused(
    bad: float,
) -> None:
    with pytest.raises(RayBackendError, match=f"health_timeout_s .* got {bad}"):
        FlowRuntime().executor(waiting(None), backend="ray", health_timeout_s=bad)


async def test_a_slot_that_failed_only_because_its_receiver_went_away_says_so(
    tmp_path: Path,
) -> None:
    """Two slots in this process: the one sending to the failing one is a consequence.

    The driver reports (and counts a poison record by) the slot that is not,
    whichever of the two results reaches it first (`RayExecutor._run_slots`).
    The slots take no checkpoints (`SlotActor.assign` drops the declaration).
    """
    # More than the window holds: the sender still waits for credit when
    # the receiving slot fails on item 13 and closes its edges.
    wf = poisoned(tmp_path, "dead_letter", stop=200_000)
    graph = validate(wf, default_registry())
    workflow = msgspec.json.encode(wf)
    sending, failing = slots = [
        SlotActor(workflow, node_types(graph), i, {}) for i in range(2)
    ]
    token = b"t" * 16
    addresses = await asyncio.gather(*(s.listen(token) for s in slots))
    for s in slots:
        await s.prepare(list(addresses), token, window=2)
    results = await asyncio.gather(*(s.run() for s in slots))
    assert [r.status for r in results] == ["failed", "failed"]
    assert "send0:invert[1].in" in (results[0].error or "")
    assert "went away" in (results[0].error or "")
    assert sending.failure() == (True, None)
    assert "invert[1]" in (results[1].error or "")
    assert "item 13: CelError" in (results[1].error or "")
    assert failing.failure() == (False, ("invert[1]", 13))
