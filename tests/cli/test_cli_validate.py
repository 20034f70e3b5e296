from __future__ import annotations

import json
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest
from click.testing import CliRunner, Result

from flowstream import __version__, default_registry
from flowstream.cli import cli
from flowstream.core.workflow import Workflow, write_workflow

if TYPE_CHECKING:
    from pathlib import Path

VALID = (
    Workflow("demo", description="doubles the odd numbers")
    .node("numbers", "source.range", stop=10)
    .node("double", "transform.map", expr="x * 2")
    .node("odd", "transform.filter", expr="x % 4 == 2")
    .node("out", "sink.collect")
    .connect("numbers -> double")
    .connect("double -> odd")
    .connect("odd -> out")
)

# A cycle, an unknown type, a bad port and a bad config, each on its own node.
INVALID = """
name: broken
nodes:
  - {id: src, type: source.range, config: {stop: 3}}
  - {id: first, type: transform.map, config: {expr: "x"}}
  - {id: second, type: transform.map, config: {expr: "x"}}
  - {id: typo, type: transform.mapp, config: {expr: "x"}}
  - {id: counter, type: source.range, config: {stopp: 3}}
  - {id: out, type: sink.collect}
connections:
  - src -> first
  - first -> second
  - second -> first
  - src.evens -> out
"""


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def assert_no_traceback(result: Result) -> None:
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit), result.exception


# --- validate ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["flow.json", "flow.yaml", "flow.yml", "flow.toml"])
def test_validate_ok_in_every_format(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    write_workflow(VALID, path)
    result = invoke("validate", str(path))
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        f"ok: {path}: workflow 'demo' (dag mode), 4 nodes, 3 connections\n"
    )
    assert result.stderr == ""


def test_validate_reports_every_problem_without_traceback(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(INVALID)
    result = invoke("validate", str(path))
    assert result.exit_code == 2
    assert_no_traceback(result)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines[0] == f"{path}: invalid workflow, 4 problems:"
    assert lines[1].startswith(
        "  node 'typo', type: unknown node type 'transform.mapp' "
        "(did you mean 'transform.map'"
    )
    assert lines[2:] == [
        "  node 'counter', config.stopp: object contains unknown field `stopp`",
        "  node 'src', evens: connection src.evens -> out.in: source.range has no "
        "output port 'evens' (outputs: out, error)",
        "  node 'first': cycle: first -> second -> first",
    ]


def test_validate_reports_structural_problems(tmp_path: Path) -> None:
    path = tmp_path / "shape.yaml"
    path.write_text("name: w\nnodez: []\nnodes:\n  - {id: a}\n")
    result = invoke("validate", str(path))
    assert result.exit_code == 2
    assert_no_traceback(result)
    assert "invalid workflow, 2 problems" in result.stderr
    assert "nodez: object contains unknown field `nodez`" in result.stderr
    assert "node 'a', type: object missing required field `type`" in result.stderr


def test_validate_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    result = invoke("validate", str(path))
    assert result.exit_code == 2
    assert_no_traceback(result)
    assert result.stderr == f"error: {path}: No such file or directory\n"


def test_validate_unknown_extension(tmp_path: Path) -> None:
    path = tmp_path / "flow.txt"
    path.write_text("name: w\n")
    result = invoke("validate", str(path))
    assert result.exit_code == 2
    assert_no_traceback(result)
    assert result.stderr.startswith(f"error: {path}: unknown file type '.txt'")
    assert ".json, .yaml, .yml, .toml" in result.stderr


@pytest.mark.parametrize(
    ("name", "data", "kind"),
    [
        ("bad.yaml", b"name: w\nnodes: [\n", "YAML"),
        ("bad.json", b'{"name": "w",', "JSON"),
        ("bad.toml", b"name = \n", "TOML"),
        ("binary.toml", b"\xff\xfe\x00", "TOML"),
    ],
)
def test_validate_syntactically_invalid(
    tmp_path: Path, name: str, data: bytes, kind: str
) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    result = invoke("validate", str(path))
    assert result.exit_code == 2
    assert_no_traceback(result)
    assert result.stderr.startswith(f"error: {path}: invalid {kind}: ")


def test_validate_directory(tmp_path: Path) -> None:
    result = invoke("validate", str(tmp_path))
    assert result.exit_code == 2
    assert "is a directory" in result.output


def test_python_m_flowstream_validate(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.toml", tmp_path / "bad.yaml"
    write_workflow(VALID, good)
    bad.write_text(INVALID)

    def run(path: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "flowstream", "validate", path.name],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    ok = run(good)
    assert (ok.returncode, ok.stderr) == (0, "")
    assert ok.stdout.startswith("ok: good.toml: workflow 'demo'")
    failed = run(bad)
    assert failed.returncode == 2
    assert failed.stdout == ""
    assert "Traceback" not in failed.stderr
    assert failed.stderr.startswith("bad.yaml: invalid workflow, 4 problems:")
    for node_id in ("typo", "counter", "src", "first"):
        assert f"node {node_id!r}" in failed.stderr


# --- nodes and --version ------------------------------------------------------------


def registered_ids() -> list[str]:
    return [spec.type_id for spec in default_registry()]


def test_nodes_lists_every_type() -> None:
    result = invoke("nodes")
    assert result.exit_code == 0
    listed = [line.split()[0] for line in result.stdout.splitlines() if line[:1] != " "]
    assert listed == registered_ids()
    assert "transform.map" in listed
    assert "    stop: int (required)" in result.stdout


def test_nodes_json() -> None:
    result = invoke("nodes", "--json")
    assert result.exit_code == 0
    doc = json.loads(result.stdout)
    assert [entry["type"] for entry in doc] == registered_ids()
    for entry in doc:
        assert {"type", "inputs", "outputs", "config"} <= set(entry)
        assert entry["outputs"][:2] == ["out", "error"]
    by_type = {entry["type"]: entry for entry in doc}
    assert by_type["transform.map"]["inputs"] == ["in"]
    assert by_type["source.range"]["inputs"] == []
    assert by_type["source.range"]["config"] == [
        {"name": "stop", "type": "int", "required": True},
        {"name": "start", "type": "int", "default": 0},
        {"name": "step", "type": "int", "default": 1},
    ]
    assert [f["name"] for f in by_type["transform.map"]["config"]] == ["expr", "fn"]


def test_nodes_markdown_has_a_heading_per_type() -> None:
    result = invoke("nodes", "--markdown")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0] == "# Node types"
    headings = [line for line in lines if line.startswith("## ")]
    assert headings == [f"## `{type_id}`" for type_id in registered_ids()]


def test_nodes_output_is_stable() -> None:
    first, second = invoke("nodes", "--markdown"), invoke("nodes", "--markdown")
    assert " at 0x" not in first.stdout
    assert first.stdout == second.stdout


def test_version() -> None:
    result = invoke("--version")
    assert result.exit_code == 0
    assert result.stdout == f"flowstream, version {__version__}\n"
