"""Every ```python block of docs/guide/python-api.md runs as it is."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "guide" / "python-api.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```", GUIDE.read_text(), re.M | re.S)


def test_the_guide_has_blocks() -> None:
    assert len(BLOCKS) >= 8


@pytest.mark.parametrize(
    "source", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))]
)
def test_a_guide_block_runs(source: str) -> None:
    code = compile(source, f"{GUIDE.name}", "exec")
    exec(code, {"__name__": "guide_block"})  # our own documentation
