"""``mypy --strict`` on user code: the examples pass, a wrong lambda is caught."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

GOOD = """
from __future__ import annotations

from collections.abc import AsyncIterator

import msgspec

from flowstream import NodeContext, node
from flowstream.dataflow import Dataflow, DataStream, count, range_source, tumbling


class Click(msgspec.Struct):
    user: str
    page: str


@node("user.tally")
async def tally(inp: AsyncIterator[int], *, ctx: NodeContext) -> AsyncIterator[int]:
    async for x in inp:
        ctx.state["n"] = ctx.state.setdefault("n", 0) + x
        ctx.state.pop("unused", None)
        yield ctx.state["n"]


flow = Dataflow("typed")
numbers: DataStream[int] = flow.source(range_source(10))
words: DataStream[str] = numbers.map(lambda n: str(n * 2))
lengths: DataStream[int] = words.map(len)
clicks: DataStream[Click] = numbers.map(lambda n: Click(user=str(n), page="/"))
pages = clicks.key_by(lambda c: c.page).window(tumbling(seconds=1), count())
result = flow.run(mode="dag", fuse=False)
"""

BAD = """
from __future__ import annotations

from flowstream.dataflow import Dataflow, range_source

flow = Dataflow("wrong")
words = flow.source(range_source(10)).map(lambda n: str(n))
words.map(lambda w: w + 1)
flow.run(fuse="yes")
"""


def mypy(*paths: Path) -> str:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-error-summary",
            *map(str, paths),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return done.stdout + done.stderr


def test_typed_code_passes_and_a_wrong_lambda_is_rejected(tmp_path: Path) -> None:
    # One mypy run (it takes seconds): the examples and the typed user file
    # must be clean, the bad file must fail on its two wrong lines.
    good, bad = tmp_path / "good_flow.py", tmp_path / "bad_flow.py"
    good.write_text(GOOD)
    bad.write_text(BAD)
    examples = sorted((ROOT / "examples").glob("*.py"))
    assert examples
    report = mypy(good, bad, *examples)
    errors = [line for line in report.splitlines() if ": error:" in line]
    assert all("bad_flow.py:" in line for line in errors), report
    assert any(
        "bad_flow.py:8:" in line and '"str" and "int"' in line for line in errors
    ), report
    assert any("bad_flow.py:9:" in line and '"fuse"' in line for line in errors), report
