from __future__ import annotations

import json
from typing import TYPE_CHECKING

from click.testing import CliRunner

from flowstream.cli import cli

if TYPE_CHECKING:
    from pathlib import Path


def test_run_with_checkpoint_then_list_it(tmp_path: Path) -> None:
    wf = tmp_path / "numbers.yaml"
    wf.write_text(
        "name: numbers\nmode: stream\nnodes:\n"
        "  - {id: n, type: source.range, config: {stop: 50}}\n"
        "  - {id: out, type: sink.collect}\n"
        "connections: [n -> out]\n"
    )
    store = tmp_path / "ckpt.db"
    result = CliRunner().invoke(
        cli, ["run", str(wf), "--json", "--checkpoint", str(store)]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["outputs"]["out"]["out"] == list(range(50))

    listed = CliRunner().invoke(cli, ["checkpoints", str(store), "--json"])
    assert listed.exit_code == 0, listed.output
    [run] = json.loads(listed.stdout)
    assert run["workflow"] == "numbers"
    assert run["status"] == "completed"
    # Every epoch committed says how long it took and how big it was: the
    # first (before anything ran) and the final one (after the drain).
    epochs = run["epochs"]
    assert [e["epoch"] for e in epochs] == sorted(
        (e["epoch"] for e in epochs), reverse=True
    )
    assert epochs[-1]["epoch"] == 0
    assert epochs[0]["epoch"] == run["epoch"] >= 1
    for e in epochs:
        assert e["size"] > 0
        assert e["committed"] >= e["started"]

    table = CliRunner().invoke(cli, ["checkpoints", str(store)])
    assert "numbers" in table.stdout
    assert "completed" in table.stdout
    last = epochs[0]
    assert f"epoch {last['epoch']}: committed " in table.stdout
    assert f"{last['size']:,} bytes" in table.stdout


def test_checkpoints_on_a_file_that_is_not_a_store(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.db"
    bogus.write_text("this is not sqlite " * 100)
    result = CliRunner().invoke(cli, ["checkpoints", str(bogus)])
    assert result.exit_code == 2
    assert "not a usable checkpoint store" in result.stderr
    assert "Traceback" not in result.output + result.stderr
