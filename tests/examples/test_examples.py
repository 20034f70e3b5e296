"""The examples run end to end, so `make demo` keeps working in every commit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from examples.crash_demo import main as crash_demo
from examples.ingest_demo import main as ingest_demo
from flowstream import FlowRuntime, read_workflow

ROOT = Path(__file__).resolve().parents[2]


async def test_ingestion_demo_loses_nothing(tmp_path: Path) -> None:
    # The same check `make demo` prints: every record sent is read, every
    # window stored, every record counted once; bad frames in the dead letters.
    assert await ingest_demo(seconds=1.0, clients=2, rate=2000, out=tmp_path) == 0


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
