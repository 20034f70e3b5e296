"""Checkpointed DAG runs on Ray: completed one-shot nodes are not called again.

The one-shot nodes below log every call to a side file (they run in Ray's
worker processes), so a test sees which nodes a resumed run called; the
driver ships these test-defined node types to the actors with the workflow.
The store is the driver's: what it records as completed is never called
again, and the outputs are the local backend's.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import msgspec
import pytest
import ray
from click.testing import CliRunner

from flowstream import FlowRuntime, Workflow, default_registry, node
from flowstream.cli import cli
from flowstream.core.events import RunRestarted, WorkflowStarted
from flowstream.core.workflow import Checkpoint, RetryWorkflow

from .test_ray_backend import PARALLEL_YAML, canon

pytestmark = pytest.mark.usefixtures("ray_cluster")


class Step(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    log: str
    broken: str  # a file naming nodes that fail once (and strike their name)
    sleep_s: float = 0.0


def _called(config: Step, node_id: str) -> None:
    with open(config.log, "a") as log:
        log.write(f"{node_id}\n")
    broken = Path(config.broken)
    names = broken.read_text().split() if broken.exists() else []
    if node_id in names:
        names.remove(node_id)
        broken.write_text(" ".join(names))
        msg = f"{node_id} is broken"
        raise RuntimeError(msg)
    time.sleep(config.sleep_s)


@node("raydag.start", config=Step)
def start(*, config: Step, ctx: Any) -> int:
    _called(config, ctx.node_id)
    return 0


@node("raydag.step", config=Step)
def step(x: int, *, config: Step, ctx: Any) -> int:
    _called(config, ctx.node_id)
    return x + 1


def runtime() -> FlowRuntime:
    registry = default_registry()
    registry.register_all([start, step])
    return FlowRuntime(registry)


def chain(
    tmp: Path, n: int, *, split: int | None = None, sleep_s: float = 0.0
) -> Workflow:
    """n0 -> n1 -> ... -> n{n-1}; node ``split`` has two instances."""
    cfg: dict[str, Any] = {
        "log": str(tmp / "calls.log"),
        "broken": str(tmp / "broken"),
        "sleep_s": sleep_s,
    }
    wf = Workflow("chain", mode="dag").node("n0", "raydag.start", **cfg)
    for i in range(1, n):
        wf.node(f"n{i}", "raydag.step", **cfg).connect(f"n{i - 1}", f"n{i}")
    if split is not None:
        wf.nodes[split].parallelism = 2
    wf.checkpoint = Checkpoint(path=str(tmp / "ckpt.db"), interval_ms=0)
    return wf


def calls(tmp: Path) -> list[str]:
    """The nodes called since the last look, in order."""
    log = tmp / "calls.log"
    found = log.read_text().split() if log.exists() else []
    log.unlink(missing_ok=True)
    return found


def outputs(text: str) -> list[bytes]:
    return canon(json.loads(text)["outputs"]["out"]["out"])


def recorded(store: Path) -> set[str]:
    """The nodes the store holds as completed."""
    with closing(sqlite3.connect(store)) as conn:
        return {n for (n,) in conn.execute("select node_id from node_outputs")}


@pytest.mark.parametrize("split", [None, 3])
def test_a_failed_dag_run_resumes_without_calling_completed_nodes(
    tmp_path: Path, split: int | None
) -> None:
    # The same two runs on each backend: n6 fails once, then the run is
    # run again with the same store.
    seen = {}
    for backend in ("local", "ray"):
        tmp = tmp_path / backend
        tmp.mkdir()
        (tmp / "broken").write_text("n6")
        first = runtime().run(chain(tmp, 10, split=split), backend=backend)
        assert first.status == "failed"
        assert "n6 is broken" in (first.error or "")
        before = calls(tmp)
        done = recorded(tmp / "ckpt.db")
        again = runtime().run(chain(tmp, 10, split=split), backend=backend)
        assert again.ok, again.error
        after = calls(tmp)
        assert not done & set(after)  # nothing recorded was called again
        every = {f"n{i}" for i in range(10) if i != split}
        assert every <= set(before) | set(after)  # every node ran
        seen[backend] = (before, done, after, again.outputs)
    local, on_ray = seen["local"], seen["ray"]
    assert on_ray[3] == local[3] == {"n9": {"out": [9]}}
    # The same nodes called, recorded, and called again on resume.
    assert on_ray[:3] == local[:3]
    if split is None:
        assert on_ray[2] == ["n6", "n7", "n8", "n9"]
    else:  # a parallel node's instances are computed again, and what follows
        assert on_ray[1] == {"n0", "n1", "n2"}
        assert on_ray[2] == ["n3[0]", "n4", "n5", "n6", "n7", "n8", "n9"]


def test_a_completed_dag_run_on_ray_is_not_run_again_unless_fresh(
    tmp_path: Path,
) -> None:
    first = runtime().run(chain(tmp_path, 4), backend="ray")
    assert first.ok, first.error
    assert calls(tmp_path) == ["n0", "n1", "n2", "n3"]
    again = runtime().run(chain(tmp_path, 4), backend="ray")
    assert again.ok
    assert again.skipped is not None
    assert again.skipped.startswith("already completed")
    assert calls(tmp_path) == []
    fresh = runtime().run(chain(tmp_path, 4), backend="ray", fresh=True)
    assert fresh.ok, fresh.error
    assert fresh.skipped is None
    assert fresh.outputs == {"n3": {"out": [3]}}
    assert calls(tmp_path) == ["n0", "n1", "n2", "n3"]


def test_retry_workflow_in_a_dag_run_calls_each_completed_node_once(
    tmp_path: Path,
) -> None:
    (tmp_path / "broken").write_text("n6")
    wf = chain(tmp_path, 10, split=3)
    wf.error_handling = RetryWorkflow(max_attempts=2)
    executor = runtime().executor(wf, backend="ray")
    events: list[Any] = []
    executor.bus.add_listener(events.append)
    result = asyncio.run(executor.run())
    assert result.ok, result.error
    assert result.attempts == 2
    assert result.outputs == {"n9": {"out": [9]}}
    (restarted,) = [e for e in events if isinstance(e, RunRestarted)]
    assert restarted.checkpointed
    assert restarted.from_epoch is None  # a DAG run has no epochs
    assert "n6 is broken" in restarted.reason
    started = [e.run_id for e in events if isinstance(e, WorkflowStarted)]
    assert len(set(started)) == 2  # each attempt a run of its own
    called = calls(tmp_path)
    # Before the split, the first attempt's completions were handed on.
    for n in ("n0", "n1", "n2"):
        assert called.count(n) == 1, called
    assert called.count("n6") == 2  # failed, then called again


RUNNER = """
import json, sys
from pathlib import Path
from tests.runtime.ray.test_ray_dag_checkpoints import chain, runtime

