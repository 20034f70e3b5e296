"""Kill -9 at each named step of the checkpoint protocol, then recover exactly.

Each case runs a checkpointed stream pipeline in a child process armed with
``FLOWSTREAM_FAULT=<point>@<epoch>`` (`flowstream.runtime.checkpointing.faults`), so the
process SIGKILLs itself at that step of that epoch. The store must then hold
the last epoch that committed, consistent across nodes, and a rerun must
finish with every row written once and every keyed count exact.

``before_commit`` is the SQLite store killed mid-write: its transaction holds
the new epoch (and has deleted the previous one) but never commits, so
recovery must roll it back and pick the last committed epoch.
``sink_barrier`` is what the built-in sinks do for an epoch (the file sink
fsyncs and notes its length, the keyless SQLite sink its rowid): killed
there, recovery truncates and deletes what they wrote past epoch e-1.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from contextlib import closing
from typing import TYPE_CHECKING, Any

import pytest

from flowstream import Workflow
from flowstream.core.workflow import (
    Checkpoint,
    RetryPolicy,
    read_workflow,
    write_workflow,
)
from flowstream.runtime.checkpointing import workflow_key
from flowstream.runtime.checkpointing.faults import POINTS
from tests.checkpoints import latest_epoch

if TYPE_CHECKING:
    from pathlib import Path

N = 20_000  # about three times what the source emits by the fault epoch
KEYS = 7
FAULT_EPOCH = 2
INTERVAL_MS = 5.0

BEFORE_COMMIT = ("barrier_emitted", "snapshot", "sink_barrier", "before_commit")
"""Points where epoch FAULT_EPOCH is not committed yet (the others: it is)."""

RUNNER = """
import sys
from collections.abc import AsyncIterator
from typing import Any

from flowstream import FlowRuntime, NodeContext, default_registry, node
from flowstream.core.workflow import read_workflow

workflow, log, fuse = sys.argv[1:]


@node("test.commit_log")
async def commit_log(
    inp: AsyncIterator[Any], *, ctx: NodeContext
) -> AsyncIterator[Any]:
    # A sink with a commit hook: appends each epoch it is told is committed.
    def committed(epoch: int) -> None:
        with open(log, "a") as f:
            f.write(f"{epoch}\\n")

    ctx.on_commit(committed)
    async for _ in inp:
        pass
    if False:
        yield


wf = read_workflow(workflow)
registry = default_registry()
registry.register(commit_log)
# Unbuffered channels: the source cannot run far ahead of the sinks, so
# epochs keep coming while it emits.
result = FlowRuntime(registry).run(wf, fuse=fuse == "fused", capacity=0)
print(result.status, result.stats["seq"].items_out, result.error)
sys.exit(0 if result.ok else 1)
"""


def pipeline(store: Path, db: Path) -> Workflow:
    # The commit log comes first, so its hook is the first one called: the
    # hook that ``sink_commit`` follows. The file sink and the keyless
    # SQLite sink have barrier hooks: ``sink_barrier`` follows the first.
    wf = (
        Workflow("faults", mode="stream")
        .node("seq", "source.range", stop=N)
        .node("log", "test.commit_log")
        .node("record", "transform.map", expr=f"{{'key': x % {KEYS}, 'seq': x}}")
        .node("rows", "sqlite.sink", path=str(db), table="records", key=["key", "seq"])
        .node("plain", "sqlite.sink", path=str(db), table="plain")
        .node("lines", "file.sink", path=str(db.with_suffix(".jsonl")))
        .node("count", "transform.scan", op="count", key="x.key")
        .node("counts", "sqlite.sink", path=str(db), table="counts", key="key")
        .connect("seq -> log")
        .connect("seq -> record")
        .connect("record -> rows")
        .connect("record -> plain")
        .connect("record -> lines")
        .connect("record -> count")
        .connect("count -> counts")
    )
    wf.checkpoint = Checkpoint(path=str(store), interval_ms=INTERVAL_MS)
    return wf


def run_child(
    workflow: Path, log: Path, *, fused: bool, fault: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "FLOWSTREAM_FAULT"}
    if fault is not None:
        env["FLOWSTREAM_FAULT"] = fault
    mode = "fused" if fused else "unfused"
    script = workflow.with_name("runner.py")
    script.write_text(RUNNER)
    args = [sys.executable, str(script), str(workflow), str(log), mode]
    return subprocess.run(args, capture_output=True, text=True, env=env, timeout=120)


def committed(store: Path, workflow: Path) -> tuple[int, dict[str, Any]]:
    return latest_epoch(store, workflow_key(read_workflow(workflow)))


def integrity(db: Path) -> str:
    with closing(sqlite3.connect(db)) as conn:
        return str(conn.execute("pragma integrity_check").fetchone()[0])


def true_counts(upto: int) -> dict[int, int]:
    """Each key's count among the items ``0 .. upto-1``."""
    return {k: c for k in range(KEYS) if (c := len(range(k, upto, KEYS)))}


