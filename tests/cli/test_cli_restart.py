"""``flowstream run --restart on-failure``: the policies and real restarts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import pytest
from click.testing import CliRunner

from flowstream.cli import cli
from flowstream.cli._restart import RestartPolicy, RestartSpecError, parse_duration
from flowstream.core.events import RunRestarted, WorkflowCompleted, decode_event

if TYPE_CHECKING:
    from pathlib import Path


def test_durations() -> None:
    assert parse_duration("250ms") == 0.25
    assert parse_duration("10s") == 10
    assert parse_duration("5m") == 300
    assert parse_duration("1h") == 3600
    assert parse_duration("2.5") == 2.5
    with pytest.raises(RestartSpecError, match="'ten' is not a duration"):
        parse_duration("ten")


def test_fixed_delay_stops_after_max_restarts() -> None:
    policy = RestartPolicy.parse("fixed:2s", None)
    assert [policy.next_delay(t) for t in range(5)] == [2, 2, 2, None, None]


def test_exponential_grows_and_is_capped() -> None:
    policy = RestartPolicy.parse("exponential:1s:5s", 6)
    assert [policy.next_delay(t) for t in range(7)] == [1, 2, 4, 5, 5, 5, None]
    tripled = RestartPolicy.parse("exponential:100ms:1m:3", 3)
    delays = [tripled.next_delay(t) for t in range(3)]
    assert delays == pytest.approx([0.1, 0.3, 0.9])


def test_failure_rate_gives_up_only_when_failures_crowd() -> None:
    policy = RestartPolicy.parse("failure-rate:2/10s:1s", None)
    # Spaced out: never more than 2 within 10 s, so it keeps restarting.
    assert [policy.next_delay(t) for t in (0, 6, 12, 18, 24, 30)] == [1] * 6
    crowded = RestartPolicy.parse("failure-rate:2/10s:1s", None)
    assert [crowded.next_delay(t) for t in (0, 1, 2)] == [1, 1, None]


@pytest.mark.parametrize(
    ("spec", "named"),
    [
        ("sometimes", "write fixed:DELAY"),
        ("fixed:soon", "'soon' is not a duration"),
        ("exponential:1s", "write fixed:DELAY"),
        ("exponential:1s:5s:0.5", "factor 0.5 is below 1"),
        ("failure-rate:x/1m:1s", "'x/1m' is not N/INTERVAL"),
    ],
)
def test_a_bad_backoff_is_named_exit_2(spec: str, named: str) -> None:
    result = CliRunner().invoke(
        cli,
        ["run", "x.yaml", "--restart", "on-failure", "--restart-backoff", spec],
    )
    assert result.exit_code == 2
    assert named in result.stderr
    assert "Traceback" not in result.output


FLAKY = """
import pathlib

async def fail_once_on_3(x):
    # One call per item (map_async, no retry): the first call on 3 fails.
    marker = pathlib.Path("failed-once")
    if x == 3 and not marker.exists():
        marker.write_text("")
        raise RuntimeError("boom on 3")
    return x * 10
"""

WORKFLOW = """
name: flaky
nodes:
  - {id: numbers, type: source.range, config: {stop: 6}}
  - id: flaky
    type: transform.map_async
    config: {fn: "flaky_mod:fail_once_on_3"}
    retry: {max_attempts: 1}
  - {id: out, type: sink.collect}
connections: [numbers -> flaky, flaky -> out]
"""


def flaky_workflow(tmp_path: Path) -> Path:
    (tmp_path / "flaky_mod.py").write_text(FLAKY)
    wf = tmp_path / "flaky.yaml"
    wf.write_text(WORKFLOW)
    return wf


def test_a_failed_run_is_restarted_from_its_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wf = flaky_workflow(tmp_path)
    monkeypatch.chdir(tmp_path)
    events = tmp_path / "events.jsonl"
    result = CliRunner().invoke(
        cli,
        [
            "run",
            str(wf),
            "--json",
            "--checkpoint",
            str(tmp_path / "ckpt.db"),
            "--restart",
            "on-failure",
            "--restart-backoff",
            "fixed:10ms",
            "--events",
            str(events),
        ],
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["status"] == "completed"
    assert doc["restarts"] == 1
    assert sorted(doc["outputs"]["out"]["out"]) == [0, 10, 20, 30, 40, 50]
    assert "restart 1/3 in 0.01s: the run failed: " in result.stderr
    assert "boom on 3; it resumes from its checkpoint store" in result.stderr
    # The restart is a typed event, between the failed attempt and the next.
    recorded = [decode_event(line) for line in events.read_text().splitlines()]
    names = [type(e).__name__ for e in recorded]
    restarted = [e for e in recorded if isinstance(e, RunRestarted)]
    assert len(restarted) == 1
    (event,) = restarted
    assert (event.attempt, event.max_attempts, event.delay_s) == (1, 3, 0.01)
    assert "boom on 3" in event.reason
    # A DAG run resumes by skipping the nodes it finished: no epoch.
    assert (event.checkpointed, event.from_epoch) == (True, None)
    at = names.index("RunRestarted")
    assert "WorkflowCompleted" in names[:at]
    assert "WorkflowStarted" in names[at:]
    failed = [e for e in recorded[:at] if isinstance(e, WorkflowCompleted)]
    assert failed[-1].run_id == event.run_id  # the run that ended


STREAM = """
name: flaky
mode: stream
checkpoint: {path: ckpt.db, interval_ms: 20}
nodes:
  - {id: numbers, type: source.range, config: {stop: 6}}
  - id: flaky
    type: transform.map_async
    config: {fn: "flaky_mod:fail_once_on_3"}
    retry: {max_attempts: 1}
  - {id: out, type: sink.null}
