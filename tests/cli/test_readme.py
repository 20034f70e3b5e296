"""The README shows what runs: every command of its checked blocks, re-run.

A ``console`` block right after a ``<!-- checked by tests/cli/test_readme.py``
comment is a transcript: ``$ command`` lines and the output they print
(stdout and stderr together). "..." in the expected text stands for any text.
``.venv/bin/flowstream`` is this interpreter's ``-m flowstream``.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MARK = "<!-- checked by tests/cli/test_readme.py"


@dataclass
class Command:
    line: int  # in README.md, for the failure message
    text: str
    expected: list[str] = field(default_factory=list)


def transcripts(readme: str) -> list[Command]:
    commands: list[Command] = []
    lines = readme.splitlines()
    i = 0
    while i < len(lines):
        if not lines[i].startswith(MARK):
            i += 1
            continue
        assert lines[i + 1] == "```console", f"README.md:{i + 2}: not a console block"
        i += 2
        while lines[i] != "```":
            if lines[i].startswith("$ "):
                commands.append(Command(i + 1, lines[i][2:]))
            else:
                commands[-1].expected.append(lines[i])
            i += 1
    return commands


def matches(expected: list[str], actual: list[str]) -> bool:
    if len(expected) != len(actual):
        return False
    for want, got in zip(expected, actual, strict=True):
        pattern = ".*".join(re.escape(part) for part in want.split("..."))
        if not re.fullmatch(pattern, got):
            return False
    return True


def run(command: str) -> list[str]:
    me = f"{shlex.quote(sys.executable)} -m flowstream"
    shell = command.replace(".venv/bin/flowstream", me)
    done = subprocess.run(
        shell,
        shell=True,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return (done.stdout + done.stderr).splitlines()


COMMANDS = transcripts((ROOT / "README.md").read_text())


def test_the_readme_has_checked_blocks() -> None:
    assert len(COMMANDS) >= 4
    assert all(c.expected for c in COMMANDS)


@pytest.mark.parametrize("command", COMMANDS, ids=[c.text for c in COMMANDS])
def test_a_readme_command_prints_what_the_readme_shows(command: Command) -> None:
    actual = run(command.text)
    assert matches(command.expected, actual), (
        f"README.md:{command.line}: $ {command.text}\n"
        "README shows:\n  " + "\n  ".join(command.expected) + "\n"
        "it prints:\n  " + "\n  ".join(actual)
    )


def test_the_matcher_can_fail() -> None:
    assert matches(["a ... c"], ["a b c"])
    assert not matches(["a ... c"], ["a b d"])
    assert not matches(["one"], ["one", "two"])
