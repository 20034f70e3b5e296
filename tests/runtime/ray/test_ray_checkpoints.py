"""Checkpoints on Ray: a killed actor or driver, and the sinks end exact.

A keyed count (parallelism 2: its instances in two processes) and every
record go to exactly-once sinks: a keyed SQLite table (upserts), a keyless
one (rolled back by rowid) and a ``file.sink`` (truncated back to the
committed size). Whatever is killed mid-stream, the tables and the file
must hold what one uninterrupted local run writes: nothing lost, nothing
twice.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from typing import TYPE_CHECKING, Any

import msgspec
import pytest
import ray

from flowstream import FlowRuntime, Workflow, default_registry, node
from flowstream.core.events import NodeEvent, RunRestarted, WorkflowStarted
from flowstream.core.workflow import Checkpoint, RetryWorkflow
from flowstream.runtime.ray import RayExecutor
from tests.checkpoints import latest_epoch

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.usefixtures("ray_cluster")

KEYS = 7


class Flaky(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    marker: str  # while this file exists, record ``at`` fails (once: it goes)
    at: int


@node("raytest.flaky", config=Flaky)
def flaky(x: dict[str, int], *, config: Flaky) -> dict[str, int]:
    if x["id"] == config.at and os.path.exists(config.marker):
        os.unlink(config.marker)
        msg = f"record {x['id']} hit a flaky node"
        raise RuntimeError(msg)
    return x


def counts(
    out: Path,
    n: int,
    *,
    store: Path | None,
    interval_ms: float,
    keyed: int = 2,
    flaky: Flaky | None = None,
) -> Workflow:
    """``n`` records (10,000 a second), counted per key on ``keyed`` instances.

    With ``flaky``, the records pass a `flaky` node first (it changes none).
    """
    db = out / "t.db"
    wf = (
        Workflow("counts", mode="stream", parallelism=2)
        .node("src", "source.range", stop=n, parallelism=1)
        # Paced, so that a kill lands mid-stream on a loaded machine too.
        .node(
            "pace",
            "transform.throttle",
            rate=1000,
            per_ms=100,
            burst=1024,
            parallelism=1,
        )
        .node("rec", "transform.map", expr=f"{{'id': x, 'k': x % {KEYS}}}")
        .node(
            "per_key",
            "transform.scan",
            op="count",
            key="x.k",
            value="x",
            parallelism=keyed,
        )
        # One writer each (a keyless table rolls back by rowid).
        .node("agg", "sqlite.sink", path=str(db), table="agg", key="key", parallelism=1)
        .node("rows", "sqlite.sink", path=str(db), table="rows", parallelism=1)
        .node("lines", "file.sink", path=str(out / "rows.jsonl"), parallelism=1)
        .connect("src -> pace")
        .connect("pace -> rec")
        .connect("per_key -> agg")
    )
    records = "rec"
    if flaky is not None:
        wf.node("check", "raytest.flaky", **msgspec.structs.asdict(flaky))
        wf.connect("rec -> check")
        records = "check"
    for consumer in ("per_key", "rows", "lines"):
        wf.connect(f"{records} -> {consumer}")
    if store is not None:
        wf.checkpoint = Checkpoint(path=str(store), interval_ms=interval_ms)
    return wf


def contents(out: Path) -> dict[str, Any]:
    """What the sinks hold, in an order that does not depend on the run."""
    with closing(sqlite3.connect(out / "t.db")) as conn:
        agg = sorted(conn.execute("select key, value from agg"))
        rows = sorted(conn.execute("select id, k from rows"))
    lines = sorted(
        json.dumps(json.loads(line), sort_keys=True)
        for line in (out / "rows.jsonl").read_text().splitlines()
    )
    return {"agg": agg, "rows": rows, "lines": lines}


@pytest.fixture(scope="module")
def expected(tmp_path_factory: pytest.TempPathFactory) -> dict[int, dict[str, Any]]:
    """One uninterrupted local run's sinks, by the number of records."""
    found = {}
    for n in {N_ACTOR, N_DRIVER}:
        out = tmp_path_factory.mktemp(f"local{n}")
        result = FlowRuntime().run(counts(out, n, store=None, interval_ms=0))
        assert result.ok, result.error
        found[n] = contents(out)
        assert len(found[n]["rows"]) == n
        assert len(found[n]["lines"]) == n
        assert [c for _, c in found[n]["agg"]] == [
            n // KEYS + (k < n % KEYS) for k in range(KEYS)
        ]
    return found


N_ACTOR = N_DRIVER = 20_000