connections: [numbers -> flaky, flaky -> out]
"""


def test_a_stream_restart_names_the_epoch_it_resumes_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "flaky_mod.py").write_text(FLAKY)
    wf = tmp_path / "stream.yaml"
    wf.write_text(STREAM)
    monkeypatch.chdir(tmp_path)
    events = tmp_path / "events.jsonl"
    result = CliRunner().invoke(
        cli,
        [
            "run",
            str(wf),
            "--restart",
            "on-failure",
            "--restart-backoff",
            "fixed:10ms",
            "--events",
            str(events),
        ],
    )
    assert result.exit_code == 0, result.output
    recorded = [decode_event(line) for line in events.read_text().splitlines()]
    (event,) = [e for e in recorded if isinstance(e, RunRestarted)]
    # A stream run commits its first epoch at start: there is one to name.
    assert event.checkpointed
    assert isinstance(event.from_epoch, int)
    assert event.from_epoch >= 0
    assert f"it resumes from checkpoint epoch {event.from_epoch}" in result.stderr


def test_a_restart_without_a_store_says_it_starts_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wf = flaky_workflow(tmp_path)
    monkeypatch.chdir(tmp_path)
    events = tmp_path / "events.jsonl"
    result = CliRunner().invoke(
        cli,
        [
            "run",
            str(wf),
            "--restart",
            "on-failure",
            "--restart-backoff",
            "fixed:1ms",
            "--events",
            str(events),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "it starts over (no checkpoint store)" in result.stderr
    recorded = [decode_event(line) for line in events.read_text().splitlines()]
    (event,) = [e for e in recorded if isinstance(e, RunRestarted)]
    assert (event.checkpointed, event.from_epoch) == (False, None)


def test_without_restart_the_same_run_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wf = flaky_workflow(tmp_path)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["run", str(wf)])
    assert result.exit_code == 1
    assert "boom on 3" in result.stderr


def test_the_restarts_run_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wf = tmp_path / "always.yaml"
    wf.write_text(
        "name: always\nnodes:\n"
        "  - {id: numbers, type: source.range, config: {stop: 3}}\n"
        '  - {id: boom, type: transform.map, config: {expr: "1 / (x - x)"}}\n'
        "  - {id: out, type: sink.collect}\n"
        "connections: [numbers -> boom, boom -> out]\n"
    )
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(
        cli,
        [
            "run",
            str(wf),
            "--restart",
            "on-failure",
            "--max-restarts",
            "2",
            "--restart-backoff",
            "exponential:1ms:4ms",
        ],
    )
    assert result.exit_code == 1
    assert result.stderr.count("the run failed: ") == 2
    assert "restarts: 2" in result.stderr
    assert "restart: gave up after 2 restart(s) (exponential policy)" in result.stderr


def test_a_signal_during_the_wait_ends_the_run(tmp_path: Path) -> None:
    wf = tmp_path / "always.yaml"
    wf.write_text(
        "name: always\nnodes:\n"
        "  - {id: numbers, type: source.range, config: {stop: 3}}\n"
        '  - {id: boom, type: transform.map, config: {expr: "1 / (x - x)"}}\n'
        "  - {id: out, type: sink.collect}\n"
        "connections: [numbers -> boom, boom -> out]\n"
    )
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "flowstream",
            "run",
            str(wf),
            "--restart",
            "on-failure",
            "--restart-backoff",
            "fixed:10m",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    try:
        assert proc.stderr is not None
        deadline = time.monotonic() + 60
        seen = ""
        while time.monotonic() < deadline and "restart 1/3 in 600s" not in seen:
            seen += proc.stderr.readline()
        assert "restart 1/3 in 600s" in seen
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)  # not the ten minutes
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, err
    assert "SIGINT" in err
    assert "restart 2/3" not in err
    assert "Traceback" not in err
