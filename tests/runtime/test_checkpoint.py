from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

from flowstream import FlowRuntime, Workflow, default_registry, node
from flowstream.core.workflow import Checkpoint
from flowstream.runtime.checkpointing import CheckpointStore, workflow_key

if TYPE_CHECKING:
    from pathlib import Path

CALLS: list[str] = []
FAIL_AT: set[str] = set()


@node("ck.start")
def start() -> int:
    return 0


@node("ck.step")
def step(x: int, *, ctx: Any) -> int:
    CALLS.append(ctx.node_id)
    if ctx.node_id in FAIL_AT:
        msg = f"{ctx.node_id} is broken"
        raise RuntimeError(msg)
    return x + 1


def chain(n: int, store: Path | None = None) -> Workflow:
    wf = Workflow("chain").node("n0", "ck.start")
    for i in range(1, n):
        wf.node(f"n{i}", "ck.step").connect(f"n{i - 1}", f"n{i}")
    if store is not None:
        wf.checkpoint = Checkpoint(path=str(store), interval_ms=0)
    return wf


def runtime() -> FlowRuntime:
    registry = default_registry(entry_points=False)
    registry.register_all([start, step])
    return FlowRuntime(registry)


async def test_a_failed_run_resumes_without_redoing_completed_nodes(
    tmp_path: Path,
) -> None:
    store = tmp_path / "ckpt.db"
    CALLS.clear()
    FAIL_AT.clear()
    FAIL_AT.add("n6")
    first = await runtime().arun(chain(10, store))
    assert first.status == "failed"
    assert CALLS == [f"n{i}" for i in range(1, 7)]

    CALLS.clear()
    FAIL_AT.clear()  # the fix is deployed; run the same workflow again
    second = await runtime().arun(chain(10, store))
    assert second.ok, second.error
    assert second.outputs == {"n9": {"out": [9]}}
    assert CALLS == [f"n{i}" for i in range(6, 10)]  # n1..n5 were not redone


async def test_a_completed_run_is_not_run_again_unless_fresh(tmp_path: Path) -> None:
    store = tmp_path / "ckpt.db"
    CALLS.clear()
    FAIL_AT.clear()
    await runtime().arun(chain(4, store))
    CALLS.clear()
    again = await runtime().arun(chain(4, store))
    assert again.ok
    assert again.skipped is not None
    assert CALLS == []
    fresh = await runtime().arun(chain(4, store), fresh=True)
    assert fresh.ok
    assert fresh.outputs == {"n3": {"out": [3]}}
    assert CALLS == ["n1", "n2", "n3"]


async def test_a_changed_workflow_starts_afresh(tmp_path: Path) -> None:
    store = tmp_path / "ckpt.db"
    CALLS.clear()
    FAIL_AT.clear()
    FAIL_AT.add("n3")
    await runtime().arun(chain(5, store))
    FAIL_AT.clear()
    CALLS.clear()
    changed = chain(6, store)
    result = await runtime().arun(changed)
    assert result.ok
    assert CALLS == ["n1", "n2", "n3", "n4", "n5"]
    async with CheckpointStore(store) as ckpt:
        runs = {r.run_key: r for r in await ckpt.runs()}
    assert runs[workflow_key(changed)].status == "completed"
    assert runs[workflow_key(chain(5, store))].status == "failed"


RUNNER = """
import asyncio, json, sys
from flowstream import FlowRuntime, Workflow, default_registry, node
from flowstream.core.workflow import Checkpoint

log_path, store = sys.argv[1], sys.argv[2]

@node("ck.start")
def start() -> int:
    return 0

@node("ck.slow")
async def slow(x: int, *, ctx) -> int:
    with open(log_path, "a") as log:
        log.write(ctx.node_id + "\\n")
    await asyncio.sleep(0.01)
    return x + 1

wf = Workflow("killed").node("n0", "ck.start")
for i in range(1, 60):
    wf.node(f"n{i}", "ck.slow").connect(f"n{i - 1}", f"n{i}")
wf.checkpoint = Checkpoint(path=store, interval_ms=0)
registry = default_registry(entry_points=False)
registry.register_all([start, slow])
result = FlowRuntime(registry).run(wf, max_parallel=1)
print(json.dumps({"status": result.status, "outputs": result.outputs}))
"""


def test_kill_9_then_restart_loses_nothing_and_redoes_at_most_one(
    tmp_path: Path,
) -> None:
    script = tmp_path / "runner.py"
    script.write_text(RUNNER)
    log = tmp_path / "calls.log"
    store = tmp_path / "ckpt.db"
    args = [sys.executable, str(script), str(log), str(store)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if log.exists() and len(log.read_text().split()) >= 20:
                break
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
    before = log.read_text().split()
    assert 20 <= len(before) < 59, "the kill must land mid-run"

    done = subprocess.run(args, capture_output=True, text=True, timeout=60, check=True)
    result = json.loads(done.stdout)
    after = log.read_text().split()[len(before) :]
    assert result == {"status": "completed", "outputs": {"n59": {"out": [59]}}}
    # Every node ran; only the one in flight at the kill ran twice.
    assert set(before) | set(after) == {f"n{i}" for i in range(1, 60)}
    assert len(set(before) & set(after)) <= 1


async def test_a_dag_run_with_a_parallel_node_keeps_its_other_nodes_on_resume(
    tmp_path: Path,
) -> None:
    # The outputs of a parallel node's instances depend on how many there
    # are (parallelism may change between runs): they are computed again;
    # the one-shot nodes with one instance before them are not redone.
    store = tmp_path / "ckpt.db"

    def wf(par: int) -> Workflow:
        w = chain(10, store)
        w.nodes[3].parallelism = par
        return w

    CALLS.clear()
    FAIL_AT.clear()
    FAIL_AT.add("n6")
    first = await runtime().arun(wf(2))
    assert first.status == "failed"
    assert "n5" in CALLS

    CALLS.clear()
    FAIL_AT.clear()
    second = await runtime().arun(wf(3))
    assert second.ok, second.error
    assert second.outputs == {"n9": {"out": [9]}}
    assert {"n1", "n2"}.isdisjoint(CALLS)  # one-shot calls before the split
    assert {"n6", "n7", "n8", "n9"} <= set(CALLS)
