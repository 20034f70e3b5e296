"""Slot actors of a completed run are reused by the next one (`ray.pool`)."""

from __future__ import annotations

import asyncio
import os
from typing import TYPE_CHECKING

import pytest
import ray

from flowstream import FlowRuntime, Workflow, default_registry, node
from flowstream.runtime.ray import pool

if TYPE_CHECKING:
    from pathlib import Path

    from flowstream.runtime.result import RunResult

pytestmark = pytest.mark.usefixtures("ray_cluster")


@node("test.pid")
async def pid(inp: int) -> tuple[int, int]:
    return (inp, os.getpid())


def runtime() -> FlowRuntime:
    registry = default_registry(entry_points=False)
    registry.register(pid)
    return FlowRuntime(registry)


def where(stop: int = 200, fail_at: int | None = None) -> Workflow:
    """Which process each item went through, on two instances (fails at ``fail_at``)."""
    check = "x" if fail_at is None else f"100 / (x[0] - {fail_at}) * 0 + x[0]"
    return (
        Workflow("where", parallelism=2)
        .node("src", "source.range", stop=stop)
        .node("at", "test.pid")
        .node("check", "transform.map", expr=check)
        .node("out", "sink.collect", parallelism=1)
        .connect("src -> at")
        .connect("at -> check")
        .connect("check -> out")
    )


def pids(result: RunResult) -> set[int]:
    assert result.ok, result.error
    return {p for _, p in result.output("out")}


def drain() -> None:
    """Kill every idle actor (earlier tests leave some)."""
    while (a := pool.take()) is not None:
        ray.kill(a)


def test_a_second_run_takes_the_first_runs_processes_and_the_same_results() -> None:
    rt = runtime()
    first = rt.run(where(), backend="ray")
    assert pool.idle() >= 2
    second = rt.run(where(), backend="ray")
    assert pids(first) == pids(second)
    assert len(pids(second)) == 2
    assert sorted(x for x, _ in second.output("out")) == list(range(200))
    # Nothing of the first run is left in the actors: statistics start at 0.
    taken = [s.items_in for k, s in second.stats.items() if k.startswith("at[")]
    assert sum(taken) == 200


def test_the_actors_of_a_failed_run_are_not_reused() -> None:
    rt = runtime()
    drain()
    ran = pids(rt.run(where(), backend="ray"))  # their actors now wait
    failed = rt.run(where(fail_at=150), backend="ray")  # takes them
    assert failed.status == "failed"
    assert "check[" in (failed.error or "")
    assert pool.idle() == 0  # killed, not given back
    after = pids(rt.run(where(), backend="ray"))
    assert len(after) == 2
    assert not after & ran


def test_an_idle_actor_that_died_is_replaced() -> None:
    rt = runtime()
    first = pids(rt.run(where(), backend="ray"))
    drain()
    rt.run(where(), backend="ray")  # puts two back
    assert pool.idle() >= 2
    victim = pool.take()
    assert victim is not None
    ray.kill(victim)
    pool.give_back([victim])  # as if it died after it was given back
    result = rt.run(where(), backend="ray")
    assert len(pids(result)) == 2
    assert not pids(result) & first


def test_a_checkpointed_run_starts_actors_of_its_own(tmp_path: Path) -> None:
    rt = runtime()
    rt.run(where(), backend="ray")
    idle = pool.idle()
    wf = where()
    wf.mode = "stream"
    executor = rt.executor(wf, backend="ray", checkpoint=str(tmp_path / "c.db"))
    result = asyncio.run(executor.run())
    assert result.ok, result.error
    assert pool.idle() == idle  # none taken, none given back


def test_a_run_that_reuses_no_actors_takes_none_and_leaves_none() -> None:
    rt = runtime()
    drain()
    pooled = pids(rt.run(where(), backend="ray"))  # their actors now wait
    waiting = pool.idle()
    alone = pids(rt.run(where(), backend="ray", reuse_actors=False))
    assert alone.isdisjoint(pooled)  # processes of its own
    assert pool.idle() == waiting  # the idle ones still wait; its own ended
    assert pids(rt.run(where(), backend="ray")) == pooled
