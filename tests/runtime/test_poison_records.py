"""Poison records: a record that fails every run does not crash-loop."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import pytest
from click.testing import CliRunner

from flowstream import FlowRuntime, RunResult, Workflow, default_registry
from flowstream.cli import cli
from flowstream.core.workflow import Checkpoint

if TYPE_CHECKING:
    from pathlib import Path


def poisoned(
    store: Path, mode: str, poison: Literal["stop", "dead_letter"]
) -> Workflow:
    wf = (
        Workflow("poisoned", mode=mode)  # type: ignore[arg-type]
        .node("numbers", "source.range", stop=50)
        # 100 / (x - 13): fails on record 13, on every run, deterministically.
        .node("invert", "transform.map", expr="{'x': x, 'y': 100 / (x - 13)}")
        .node("out", "sink.collect")
        .connect("numbers -> invert")
        .connect("invert -> out")
    )
    wf.checkpoint = Checkpoint(
        path=str(store), interval_ms=1, max_restarts=2, poison=poison
    )
    return wf


@pytest.mark.parametrize("mode", ["stream", "dag"])
def test_after_max_restarts_the_run_refuses_to_start_naming_the_record(
    tmp_path: Path, mode: str
) -> None:
    store = tmp_path / "c.db"
    first = FlowRuntime(default_registry(entry_points=False)).run(
        poisoned(store, mode, "stop")
    )
    assert first.status == "failed"
    assert "invert" in (first.error or "")
    assert "has now failed" not in (first.error or "")
    second = FlowRuntime(default_registry(entry_points=False)).run(
        poisoned(store, mode, "stop")
    )
    assert second.status == "failed"
    assert "this record has now failed 2 runs at node 'invert'" in (second.error or "")
    assert "refuse to run" in (second.error or "")
    # The third start does not run the pipeline into the same failure again.
    third = FlowRuntime(default_registry(entry_points=False)).run(
        poisoned(store, mode, "stop")
    )
    assert third.status == "failed"
    assert third.stats == {}  # nothing ran
    assert "poison record at node 'invert'" in (third.error or "")
    assert "13" in (third.error or "")
    assert "failed the last 2 runs" in (third.error or "")

    # The store lists it, and forgetting it lets the run start again.
    listed = CliRunner().invoke(cli, ["checkpoints", str(store)])
    assert "failed 2 run(s) at node 'invert': 13" in listed.stdout
    forgot = CliRunner().invoke(cli, ["checkpoints", str(store), "--forget-failures"])
    assert "forgot 1 failed record(s)" in forgot.stdout
    again = FlowRuntime(default_registry(entry_points=False)).run(
        poisoned(store, mode, "stop")
    )
    assert again.stats  # it ran (and failed on the record once more)
    assert "poison record" not in (again.error or "")


def test_dead_letter_policy_skips_the_poison_record_and_goes_on(
    tmp_path: Path,
) -> None:
    store = tmp_path / "c.db"
    for _ in range(2):
        failed = FlowRuntime(default_registry(entry_points=False)).run(
            poisoned(store, "stream", "dead_letter")
        )
        assert failed.status == "failed"
    assert "send it to the dead letters" in (failed.error or "")
    result = FlowRuntime(default_registry(entry_points=False)).run(
        poisoned(store, "stream", "dead_letter")
    )
    assert result.ok, result.error
    [letter] = result.dead_letters
    assert letter.node_id == "invert"
    assert letter.item == 13
    assert letter.reason.startswith("poison record: failed 2 runs")
    # Resumed from the last checkpoint: the records before 13 that were
    # committed are not emitted again, and every record after it is.
    got = [r["x"] for r in result.output("out")]
    assert got == sorted(got)
    assert got[-1] == 49
    assert 13 not in got
    assert set(range(14, 50)) <= set(got)


def test_a_parallel_node_counts_a_record_once_for_all_its_instances(
    tmp_path: Path,
) -> None:
    store = tmp_path / "c.db"

    def run() -> RunResult:
        wf = poisoned(store, "stream", "dead_letter")
        wf.parallelism = 2  # invert[0] and invert[1]: either may get record 13
        return FlowRuntime(default_registry(entry_points=False)).run(wf)

    first, second = run(), run()
    for failed in (first, second):
        assert failed.status == "failed"
        assert "node 'invert[" in (failed.error or "")  # the instance that failed
    assert "has now failed" not in (first.error or "")
    assert "this record has now failed 2 runs at node 'invert'" in (second.error or "")
    listed = CliRunner().invoke(cli, ["checkpoints", str(store)])
    assert "failed 2 run(s) at node 'invert': 13" in listed.stdout
    result = run()
    assert result.ok, result.error
    [letter] = result.dead_letters
    assert (letter.node_id, letter.item, letter.instances) == ("invert", 13, 2)
    assert letter.reason.startswith("poison record: failed 2 runs")
