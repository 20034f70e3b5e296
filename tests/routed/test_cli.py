"""`flowstream run` and `validate` on routed workflow files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from flowstream.cli import cli
from flowstream.core.events import RouteTaken, WorkflowCompleted, WorkflowStarted
from flowstream.runtime.events import read_events

ROOT = Path(__file__).resolve().parents[2]
LOGIN = str(ROOT / "examples" / "routed_login.yaml")

FAILING = """
name: failing
mode: routed
nodes:
  - {id: start, type: step.set, config: {values: {x: "store.missing + 1"}}}
"""

INVALID = """
name: invalid
mode: routed
nodes:
  - {id: start, type: step.sett}
  - {id: island, type: step.complete}
routes: [start -> ghost]
"""


def invoke(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args))


def test_run_prints_the_result_and_the_path() -> None:
    result = invoke("run", LOGIN)
    assert result.exit_code == 0, result.output
    # The summary (status, path) on stderr, the result (the data) on stdout.
    lines = result.stderr.splitlines()
    assert lines[0].startswith("completed: run ")
    assert lines[0].endswith("(routed mode), 10 steps")
    assert lines[1] == (
        "path: start -> login -> check -> retry -> login -> check -> retry -> "
        "login -> check -> welcome"
    )
    assert result.stdout == "result: {'attempts': 3, 'user': 'alice'}\n"


def test_run_json_and_set() -> None:
    result = invoke("run", LOGIN, "--json", "--set", 'guesses=["x", "y", "z"]')
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["status"] == "completed"
    assert doc["result"] == {"locked": True, "attempts": 3}
    assert doc["path"][-1] == "locked"
    assert doc["error"] is None


def test_set_takes_text_that_is_not_json(tmp_path: Path) -> None:
    wf = tmp_path / "echo.yaml"
    wf.write_text(
        "name: echo\nmode: routed\nnodes:\n"
        "  - {id: echo, type: step.complete, config: {result: 'store.who'}}\n"
    )
    result = invoke("run", str(wf), "--json", "--set", "who=ann")
    assert json.loads(result.stdout)["result"] == "ann"
    bad = invoke("run", str(wf), "--set", "no-equals-sign")
    assert bad.exit_code == 2
    assert "write KEY=VALUE" in bad.stderr


def test_a_failed_flow_exits_1_naming_the_step(tmp_path: Path) -> None:
    wf = tmp_path / "failing.yaml"
    wf.write_text(FAILING)
    result = invoke("run", str(wf))
    assert result.exit_code == 1
    assert result.stderr.startswith("failed: run ")
    assert "path: start" in result.stderr
    assert "error: step 'start' (step.set) failed" in result.stderr
    assert "Traceback" not in result.output + result.stderr


def test_an_invalid_flow_exits_2_listing_every_problem(tmp_path: Path) -> None:
    wf = tmp_path / "invalid.yaml"
    wf.write_text(INVALID)
    for command in ("run", "validate"):
        result = invoke(command, str(wf))
        assert result.exit_code == 2
        assert "invalid workflow, 3 problems:" in result.stderr
        assert "node 'start', type: unknown node type 'step.sett'" in result.stderr
        assert "no step 'ghost'" in result.stderr
        assert "node 'island': unreachable" in result.stderr


def test_validate_a_routed_file() -> None:
    result = invoke("validate", LOGIN)
    assert result.exit_code == 0
    assert result.stdout == (
        f"ok: {LOGIN}: workflow 'login' (routed mode), 6 steps, 6 routes\n"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", LOGIN, "--mode", "dag"], "--mode does not apply to a routed workflow"),
        (
            ["run", str(ROOT / "examples" / "numbers.yaml"), "--set", "a=1"],
            "--set applies to routed workflows",
        ),
    ],
)
def test_options_that_do_not_apply(args: list[str], message: str) -> None:
    result = invoke(*args)
    assert result.exit_code == 2
    assert message in result.stderr


def test_events_are_recorded(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    result = invoke("run", LOGIN, "--events", str(events))
    assert result.exit_code == 0
    recorded = read_events(events)
    assert isinstance(recorded[0], WorkflowStarted)
    assert recorded[0].mode == "routed"
    assert isinstance(recorded[-1], WorkflowCompleted)
    routes = [(e.from_node, e.to_node) for e in recorded if isinstance(e, RouteTaken)]
    assert routes[:2] == [("start", "login"), ("login", "check")]
    assert len(routes) == 9


def test_a_dataflow_file_may_run_a_flow_per_item(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    wf = tmp_path / "logins.yaml"
    wf.write_text(
        """
name: logins
nodes:
  - {id: guesses, type: source.values, config: {values: [[s3cret], [a, b, c]]}}
  - id: login
    type: routed.flow
    config: {flow: examples/routed_login.yaml, input_key: guesses, concurrency: 2}
connections: [guesses -> login]
"""
    )
    result = invoke("run", str(wf), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["outputs"]["login"]["out"] == [
        {"user": "alice", "attempts": 1},
        {"locked": True, "attempts": 3},
    ]
    assert invoke("validate", str(wf)).exit_code == 0
