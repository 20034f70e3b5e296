from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from flowstream.cli import cli
from flowstream.core.events import NodeCompleted, WorkflowCompleted, WorkflowStarted
from flowstream.runtime.events import read_events

ROOT = Path(__file__).resolve().parents[2]
NUMBERS = str(ROOT / "examples" / "numbers.yaml")

FAILING = """
name: failing
nodes:
  - {id: src, type: source.values, config: {values: [1, 2, "three"]}}
  - {id: double, type: transform.map, config: {expr: "x * 2"}}
connections: ["src -> double"]
"""

CONTINUING = """
name: continuing
error_handling: {mode: continue_on_error}
nodes:
  - {id: src, type: source.values, config: {values: [1, 2, "three"]}}
  - {id: double, type: transform.map, config: {expr: "x * 2"}}
connections: ["src -> double"]
"""


def test_run_prints_outputs_and_exits_0() -> None:
    result = CliRunner().invoke(cli, ["run", NUMBERS])
    assert result.exit_code == 0, result.output
    assert "completed" in result.output
    assert "result.out (6 items)" in result.output


def test_run_json_is_one_document() -> None:
    result = CliRunner().invoke(cli, ["run", NUMBERS, "--json"])
    assert result.exit_code == 0
    doc = json.loads(result.stdout)
    assert doc["status"] == "completed"
    assert doc["outputs"] == {"result": {"out": [2, 4, 8, 10, 14, 16]}}
    assert doc["dead_letters"] == []


def test_run_json_counts_what_a_bounded_collect_dropped(tmp_path: Path) -> None:
    wf = tmp_path / "tail.yaml"
    wf.write_text(
        """
name: tail
mode: stream
nodes:
  - {id: src, type: source.range, config: {stop: 25}}
  - {id: last, type: sink.collect, config: {max_items: 5}}
connections: ["src -> last"]
"""
    )
    result = CliRunner().invoke(cli, ["run", str(wf), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["outputs"] == {"last": {"out": [20, 21, 22, 23, 24]}}
    assert doc["outputs_dropped"] == {"last": 20}


def test_failed_run_exits_1_naming_node_without_traceback(tmp_path: Path) -> None:
    wf = tmp_path / "failing.yaml"
    wf.write_text(FAILING)
    result = CliRunner().invoke(cli, ["run", str(wf)])
    assert result.exit_code == 1
    assert "'double'" in result.stderr
    assert "Traceback" not in result.output + result.stderr


def test_continue_on_error_reports_dead_letters(tmp_path: Path) -> None:
    wf = tmp_path / "continuing.yaml"
    wf.write_text(CONTINUING)
    result = CliRunner().invoke(cli, ["run", str(wf), "--json"])
    assert result.exit_code == 0
    doc = json.loads(result.stdout)
    assert doc["outputs"]["double"]["out"] == [2, 4]
    [letter] = doc["dead_letters"]
    assert letter["node_id"] == "double"
    assert letter["item"] == "three"


def test_invalid_workflow_exits_2(tmp_path: Path) -> None:
    wf = tmp_path / "bad.yaml"
    wf.write_text("name: bad\nnodes: [{id: a, type: nope.nope}]\n")
    result = CliRunner().invoke(cli, ["run", str(wf)])
    assert result.exit_code == 2
    assert "unknown node type 'nope.nope'" in result.stderr


def test_events_are_recorded(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    result = CliRunner().invoke(cli, ["run", NUMBERS, "--events", str(events)])
    assert result.exit_code == 0
    recorded = read_events(events)
    assert isinstance(recorded[0], WorkflowStarted)
    assert isinstance(recorded[-1], WorkflowCompleted)
    done = {e.node_id for e in recorded if isinstance(e, NodeCompleted)}
    assert done == {"numbers", "double", "keep", "result"}


def test_stream_mode_sigint_drains_and_exits_0(tmp_path: Path) -> None:
    wf = tmp_path / "ticks.yaml"
    wf.write_text(
        "name: ticks\nmode: stream\nnodes:\n"
        "  - {id: tick, type: source.timer, config: {interval_ms: 5}}\n"
        "  - {id: sink, type: sink.null}\n"
        "connections: [tick -> sink]\n"
    )
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "flowstream", "run", str(wf), "--progress"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        # Wait until the run reports progress, so the handlers are installed.
        assert proc.stderr is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            if "running" in line:
                break
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    # The summary goes to stderr; stdout is for data (nothing here).
    assert "stopped by SIGINT; drained" in err
    assert "completed" in err
    assert out == ""
    assert "Traceback" not in err


@pytest.mark.parametrize("flag", ["--no-fuse", "--max-parallel=1"])
def test_run_options(flag: str) -> None:
    result = CliRunner().invoke(cli, ["run", NUMBERS, "--json", flag])
    assert result.exit_code == 0
    assert json.loads(result.stdout)["outputs"]["result"]["out"] == [
        2,
        4,
        8,
        10,
        14,
        16,
    ]


def test_a_drain_that_times_out_says_so(tmp_path: Path) -> None:
    # time.delay holds each item a minute: the drain cannot finish in time.
    wf = tmp_path / "stuck.yaml"
    wf.write_text(
        "name: stuck\nmode: stream\nnodes:\n"
        "  - {id: tick, type: source.timer, config: {interval_ms: 5}}\n"
        "  - {id: hold, type: time.delay, config: {ms: 60000}}\n"
        "  - {id: sink, type: sink.null}\n"
        "connections: [tick -> hold, hold -> sink]\n"
    )
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "flowstream",
            "run",
            str(wf),
            "--progress",
            "--drain-timeout=0.3",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stderr is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            if "running" in line:
                break
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, err
    assert "stopped by SIGINT; drain timed out after 0.3 s: cancelled" in err
    assert "drained" not in err
    assert "completed" not in out
    assert "Traceback" not in err
