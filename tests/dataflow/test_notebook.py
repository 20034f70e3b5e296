"""examples/live_stream.ipynb runs as Jupyter runs it: cells on a running loop."""

from __future__ import annotations

import ast
import asyncio
import inspect
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pytest

NOTEBOOK = Path(__file__).resolve().parents[2] / "examples" / "live_stream.ipynb"


async def run_cells(path: Path) -> dict[str, Any]:
    """Execute the code cells in order on this loop (top-level await allowed)."""
    namespace: dict[str, Any] = {"__name__": "__notebook__"}
    cells = json.loads(path.read_bytes())["cells"]  # noqa: ASYNC240 (before the run)
    for i, cell in enumerate(c for c in cells if c["cell_type"] == "code"):
        code = compile(
            "".join(cell["source"]),
            f"{path.name}[{i}]",
            "exec",
            flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT,
        )
        outcome = eval(code, namespace)  # the notebook is our own example
        if inspect.iscoroutine(outcome):
            await outcome
    return namespace


def test_the_notebook_shows_live_results(capsys: pytest.CaptureFixture[str]) -> None:
    namespace = asyncio.run(run_cells(NOTEBOOK))
    printed = capsys.readouterr().out.splitlines()
    live = [line for line in printed if line.startswith("live:")]
    # Each tick is printed as it passes, in both runs (await arun, then run).
    assert live == [f"live: {n} {n * n}" for n in range(10)] * 2
    assert namespace["result"].ok
    assert namespace["again"].ok
    assert "completed 10 ticks" in printed
