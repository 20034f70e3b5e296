"""docs/guide/windows.md runs as written: every python and yaml block."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from flowstream import FlowRuntime
from flowstream.core.workflow import load_workflow

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "guide" / "windows.md"
BLOCK = re.compile(r"^```(python|yaml)\n(.*?)^```$", re.S | re.M)
BLOCKS = [(m.group(1), m.group(2)) for m in BLOCK.finditer(GUIDE.read_text())]


def test_the_guide_has_runnable_blocks() -> None:
    kinds = [kind for kind, _ in BLOCKS]
    assert kinds.count("python") >= 3
    assert kinds.count("yaml") >= 1


@pytest.mark.parametrize(
    "code",
    [code for kind, code in BLOCKS if kind == "python"],
    ids=lambda code: code.splitlines()[-1][:40],
)
def test_python_block_runs(code: str) -> None:
    # Each block asserts what it shows; a fresh namespace per block.
    exec(compile(code, str(GUIDE), "exec"), {"__name__": "guide"})


@pytest.mark.parametrize("text", [code for kind, code in BLOCKS if kind == "yaml"])
async def test_yaml_block_runs(text: str) -> None:
    wf = load_workflow(text, "yaml", source=str(GUIDE))
    result = await FlowRuntime().arun(wf)
    assert result.ok, result.error
    assert result.dead_letters == []
