"""The examples run end to end, so `make demo` keeps working in every commit."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from examples.crash_demo import main as crash_demo
from examples.ingest_demo import main as ingest_demo
from flowstream import FlowRuntime, read_workflow

ROOT = Path(__file__).resolve().parents[2]


async def test_ingestion_demo_loses_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The same check `make demo` prints: every record sent is read, every
    # window stored, every record counted once; bad frames in the dead letters.
    assert await ingest_demo(seconds=1.0, clients=2, rate=2000, out=tmp_path) == 0
    shown = capsys.readouterr().out.splitlines()
    assert shown[-1] == "== check: OK: nothing lost, nothing counted twice"
    ticks = [line.split("s  ", 1)[1] for line in shown if line.startswith("   t=")]
    assert len(ticks) == len(set(ticks))  # no state printed twice
    # Window starts read as ISO 8601 UTC with milliseconds.
    iso = re.compile(r"   s\d+ +\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ")
    assert any(iso.match(line) for line in shown)


def test_the_demo_shows_a_dead_letter_item_cut_with_a_mark() -> None:
    from examples.ingest_demo import describe_dead_letter, iso_time

    line = '{"node": "ingest", "reason": "bad", "item": {"raw": "' + "x" * 200 + '"}}'
    node, item = describe_dead_letter(line)
    assert node == "node 'ingest': bad"
    assert item.endswith("... (138 more characters)")
    assert iso_time(1_000_000_000) == iso_time(1_000_000_000_000)


async def test_crash_demo_loses_nothing_and_counts_nothing_twice(
    tmp_path: Path,
) -> None:
    # `make crash-demo`: kill -9 twice mid-stream, restart, compare every
    # window in SQLite with windows computed from the feed.
    assert await crash_demo(records=40_000, rate=20_000, out=tmp_path) == 0


@pytest.mark.parametrize(
    "name",
    [
        "numbers.yaml",
        "ticks.yaml",
        "ws_ingest.yaml",
        "ws_resume.yaml",
        "batch_http.yaml",
        "kafka_windows.yaml",
    ],
)
def test_example_workflows_validate(name: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "flowstream", "validate", str(ROOT / "examples" / name)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok:")


async def test_numbers_example_outputs() -> None:
    result = await FlowRuntime().arun(read_workflow(ROOT / "examples" / "numbers.yaml"))
    assert result.output("result") == [2, 4, 8, 10, 14, 16]


def test_the_tour_prints_what_the_readme_shows(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Step 4 of `make tour` runs the command line on the shipped broken.yaml.
    from examples.demo import validate_broken

    validate_broken()
    shown = capsys.readouterr().out
    assert "examples/broken.yaml: invalid workflow, 4 problems:" in shown
    assert "(exit 2)" in shown
    assert "`.venv/bin/flowstream run examples/numbers.yaml`" in shown
