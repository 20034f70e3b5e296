"""A second run of a completed checkpointed run does nothing; ``fresh`` starts over.

Issue #11, defect 5: rerunning a stream workflow whose checkpointed run had
completed started from scratch against the same store and appended every
record to the file and keyless SQLite sinks a second time. Both modes now
treat a completed run in the store as done, and say so.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from typing import TYPE_CHECKING, Literal

import pytest

from flowstream import FlowRuntime, Workflow
from flowstream.core.workflow import Checkpoint
from flowstream.runtime.checkpointing import CheckpointStore, workflow_key

if TYPE_CHECKING:
    from pathlib import Path

N = 500


def pipeline(tmp_path: Path, mode: Literal["dag", "stream"]) -> Workflow:
    wf = (
        Workflow("rerun", mode=mode)
        .node("seq", "source.range", stop=N)
        .node("rec", "transform.map", expr="{'n': x}")
        .node("file", "file.sink", path=str(tmp_path / "out.jsonl"))
        .node("rows", "sqlite.sink", path=str(tmp_path / "out.db"), table="rows")
        .connect("seq -> rec")
        .connect("rec -> file")
        .connect("rec -> rows")
    )
    wf.checkpoint = Checkpoint(path=str(tmp_path / "ckpt.db"), interval_ms=5)
    return wf


def written(tmp_path: Path) -> tuple[list[int], list[int]]:
    """What the file and the table hold, in order."""
    lines = (tmp_path / "out.jsonl").read_text().splitlines()
    in_file = [json.loads(line)["n"] for line in lines]
    with closing(sqlite3.connect(tmp_path / "out.db")) as conn:
        in_table = [n for (n,) in conn.execute("select n from rows order by rowid")]
    return in_file, in_table


@pytest.mark.parametrize("mode", ["stream", "dag"])
async def test_a_rerun_of_a_completed_run_writes_nothing_and_says_so(
    tmp_path: Path, mode: Literal["dag", "stream"]
) -> None:
    wf = pipeline(tmp_path, mode)
    first = await FlowRuntime().arun(wf)
    assert first.ok, first.error
    assert first.skipped is None
    assert written(tmp_path) == (list(range(N)), list(range(N)))

    again = await FlowRuntime().arun(pipeline(tmp_path, mode))
    assert again.ok
    assert again.skipped is not None
    assert again.skipped.startswith("already completed")
    assert "--fresh" in again.skipped
    if mode == "stream":  # the final epoch is named
        async with CheckpointStore(tmp_path / "ckpt.db") as store:
            [run] = await store.runs()
        assert run.epoch is not None
        assert f"at epoch {run.epoch} on " in again.skipped
    assert again.stats == {}  # no node ran
    assert written(tmp_path) == (list(range(N)), list(range(N)))  # not twice


@pytest.mark.parametrize("mode", ["stream", "dag"])
async def test_fresh_starts_a_new_run_after_the_old_output(
    tmp_path: Path, mode: Literal["dag", "stream"]
) -> None:
    # Starting over is deliberate: the run happens again, the store's old
    # run is forgotten, and the sinks' earlier output stays (the new run's
    # records follow it, once each).
    await FlowRuntime().arun(pipeline(tmp_path, mode))
    async with CheckpointStore(tmp_path / "ckpt.db") as store:
        [before] = await store.runs()

    again = await FlowRuntime().arun(pipeline(tmp_path, mode), fresh=True)
    assert again.ok, again.error
    assert again.skipped is None
    assert again.stats["seq"].items_out == N
    twice = list(range(N)) * 2
    assert written(tmp_path) == (twice, twice)
    async with CheckpointStore(tmp_path / "ckpt.db") as store:
        [after] = await store.runs()
    assert after.run_key == before.run_key == workflow_key(pipeline(tmp_path, mode))
    assert after.status == "completed"
    assert after.attempts == 1  # a new lineage, not one more attempt
    assert after.started > before.started

    # And the fresh run, completed, is not run a third time.
    third = await FlowRuntime().arun(pipeline(tmp_path, mode))
    assert third.skipped is not None
    assert written(tmp_path) == (twice, twice)


async def test_an_unfinished_run_still_resumes(tmp_path: Path) -> None:
    # Only a completed run is skipped: a stopped (drained) one resumes.
    wf = pipeline(tmp_path, "stream")
    key = workflow_key(wf)
    async with CheckpointStore(tmp_path / "ckpt.db") as store:
        await store.begin(key, wf.name)
        await store.finish(key, "stopped")
    result = await FlowRuntime().arun(wf)
    assert result.ok, result.error
    assert result.skipped is None
    assert result.stats["seq"].items_out == N
