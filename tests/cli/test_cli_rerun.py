"""``flowstream run`` of a completed checkpointed run: a no-op; ``--fresh`` reruns."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from typing import TYPE_CHECKING

import pytest
from click.testing import CliRunner

from flowstream.cli import cli

if TYPE_CHECKING:
    from pathlib import Path

N = 300


def workflow(tmp_path: Path, mode: str) -> Path:
    wf = tmp_path / "wf.yaml"
    wf.write_text(
        f"name: rerun\nmode: {mode}\n"
        f"checkpoint: {{path: {tmp_path / 'ckpt.db'}, interval_ms: 5}}\n"
        "nodes:\n"
        f"  - {{id: seq, type: source.range, config: {{stop: {N}}}}}\n"
        "  - {id: rec, type: transform.map, config: {expr: \"{'n': x}\"}}\n"
        f"  - {{id: file, type: file.sink, config: {{path: {tmp_path / 'o.jsonl'}}}}}\n"
        "  - {id: rows, type: sqlite.sink, config: "
        f"{{path: {tmp_path / 'o.db'}, table: rows}}}}\n"
        "connections: [seq -> rec, rec -> file, rec -> rows]\n"
    )
    return wf


def counts(tmp_path: Path) -> tuple[int, int]:
    lines = len((tmp_path / "o.jsonl").read_text().splitlines())
    with closing(sqlite3.connect(tmp_path / "o.db")) as conn:
        rows = conn.execute("select count(*) from rows").fetchone()[0]
    return lines, rows


@pytest.mark.parametrize("mode", ["stream", "dag"])
def test_a_second_run_says_it_already_completed(tmp_path: Path, mode: str) -> None:
    wf = workflow(tmp_path, mode)
    first = CliRunner().invoke(cli, ["run", str(wf)])
    assert first.exit_code == 0, first.output
    assert counts(tmp_path) == (N, N)

    again = CliRunner().invoke(cli, ["run", str(wf)])
    assert again.exit_code == 0, again.output
    assert "already completed" in again.stderr
    assert "nothing to do" in again.stderr
    assert "--fresh" in again.stderr
    assert counts(tmp_path) == (N, N)

    as_json = CliRunner().invoke(cli, ["run", str(wf), "--json"])
    assert as_json.exit_code == 0, as_json.output
    doc = json.loads(as_json.stdout)
    assert doc["status"] == "completed"
    assert doc["skipped"].startswith("already completed")
    assert counts(tmp_path) == (N, N)


def test_fresh_runs_it_again_once(tmp_path: Path) -> None:
    wf = workflow(tmp_path, "stream")
    assert CliRunner().invoke(cli, ["run", str(wf)]).exit_code == 0
    fresh = CliRunner().invoke(cli, ["run", str(wf), "--fresh"])
    assert fresh.exit_code == 0, fresh.output
    assert "already completed" not in fresh.stderr
    assert counts(tmp_path) == (2 * N, 2 * N)  # the old output stays
    again = CliRunner().invoke(cli, ["run", str(wf)])
    assert "already completed" in again.stderr
    assert counts(tmp_path) == (2 * N, 2 * N)


def test_fresh_without_a_store_is_a_usage_error(tmp_path: Path) -> None:
    wf = tmp_path / "plain.yaml"
    wf.write_text(
        "name: plain\nnodes:\n  - {id: n, type: source.range, config: {stop: 3}}\n"
    )
    result = CliRunner().invoke(cli, ["run", str(wf), "--fresh"])
    assert result.exit_code == 2
    assert "--fresh" in result.stderr
    assert "--checkpoint" in result.stderr
    assert "Traceback" not in result.output
