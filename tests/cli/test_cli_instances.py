"""The CLI groups a parallel node's instances under the node as declared."""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec
from click.testing import CliRunner

from flowstream.cli import cli
from flowstream.cli._display import grouped
from flowstream.core.events import NodeStats

if TYPE_CHECKING:
    from pathlib import Path

DIVIDED = """\
name: divided
error_handling: {mode: continue_on_error}
nodes:
  - {id: numbers, type: source.range, config: {stop: 20}}
  - id: divide
    type: transform.map
    config: {expr: "100 / (x % 10)"}
    parallelism: 2
  - {id: result, type: sink.null}
connections: [numbers -> divide, divide -> result]
"""


def test_summary_groups_instances_and_dead_letters_name_them(tmp_path: Path) -> None:
    wf = tmp_path / "divided.yaml"
    wf.write_text(DIVIDED)
    result = CliRunner().invoke(cli, ["run", str(wf)])
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    stats = lines[lines.index("node stats:") + 1 :]
    names = [line.split()[0] for line in stats]
    assert names == ["numbers", "divide", "[0]", "[1]", "result"]
    divide, first, second = stats[1], stats[2], stats[3]
    assert "in         20" in divide
    assert first.startswith("    [0]")  # indented under its node
    ins = [int(line.split()[2].replace(",", "")) for line in (first, second)]
    assert sum(ins) == 20
    # No partition step, no "divide[0]" rows.
    assert "=>" not in result.stderr
    assert "divide[" not in result.stderr
    letters = [line for line in lines if "division by zero" in line]
    assert len(letters) == 2
    for line in letters:
        assert line.startswith("  divide (instance ")
        assert " of 2): " in line


def test_grouped_sums_instances_and_keeps_other_rows() -> None:
    stats = {
        "src": NodeStats(items_out=5),
        "src=>count.in": NodeStats(items_in=5, items_out=5),
        "count[0]": NodeStats(
            items_in=2, rate_in=1.5, watermark_ms=900, instance_of="count", instance=0
        ),
        "count[1]": NodeStats(
            items_in=3, rate_in=2.0, watermark_ms=700, instance_of="count", instance=1
        ),
        "out": NodeStats(items_in=5),
    }
    rows = dict(grouped(stats))
    assert list(rows) == ["src", "count", "  [0]", "  [1]", "out"]
    # Instances whose stats do not name their node (a Ray slot's, say) are
    # recognised by their ids.
    bare = {
        k: msgspec.structs.replace(v, instance_of=None, instance=None)
        for k, v in stats.items()
    }
    assert list(dict(grouped(bare))) == list(rows)
    assert rows["count"].items_in == 5
    assert rows["count"].rate_in == 3.5
    assert rows["count"].watermark_ms == 700  # the lowest: the node's