tmp, address = Path(sys.argv[1]), sys.argv[2]
result = runtime().run(
    chain(tmp, 40, sleep_s=0.05), backend="ray", ray_address=address
)
print(json.dumps({"status": result.status, "outputs": result.outputs}))
"""


def test_a_killed_dag_driver_resumes_without_calling_recorded_nodes(
    tmp_path: Path,
) -> None:
    script = tmp_path / "runner.py"
    script.write_text(RUNNER)
    address = ray.get_runtime_context().gcs_address
    args = [sys.executable, str(script), str(tmp_path), address]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    log = tmp_path / "calls.log"
    first = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    deadline = time.monotonic() + 60
    while not log.exists() or len(log.read_text().split()) < 15:
        assert first.poll() is None, first.communicate()
        assert time.monotonic() < deadline, "the run did not get going"
        time.sleep(0.01)  # polling the side file for a condition, with a deadline
    os.kill(first.pid, signal.SIGKILL)
    first.communicate(timeout=30)
    done = recorded(tmp_path / "ckpt.db")
    assert "n0" in done
    assert len(done) < 40  # killed mid-run
    before = calls(tmp_path)
    again = subprocess.run(
        args, capture_output=True, text=True, timeout=120, check=False, env=env
    )
    assert again.returncode == 0, again.stderr
    result = json.loads(again.stdout.splitlines()[-1])
    assert result == {"status": "completed", "outputs": {"n39": {"out": [39]}}}
    after = calls(tmp_path)
    assert not done & set(after)  # what the store held was not called again
    assert set(before) | set(after) == {f"n{i}" for i in range(40)}


def test_the_cli_runs_a_parallel_dag_with_a_store_on_ray_once(tmp_path: Path) -> None:
    # Stream nodes only (nothing one-shot to record): the store still says
    # the run completed, and a second run writes nothing.
    path = tmp_path / "counts.yaml"
    path.write_text(PARALLEL_YAML)
    local = CliRunner().invoke(cli, ["run", str(path), "--json"])
    assert local.exit_code == 0, local.output
    args = ["run", str(path), "--json", "--backend", "ray"]
    args += ["--checkpoint", str(tmp_path / "ckpt.db")]
    first = CliRunner().invoke(cli, args)
    assert first.exit_code == 0, first.output
    assert outputs(first.stdout) == outputs(local.stdout)
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 0, again.output
    assert "already completed" in again.output
