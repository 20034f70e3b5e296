"""Operating runs on Ray: poison records, recent outputs, dead actors noticed."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from typing import TYPE_CHECKING, Literal

import pytest

from flowstream import FlowRuntime, Workflow
from flowstream.core.workflow import Checkpoint

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.usefixtures("ray_cluster")

N = 200


def poisoned(tmp: Path, poison: Literal["stop", "dead_letter"]) -> Workflow:
    """Record 13 fails ``invert`` (either instance) on every run."""
    wf = (
        Workflow("poisoned", mode="stream", parallelism=2)
        .node("numbers", "source.range", stop=N, parallelism=1)
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