@pytest.mark.parametrize("fused", [False, True], ids=["unfused", "fused"])
@pytest.mark.parametrize("point", POINTS)
def test_a_kill_at_each_fault_point_recovers_the_last_committed_epoch(
    tmp_path: Path, point: str, fused: bool
) -> None:
    # At ``before_commit`` the store is killed mid-write: recovery must pick
    # the last committed epoch, e-1, not the half-written e.
    store, db, log = tmp_path / "ckpt.db", tmp_path / "out.db", tmp_path / "log"
    workflow = tmp_path / "wf.json"
    write_workflow(pipeline(store, db), workflow)

    killed = run_child(workflow, log, fused=fused, fault=f"{point}@{FAULT_EPOCH}")
    # A run that ended before the fault epoch was not killed: N is too small.
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr

    expected = FAULT_EPOCH - 1 if point in BEFORE_COMMIT else FAULT_EPOCH
    assert integrity(store) == "ok"
    with closing(sqlite3.connect(store)) as conn:
        kept = conn.execute("select epoch from epochs").fetchall()
    assert kept == [(expected,)]  # only the newest committed epoch is kept
    epoch, states = committed(store, workflow)
    assert epoch == expected
    # Never a mix: the source's offset, the scan's counts and what each sink
    # had written are all of one cut of the stream.
    assert set(states) == {"seq", "count", "rows", "counts", "plain", "lines"}
    offset = states["seq"]["offset"]
    assert 0 < offset < N
    assert states["count"]["accs"] == true_counts(offset)
    assert states["rows"]["rows"] == states["counts"]["rows"] == offset
    assert states["plain"]["rows"] == states["lines"]["records"] == offset
    # The sinks were told of each committed epoch in order; the first hook
    # runs only at ``sink_commit``, after ``after_commit``.
    told = FAULT_EPOCH if point == "sink_commit" else FAULT_EPOCH - 1
    assert log.read_text().split() == [str(e) for e in range(1, told + 1)]

    done = run_child(workflow, log, fused=fused)
    assert done.returncode == 0, done.stdout + done.stderr
    status, emitted, _ = done.stdout.split(maxsplit=2)
    assert status == "completed"
    assert int(emitted) == N - offset  # resumed at the offset, not from 0
    with closing(sqlite3.connect(db)) as conn:
        rows, distinct = conn.execute(
            "select count(*), count(distinct key || ':' || seq) from records"
        ).fetchone()
        wrong = conn.execute(
            f"select count(*) from records where key != seq % {KEYS}"
        ).fetchone()[0]
        counts = dict(conn.execute("select key, value from counts").fetchall())
        plain = [seq for (seq,) in conn.execute("select seq from plain order by rowid")]
    assert (rows, distinct, wrong) == (N, N, 0)
    assert counts == true_counts(N)
    # The sinks with barrier hooks rolled back what the lost epoch wrote.
    assert plain == list(range(N))
    lines = db.with_suffix(".jsonl").read_text().splitlines()
    assert [json.loads(line)["seq"] for line in lines] == list(range(N))
    assert integrity(db) == integrity(store) == "ok"


def test_the_run_key_survives_writing_the_workflow_to_a_file(tmp_path: Path) -> None:
    # A run restarted from the file of a workflow built in Python (or the
    # reverse) is the same run: equal content, equal key. An int given for a
    # float field (here a retry delay) is read back as a float, which must
    # not change the key.
    wf = pipeline(tmp_path / "ckpt.db", tmp_path / "out.db")
    wf.node("again", "transform.map", expr="x", retry=RetryPolicy(delay_ms=50))
    wf.connect("seq -> again")
    write_workflow(wf, tmp_path / "wf.json")
    assert read_workflow(tmp_path / "wf.json") == wf
    assert workflow_key(read_workflow(tmp_path / "wf.json")) == workflow_key(wf)