@pytest.mark.parametrize("seed", [1, 2])
def test_a_killed_actor_rolls_every_slot_back_and_the_sinks_stay_exact(
    tmp_path: Path, seed: int, expected: dict[int, dict[str, Any]]
) -> None:
    rng = random.Random(seed)
    victim = seed % 2  # slot 0: the source and the sinks; slot 1: count[1]
    after = rng.randint(1, 3)  # killed once this epoch is committed
    store = tmp_path / "ckpt.db"
    wf = counts(tmp_path, N_ACTOR, store=store, interval_ms=50)
    executor = FlowRuntime().executor(wf, backend="ray")
    assert isinstance(executor, RayExecutor)
    events: list[Any] = []
    executor.bus.add_listener(events.append)

    async def main() -> Any:
        task = asyncio.create_task(executor.run())
        deadline = time.monotonic() + 60
        while latest_epoch(store)[0] < after:
            assert not task.done(), task.result().error
            assert time.monotonic() < deadline, "no epoch committed"
            await asyncio.wait([task], timeout=0.01)
        # Mid-stream: the source had not reached its end at the last commit.
        assert latest_epoch(store)[1]["src"]["offset"] < N_ACTOR
        ray.kill(executor._actors[victim])
        return await task

    result = asyncio.run(main())
    assert result.ok, result.error
    assert result.attempts == 2
    (rolled,) = [
        e for e in events if isinstance(e, NodeEvent) and e.name == "run.rolled_back"
    ]
    assert rolled.data["epoch"] >= after
    assert "killed by `ray.kill`" in rolled.data["error"]
    assert contents(tmp_path) == expected[N_ACTOR]


