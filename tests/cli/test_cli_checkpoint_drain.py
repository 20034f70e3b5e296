"""`flowstream run --checkpoint`: SIGTERM drains into a final checkpoint;
a drain that times out exits non-zero and commits nothing partial."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from typing import TYPE_CHECKING, Any

from click.testing import CliRunner

from flowstream.cli import cli
from tests.checkpoints import latest_epoch

if TYPE_CHECKING:
    from pathlib import Path

COUNTING = """
name: counting
mode: stream
nodes:
  - {id: numbers, type: source.range, config: {stop: 1000000000}}
  - {id: later, type: time.delay, config: {ms: DELAY}}
  - {id: count, type: transform.scan, config: {op: count}}
  - {id: out, type: sink.null}
connections: [numbers -> later, later -> count, count -> out]
"""


TICKING = """
name: ticking
mode: stream
nodes:
  - {id: tick, type: source.timer, config: {interval_ms: 1}}
  - {id: later, type: time.delay, config: {ms: 60000}}
  - {id: count, type: transform.scan, config: {op: count}}
  - {id: out, type: sink.null}
connections: [tick -> later, later -> count, count -> out]
"""


def latest(store: Path) -> tuple[int, dict[str, Any], str]:
    """The store's latest epoch, its decoded states and the run's status."""
    epoch, states = latest_epoch(store)
    with closing(sqlite3.connect(store)) as conn:
        status = conn.execute("select status from runs").fetchone()[0]
    return epoch, states, status


def committed_epoch(store: Path) -> int:
    return latest_epoch(store)[0]


def start(wf: Path, store: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "flowstream",
            "run",
            str(wf),
            "--checkpoint",
            str(store),
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def wait_for_epoch(proc: subprocess.Popen[str], store: Path, epoch: int) -> None:
    deadline = time.monotonic() + 30
    while committed_epoch(store) < epoch:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no epoch committed"
        time.sleep(0.02)


def test_sigterm_drains_into_a_final_checkpoint_and_a_restart_goes_on(
    tmp_path: Path,
) -> None:
    wf = tmp_path / "counting.yaml"
    wf.write_text(COUNTING.replace("DELAY", "0"))
    store = tmp_path / "c.db"
    offsets = []
    for _ in range(2):
        proc = start(wf, store)
        wait_for_epoch(proc, store, committed_epoch(store) + 2)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert "Traceback" not in err
        _, states, status = latest(store)
        assert status == "stopped"  # drained on request: a restart resumes it
        offset = states["numbers"]["offset"]
        # The final checkpoint came after the drain: all emitted is counted.
        assert states["count"]["accs"]["\x00null"] == offset
        offsets.append(offset)
    assert 0 < offsets[0] < offsets[1]
    # The listing shows where each node is in the last epoch.
    table = CliRunner().invoke(cli, ["checkpoints", str(store)])
    assert f"numbers: offset={offsets[1]}" in table.stdout
    listed = CliRunner().invoke(cli, ["checkpoints", str(store), "--json"])
    [run] = json.loads(listed.stdout)
    assert run["status"] == "stopped"
    assert run["positions"]["numbers"] == {"offset": offsets[1]}
    assert "count" not in run["positions"]  # a table of keys is not a position


def test_a_drain_that_times_out_exits_non_zero_and_commits_nothing_partial(
    tmp_path: Path,
) -> None:
    wf = tmp_path / "counting.yaml"
    # Items held for a minute: the drain cannot finish within its timeout.
    wf.write_text(TICKING)
    store = tmp_path / "c.db"
    proc = start(wf, store, "--drain-timeout", "0.5")
    wait_for_epoch(proc, store, 2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode != 0
    assert "Traceback" not in err
    assert "cancel" in (out + err).lower()
    _, states, status = latest(store)
    assert status not in ("completed", "stopped")
    # No final checkpoint after the cut-short drain (it would hold nothing):
    # the last epoch is a whole one, with the ticks still delayed in it.
    held = states["later"]["held"]
    assert held == list(range(held[0], held[0] + len(held)))
    assert states.get("count", {}).get("accs", {}).get("\x00null", 0) == held[0]
