"""Inputs that used to end in a traceback: each is a named error, exit 2.

(Or exit 1 for a run that completed but whose result cannot be printed.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from flowstream.cli import cli

ROOT = Path(__file__).resolve().parents[2]
NUMBERS = str(ROOT / "examples" / "numbers.yaml")
DEPTH = 1000


def run_cli(*args: str) -> tuple[int, str, str]:
    """The real console entry point, in its own process."""
    proc = subprocess.run(
        [sys.executable, "-m", "flowstream", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return proc.returncode, proc.stdout, proc.stderr


def assert_named(stderr: str, *words: str) -> None:
    assert "Traceback" not in stderr, stderr
    assert stderr.startswith("error: "), stderr
    for word in words:
        assert word in stderr, stderr


def test_a_checkpoint_store_that_is_not_sqlite(tmp_path: Path) -> None:
    store = tmp_path / "notadb.db"
    store.write_text("this is not a SQLite database, only some text\n" * 20)
    result = CliRunner().invoke(cli, ["run", NUMBERS, "--checkpoint", str(store)])
    assert result.exit_code == 2, result.output
    assert_named(result.stderr, str(store), "not a usable checkpoint store")


@pytest.mark.parametrize(
    ("suffix", "text"),
    [
        (".json", '{"a":' * DEPTH + "1" + "}" * DEPTH),
        (".toml", "a = " + "[" * DEPTH + "]" * DEPTH),
        (".yaml", "a: " + "[" * DEPTH + "]" * DEPTH),
    ],
)
def test_a_deeply_nested_workflow_file(tmp_path: Path, suffix: str, text: str) -> None:
    path = tmp_path / f"deep{suffix}"
    path.write_text(text)
    for command in ("run", "validate"):
        result = CliRunner().invoke(cli, [command, str(path)])
        assert result.exit_code == 2, result.output
        assert_named(result.stderr, str(path), "invalid", "nest")


def test_run_json_with_a_deeply_nested_output(tmp_path: Path) -> None:
    depth = 900  # decodes, but is too deep to print
    wf = {
        "name": "deep",
        "nodes": [
            {
                "id": "v",
                "type": "source.values",
                "config": {"values": ["[" * depth + "]" * depth]},
            },
            {"id": "parse", "type": "transform.json_parse"},
            {"id": "out", "type": "sink.collect"},
        ],
        "connections": ["v -> parse", "parse -> out"],
    }
    path = tmp_path / "deep.json"
    path.write_text(json.dumps(wf))
    code, _, stderr = run_cli("run", str(path), "--json")
    assert code == 1, stderr
    assert_named(stderr, "cannot print the result as JSON", "too deeply nested")


def test_serve_with_an_empty_token(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "flowstream", "serve", "--db", str(tmp_path / "s.db")],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "FLOWSTREAM_TOKEN": ""},
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert_named(proc.stderr, "FLOWSTREAM_TOKEN is empty")


def test_serve_with_a_database_that_is_not_sqlite(tmp_path: Path) -> None:
    db = tmp_path / "notadb.db"
    db.write_text("this is not a SQLite database, only some text\n" * 20)
    proc = subprocess.run(
        [sys.executable, "-m", "flowstream", "serve", "--db", str(db), "--port", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if k != "FLOWSTREAM_TOKEN"},
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert_named(proc.stderr, str(db), "not a usable flowstream database")