def test_a_killed_driver_resumes_from_the_store_with_exact_counts(
    tmp_path: Path, expected: dict[int, dict[str, Any]]
) -> None:
    store = tmp_path / "ckpt.db"
    wf = counts(tmp_path, N_DRIVER, store=store, interval_ms=50)
    path = tmp_path / "counts.json"
    path.write_bytes(msgspec.json.encode(wf))
    address = ray.get_runtime_context().gcs_address
    args = [
        sys.executable,
        "-m",
        "flowstream",
        "run",
        str(path),
        "--backend",
        "ray",
        "--address",
        address,
        "--no-progress",
    ]
    first = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while latest_epoch(store)[0] < 1:
        assert first.poll() is None, first.communicate()
        assert time.monotonic() < deadline, "no epoch committed"
        time.sleep(0.01)  # polling the store for a condition, with a deadline
    os.kill(first.pid, signal.SIGKILL)
    first.communicate(timeout=30)
    epoch, killed_at = latest_epoch(store)
    assert killed_at["src"]["offset"] < N_DRIVER  # mid-stream
    again = subprocess.run(
        args, capture_output=True, text=True, timeout=120, check=False
    )
    assert again.returncode == 0, again.stderr
    last, states = latest_epoch(store)
    assert last > epoch
    # Keyed state under the expanded ids the local backend uses, each key
    # in one instance, every record counted once.
    accs = [states[f"per_key[{i}]"]["accs"] for i in (0, 1)]
    assert accs[0]
    assert accs[1]
    assert not set(accs[0]) & set(accs[1])
    assert sum(accs[0].values()) + sum(accs[1].values()) == N_DRIVER
    assert contents(tmp_path) == expected[N_DRIVER]
    listing = subprocess.run(
        [sys.executable, "-m", "flowstream", "checkpoints", str(store)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "completed" in listing
    assert f"src: offset={N_DRIVER}" in listing


def test_rollbacks_are_bounded_by_max_restarts(tmp_path: Path) -> None:
    store = tmp_path / "ckpt.db"
    wf = counts(tmp_path, N_ACTOR, store=store, interval_ms=50)
    assert wf.checkpoint is not None
    wf.checkpoint = msgspec.structs.replace(wf.checkpoint, max_restarts=1)
    executor = FlowRuntime().executor(wf, backend="ray")
    assert isinstance(executor, RayExecutor)
    events: list[Any] = []
    executor.bus.add_listener(events.append)

    async def main() -> Any:
        task = asyncio.create_task(executor.run())
        deadline = time.monotonic() + 60
        for _ in range(2):  # kill each attempt's slot 1 once it committed
            seen = latest_epoch(store)[0]
            actors = executor._actors
            while latest_epoch(store)[0] <= seen or executor._actors is actors:
                assert not task.done(), task.result().error
                assert time.monotonic() < deadline, "no epoch committed"
                await asyncio.wait([task], timeout=0.01)
            ray.kill(executor._actors[1])
        return await task

    result = asyncio.run(main())
    assert result.status == "failed"
    assert result.attempts == 2
    assert "per_key[1]" in (result.error or "")
    assert "died" in (result.error or "")
    rolled = [
        e for e in events if isinstance(e, NodeEvent) and e.name == "run.rolled_back"
    ]
    assert [e.data["restart"] for e in rolled] == [1]
    assert rolled[0].data["max_restarts"] == 1


def test_a_stopped_run_resumes_on_ray_at_another_parallelism(
    tmp_path: Path, expected: dict[int, dict[str, Any]]
) -> None:
    store = tmp_path / "ckpt.db"
    first = FlowRuntime().executor(
        counts(tmp_path, N_ACTOR, store=store, interval_ms=50), backend="ray"
    )

    async def stop_mid_stream() -> Any:
        task = asyncio.create_task(first.run())
        deadline = time.monotonic() + 60
        while latest_epoch(store)[0] < 1:
            assert not task.done(), task.result().error
            assert time.monotonic() < deadline, "no epoch committed"
            await asyncio.wait([task], timeout=0.01)
        first.stop()
        return await task

    stopped = asyncio.run(stop_mid_stream())
    assert stopped.ok, stopped.error
    assert latest_epoch(store)[1]["src"]["offset"] < N_ACTOR - 1  # mid-stream
    # The same run at parallelism 3: the count's state moves by key group.
    again = FlowRuntime().executor(
        counts(tmp_path, N_ACTOR, store=store, interval_ms=50, keyed=3),
        backend="ray",
    )
    events: list[Any] = []
    again.bus.add_listener(events.append)
    result = asyncio.run(again.run())
    assert result.ok, result.error
    (moved,) = [
        e
        for e in events
        if isinstance(e, NodeEvent) and e.name == "state.redistributed"
    ]
    assert (moved.node_id, moved.data["from"], moved.data["to"]) == ("per_key", 2, 3)
    states = latest_epoch(store)[1]
    accs = [states[f"per_key[{i}]"]["accs"] for i in range(3)]
    assert sum(sum(a.values()) for a in accs) == N_ACTOR
    assert contents(tmp_path) == expected[N_ACTOR]


def test_retry_workflow_resumes_a_failed_attempt_from_the_last_epoch(
    tmp_path: Path, expected: dict[int, dict[str, Any]]
) -> None:
    store = tmp_path / "ckpt.db"
    marker = tmp_path / "flaky"
    marker.touch()
    wf = counts(
        tmp_path,
        N_ACTOR,
        store=store,
        interval_ms=50,
        flaky=Flaky(marker=str(marker), at=N_ACTOR // 2),
    )
    wf.error_handling = RetryWorkflow(max_attempts=2)
    registry = default_registry()
    registry.register(flaky)
    executor = FlowRuntime(registry).executor(wf, backend="ray")
    events: list[Any] = []
    executor.bus.add_listener(events.append)
    result = asyncio.run(executor.run())
    assert result.ok, result.error
    assert result.attempts == 2
    (restarted,) = [e for e in events if isinstance(e, RunRestarted)]
    assert "record 10000 hit a flaky node" in restarted.reason
    assert restarted.checkpointed
    # Mid-stream: the second attempt resumed from an epoch, not from scratch.
    assert restarted.from_epoch is not None
    assert restarted.from_epoch >= 1
    started = [e.run_id for e in events if isinstance(e, WorkflowStarted)]
    assert len(set(started)) == 2  # each attempt a run of its own
    assert restarted.run_id == started[0]
    assert not [
        e for e in events if isinstance(e, NodeEvent) and e.name == "run.rolled_back"
    ]
    assert contents(tmp_path) == expected[N_ACTOR]


def test_retry_workflow_with_checkpoints_rolls_back_a_killed_actor(
    tmp_path: Path, expected: dict[int, dict[str, Any]]
) -> None:
    store = tmp_path / "ckpt.db"
    wf = counts(tmp_path, N_ACTOR, store=store, interval_ms=50)
    wf.error_handling = RetryWorkflow(max_attempts=2)
    executor = FlowRuntime().executor(wf, backend="ray")
    assert isinstance(executor, RayExecutor)
    events: list[Any] = []
    executor.bus.add_listener(events.append)

    async def main() -> Any:
        task = asyncio.create_task(executor.run())
        deadline = time.monotonic() + 60
        while latest_epoch(store)[0] < 2:
            assert not task.done(), task.result().error
            assert time.monotonic() < deadline, "no epoch committed"
            await asyncio.wait([task], timeout=0.01)
        ray.kill(executor._actors[1])
        return await task

    result = asyncio.run(main())
    assert result.ok, result.error
    assert result.attempts == 2
    # A process that died is rolled back, not retried as a failed run.
    (rolled,) = [
        e for e in events if isinstance(e, NodeEvent) and e.name == "run.rolled_back"
    ]
    assert rolled.data["epoch"] >= 2
    assert not [e for e in events if isinstance(e, RunRestarted)]
    assert contents(tmp_path) == expected[N_ACTOR]
