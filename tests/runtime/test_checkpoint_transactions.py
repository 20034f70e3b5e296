"""How many durable transactions a checkpointed stream run costs, and why safe.

A new run's row is written with epoch 0, and the final epoch carries the
run's status when no node has a commit hook left to run: two durable
commits for a run too short for a periodic epoch, where there were four.
Killed inside either folded transaction, the run recovers as if that
transaction had never begun; killed after the folded final one, the run is
complete and a restart does nothing.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
from contextlib import closing
from typing import TYPE_CHECKING, Any

import pytest

from flowstream import (
    FlowRuntime,
    NodeContext,
    NodeRegistry,
    Workflow,
    default_registry,
    node,
)
from flowstream.core.workflow import Checkpoint, write_workflow
from flowstream.runtime.checkpointing import store as store_module, workflow_key
from tests.runtime.test_checkpoint_faults import integrity

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

N = 3_000
LONG_MS = 600_000.0  # no periodic epoch: epoch 0, then the final one (1)
FINISHED = {"failures", "node_outputs"}  # what a completed run drops


@node("test.told")
async def told(inp: AsyncIterator[Any], *, ctx: NodeContext) -> AsyncIterator[Any]:
    """A sink with a commit hook (which keeps the final epoch's commit apart)."""
    ctx.on_commit(lambda epoch: None)
    async for _ in inp:
        pass
    if False:
        yield


def pipeline(store: Path, out: Path, *, hook: bool = False) -> Workflow:
    wf = (
        Workflow("txns", mode="stream")
        .node("seq", "source.range", stop=N)
        .node("lines", "file.sink", path=str(out))
        .connect("seq -> lines")
    )
    if hook:
        wf.node("told", "test.told").connect("seq -> told")
    wf.checkpoint = Checkpoint(path=str(store), interval_ms=LONG_MS)
    return wf


@pytest.fixture
def commits(monkeypatch: pytest.MonkeyPatch) -> list[set[str]]:
    """The tables each write transaction of a run's store wrote, in order."""
    seen: list[set[str]] = []
    opened = store_module.CheckpointStore._open

    def traced(self: store_module.CheckpointStore) -> None:
        opened(self)  # the schema's transaction is not the run's
        conn = self._worker.conn
        assert conn is not None
        current: set[str] = set()

        def trace(sql: str) -> None:
            text = sql.strip().lower()
            if text == "begin immediate":
                current.clear()
            elif text == "commit" and current:  # one that wrote (is durable)
                seen.append(set(current))
            elif not text.startswith("select"):
                current.update(re.findall(r"(?:from|into|update) (\w+)", text))

        conn.set_trace_callback(trace)

    monkeypatch.setattr(store_module.CheckpointStore, "_open", traced)
    return seen


RUNNER = """
import json, sys
from flowstream import FlowRuntime, default_registry
from flowstream.core.workflow import read_workflow

result = FlowRuntime(default_registry()).run(read_workflow(sys.argv[1]))
seq = result.stats.get("seq")
print(json.dumps([result.status, seq.items_out if seq else None, result.skipped]))
sys.exit(0 if result.ok else 1)
"""


def run_child(workflow: Path, fault: str | None = None) -> Any:
    env = {k: v for k, v in os.environ.items() if k != "FLOWSTREAM_FAULT"}
    if fault is not None:
        env["FLOWSTREAM_FAULT"] = fault
    script = workflow.with_name("runner.py")
    script.write_text(RUNNER)
    args = [sys.executable, str(script), str(workflow)]
    return subprocess.run(args, capture_output=True, text=True, env=env, timeout=120)


def run_row(store: Path, wf: Workflow) -> tuple[str, int] | None:
    with closing(sqlite3.connect(store)) as conn:
        row = conn.execute(
            "select status, attempts from runs where run_key = ?", (workflow_key(wf),)
        ).fetchone()
    return None if row is None else (row[0], row[1])


def epochs(store: Path) -> list[int]:
    with closing(sqlite3.connect(store)) as conn:
        return [e for (e,) in conn.execute("select epoch from epochs order by epoch")]


def registry() -> NodeRegistry:
    reg = default_registry()  # file.sink is a connector
    reg.register(told)
    return reg


def test_a_short_stream_run_commits_twice(
    tmp_path: Path, commits: list[set[str]]
) -> None:
    store, out = tmp_path / "ckpt.db", tmp_path / "out.jsonl"
    wf = pipeline(store, out)
    result = FlowRuntime(registry()).run(wf)
    assert result.ok, result.error
    # The run's row rides on epoch 0's transaction, its end on the final one's.
    epoch = {"runs", "epochs", "epoch_log"}
    assert commits == [epoch, {*epoch, *FINISHED}]
    assert run_row(store, wf) == ("completed", 1)
    assert epochs(store) == [1]
    assert len(out.read_text().splitlines()) == N


def test_a_commit_hook_keeps_the_final_epoch_apart_from_the_finish(
    tmp_path: Path, commits: list[set[str]]
) -> None:
    store, out = tmp_path / "ckpt.db", tmp_path / "out.jsonl"
    wf = pipeline(store, out, hook=True)
    result = FlowRuntime(registry()).run(wf)
    assert result.ok, result.error
    # Epoch 0 (with the run's row), the final epoch, then the finish: a
    # crash before the hook runs must leave the run to resume, not completed.
    epoch = {"runs", "epochs", "epoch_log"}
    assert commits == [epoch, epoch, {"runs", *FINISHED}]
    assert run_row(store, wf) == ("completed", 1)


@pytest.mark.parametrize(
    ("fault", "row", "kept"),
    [
        # Killed inside epoch 0's transaction: the run's row and epoch 0
        # roll back together, as if the run had never started.
        ("before_commit@0", None, []),
        # Killed inside the final transaction: epoch 0 and the row stay;
        # the run resumes from epoch 0 (the file sink truncates back).
        ("before_commit@1", ("running", 1), [0]),
        # Killed right after it: the run is complete, nothing to redo.
        ("after_commit@1", ("completed", 1), [1]),
    ],
)
def test_a_kill_in_or_after_a_folded_transaction_recovers(
    tmp_path: Path, fault: str, row: tuple[str, int] | None, kept: list[int]
) -> None:
    store, out = tmp_path / "ckpt.db", tmp_path / "out.jsonl"
    wf = pipeline(store, out)
    workflow = tmp_path / "wf.json"
    write_workflow(wf, workflow)

    killed = run_child(workflow, fault)
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    assert integrity(store) == "ok"
    assert run_row(store, wf) == row
    assert epochs(store) == kept

    done = run_child(workflow)
    assert done.returncode == 0, done.stdout + done.stderr
    status, emitted, skipped = json.loads(done.stdout)
    assert status == "completed"
    if row == ("completed", 1):  # a completed run is not run again
        assert (emitted, skipped is not None) == (None, True)
        assert run_row(store, wf) == ("completed", 1)
    else:  # it starts over from epoch 0 (the store's, or a new run's)
        assert (emitted, skipped) == (N, None)
        assert run_row(store, wf) == ("completed", 1 if row is None else 2)
    seqs = [json.loads(line) for line in out.read_text().splitlines()]
    assert seqs == list(range(N))  # every item once, in order
