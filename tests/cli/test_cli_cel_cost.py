"""A costly CEL expression cannot hold a CLI run: SIGTERM stops it, and one
that is too costly is refused before it starts (issue 11, defect 4)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING

from tests.checkpoints import latest_epoch

if TYPE_CHECKING:
    from pathlib import Path

# A 1,000 x 1,000 nested map on every tick: under the CLI's ceiling (about
# 2 million steps), but a fraction of a second per item compiled (and minutes
# per item in the interpreter, whose map copies its partial result per step).
THOUSAND = "[" + ", ".join(str(i) for i in range(1000)) + "]"
COSTLY = f"{THOUSAND}.map(a, {THOUSAND}.map(b, a * b)).size()"

WORKFLOW = f"""
name: costly
mode: stream
nodes:
  - {{id: tick, type: source.timer, config: {{interval_ms: 1}}}}
  - {{id: costly, type: transform.map, config: {{expr: "{COSTLY}"}}}}
  - {{id: out, type: sink.null}}
connections: [tick -> costly, costly -> out]
"""


def start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "flowstream", "run", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def test_sigterm_stops_a_run_evaluating_a_costly_expression(tmp_path: Path) -> None:
    wf = tmp_path / "costly.yaml"
    wf.write_text(WORKFLOW)
    store = tmp_path / "c.db"
    proc = start(str(wf), "--checkpoint", str(store))
    deadline = time.monotonic() + 60
    while not store.exists() or latest_epoch(store)[0] < 1:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the run never committed an epoch"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        msg = "SIGTERM did not stop the run within 30 s"
        raise AssertionError(msg) from None
    assert proc.returncode == 0, err
    assert "Traceback" not in err


def test_a_run_with_a_too_costly_expression_is_refused_before_it_starts(
    tmp_path: Path,
) -> None:
    ten = "[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]"
    deep = "1"
    for var in "abcdefg":
        deep = f"{ten}.map({var}, {deep})"
    wf = tmp_path / "deep.yaml"
    wf.write_text(WORKFLOW.replace(COSTLY, deep))
    proc = start(str(wf))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2, err
    assert "node 'costly', config.expr" in err
    assert "may cost up to" in err
