"""docs/guide/windows.md runs as written: every python and yaml block."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from flowstream import FlowRuntime
from flowstream.core.workflow import load_workflow

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "guide" / "windows.md"
BLOCK = re.compile(r"^```(python|yaml)([^\n]*)\n(.*?)^```$", re.S | re.M)
FILE = re.compile(r"\{file=([^}]+)\}")
# (kind, file name the block is written as or None, code)
ALL = [
    (m.group(1), (f := FILE.search(m.group(2))) and f.group(1), m.group(3))
    for m in BLOCK.finditer(GUIDE.read_text())
]
# A {file=NAME} block is a file the later blocks use (a stream workflow
# that runs until stopped): written beside them, not run on its own.
FILES = {name: code for _, name, code in ALL if name}
BLOCKS = [(kind, code) for kind, name, code in ALL if not name]


def test_the_guide_has_runnable_blocks() -> None:
    kinds = [kind for kind, _ in BLOCKS]
    assert kinds.count("python") >= 3
    assert kinds.count("yaml") >= 1


@pytest.mark.parametrize(
    "code",
    [code for kind, code in BLOCKS if kind == "python"],
    ids=lambda code: code.splitlines()[-1][:40],
)
def test_python_block_runs(
    code: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each block asserts what it shows; a fresh namespace and directory per
    # block, holding the page's {file=NAME} blocks.
    for name, text in FILES.items():
        (tmp_path / name).write_text(text)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, str(GUIDE), "exec"), {"__name__": "guide"})


@pytest.mark.parametrize("text", [code for kind, code in BLOCKS if kind == "yaml"])
async def test_yaml_block_runs(text: str) -> None:
    wf = load_workflow(text, "yaml", source=str(GUIDE))
    result = await FlowRuntime().arun(wf)
    assert result.ok, result.error
    assert result.dead_letters == []
