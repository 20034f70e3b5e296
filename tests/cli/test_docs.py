from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from flowstream.cli import cli

ROOT = Path(__file__).resolve().parents[2]


def test_docs_nodes_md_is_current() -> None:
    result = CliRunner().invoke(cli, ["nodes", "--markdown"])
    assert result.exit_code == 0
    committed = (ROOT / "docs" / "nodes.md").read_text()
    assert committed == result.stdout, "run `make docs` and commit docs/nodes.md"
