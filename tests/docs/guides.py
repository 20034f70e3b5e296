"""Run the fenced code blocks of the guides (docs/guide/*.md).

The blocks of one page run in order in one fresh directory, so a page can
write a file in one block and use it in the next. What each block does,
chosen by its info string (``lang {option} {option=value} words``):

``python``
    Run as a script (``python block.py``) with the page's directory and the
    repository on ``PYTHONPATH``; it must exit 0. ``{file=NAME}`` writes it
    as ``NAME`` instead (a module that later blocks import or reference).
``yaml``
    Must parse. A document with ``nodes`` is a workflow and must pass
    ``flowstream validate`` (or, marked ``{invalid}``, must fail it: an
    example of a mistake); ``{file=NAME}`` also writes it as ``NAME``.
``console``
    Each ``$ flowstream ...`` line is run (``python -m flowstream ...``) in
    the page's directory; the lines after it, when there are any, are its
    expected output (stdout then stderr), where ``...`` matches anything.
    It must exit 0, or the code given by ``{exit=N}``. A command that is
    not ``flowstream`` is an error: mark such a block ``{skip}``.
``text {output}``
    The expected output of the python block just before it (``...``
    matches anything).
``text``
    Not code (a tree, a sample): shown, not run.

Any block can be marked ``{skip} reason``: it is not run, and it is counted
(``tests/docs/test_guides.py`` keeps the count small and wants a reason).
Any other language is an error, so nothing is left unchecked by accident.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from markdown_it import MarkdownIt

ROOT = Path(__file__).resolve().parents[2]
GUIDES = ROOT / "docs" / "guide"
LANGUAGES = ("python", "yaml", "console", "text")
TIMEOUT_S = 120

_OPTION = re.compile(r"\{([a-z]+)(?:=([^}]*))?\}")


@dataclass
class Block:
    """One fenced block: where it is, its language, options and text."""

    page: Path
    line: int
    lang: str
    options: dict[str, str]
    rest: str
    text: str

    @property
    def where(self) -> str:
        page = self.page.resolve()
        shown = page.relative_to(ROOT) if page.is_relative_to(ROOT) else page
        return f"{shown}:{self.line}"


@dataclass
class PageRun:
    """What running a page's blocks did."""

    ran: list[Block] = field(default_factory=list)
    skipped: list[Block] = field(default_factory=list)


def blocks(page: Path) -> list[Block]:
    """Return the fenced code blocks of a Markdown page, in order."""
    found = []
    for token in MarkdownIt("commonmark").parse(page.read_text()):
        if token.type != "fence" or token.info.startswith("{"):
            continue  # MyST directives (```{toctree}) are not code
        lang, _, tail = token.info.strip().partition(" ")
        options = {m.group(1): m.group(2) or "" for m in _OPTION.finditer(tail)}
        rest = _OPTION.sub("", tail).strip()
        line = (token.map[0] + 1) if token.map else 0
        found.append(Block(page, line, lang, options, rest, token.content))
    return found


def matches(expected: str, actual: str) -> bool:
    """Whether ``actual`` is ``expected`` with each ``...`` matching anything."""
    parts = [re.escape(p) for p in expected.strip().split("...")]
    pattern = ".*?".join(parts)
    return re.fullmatch(pattern, actual.strip(), flags=re.DOTALL) is not None


def _env(workdir: Path) -> dict[str, str]:
    env = dict(os.environ)
    paths = [str(workdir), str(ROOT), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    env["NO_COLOR"] = "1"
    return env


def _run(argv: list[str], workdir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        cwd=workdir,
        env=_env(workdir),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )


def _fail(block: Block, what: str, result: subprocess.CompletedProcess[str]) -> str:
    return (
        f"{block.where}: {what} (exit {result.returncode})\n"
        f"--- stdout\n{result.stdout}--- stderr\n{result.stderr}"
    )


def _console_commands(block: Block) -> list[tuple[str, str]]:
    """Split a console block into (command, expected output) pairs."""
    commands: list[tuple[str, list[str]]] = []
    lines = block.text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("$ "):
            command = line[2:]
            while command.endswith("\\") and i + 1 < len(lines):
                i += 1
                command = command[:-1] + " " + lines[i].strip()
            commands.append((command, []))
        elif commands:
            commands[-1][1].append(line)
        else:
            msg = f"{block.where}: console output before any '$ ' command: {line!r}"
            raise AssertionError(msg)
        i += 1
    return [(c, "\n".join(out)) for c, out in commands]


def run_page(page: Path, workdir: Path) -> PageRun:
    """Run every block of ``page`` in ``workdir``; raise AssertionError on a failure."""
    run = PageRun()
    last_stdout: str | None = None
    for index, block in enumerate(blocks(page)):
        if "skip" in block.options:
            assert block.rest, f"{block.where}: {{skip}} needs a reason after it"
            run.skipped.append(block)
            continue
        if block.lang not in LANGUAGES:
            msg = (
                f"{block.where}: a ```{block.lang} block is not run: use one of "
                f"{', '.join(LANGUAGES)}, or mark it {{skip}} with a reason"
            )
            raise AssertionError(msg)
        name = block.options.get("file")
        if block.lang == "python":
            if name:
                (workdir / name).write_text(block.text)
            else:
                script = workdir / f"_block_{index}.py"
                script.write_text(block.text)
                result = _run([sys.executable, script.name], workdir)
                assert result.returncode == 0, _fail(block, "script failed", result)
                last_stdout = result.stdout
        elif block.lang == "yaml":
            document = yaml.safe_load(block.text)
            path = workdir / (name or f"_block_{index}.yaml")
            path.write_text(block.text)
            if isinstance(document, dict) and "nodes" in document:
                result = _run(
                    [sys.executable, "-m", "flowstream", "validate", path.name],
                    workdir,
                )
                if "invalid" in block.options:
                    assert result.returncode == 2, _fail(block, "valid", result)
                else:
                    assert result.returncode == 0, _fail(block, "invalid", result)
        elif block.lang == "console":
            _run_console(block, workdir)
        elif block.lang == "text" and "output" in block.options:
            assert last_stdout is not None, f"{block.where}: no python block before"
            assert matches(block.text, last_stdout), (
                f"{block.where}: output differs\n--- expected\n{block.text}"
                f"--- got\n{last_stdout}"
            )
        run.ran.append(block)
    return run


def _run_console(block: Block, workdir: Path) -> None:
    want_exit = int(block.options.get("exit", "0"))
    for command, expected in _console_commands(block):
        argv = shlex.split(command)
        if not argv or Path(argv[0]).name != "flowstream":
            msg = (
                f"{block.where}: only flowstream commands are run, got "
                f"{command!r}: mark the block {{skip}} with a reason"
            )
            raise AssertionError(msg)
        result = _run([sys.executable, "-m", "flowstream", *argv[1:]], workdir)
        assert result.returncode == want_exit, _fail(block, command, result)
        if expected.strip():
            actual = result.stdout + result.stderr
            assert matches(expected, actual), (
                f"{block.where}: output of {command!r} differs\n"
                f"--- expected\n{expected}\n--- got\n{actual}"
            )
