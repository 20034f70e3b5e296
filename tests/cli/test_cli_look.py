"""The CLI's look: data on stdout, the rest on stderr; help, nodes, progress."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from flowstream import default_registry
from flowstream.cli import cli
from flowstream.cli._display import iso_utc, print_summary
from flowstream.clirun import known_totals, progress_of
from flowstream.core.events import NodeStats
from flowstream.core.workflow import read_workflow
from flowstream.runtime.validation import validate

ROOT = Path(__file__).resolve().parents[2]
NUMBERS = str(ROOT / "examples" / "numbers.yaml")
ESC = "\x1b["

STDIO = """
name: lines
mode: stream
nodes:
  - {id: numbers, type: source.range, config: {stop: 5}}
  - {id: wrap, type: transform.map, config: {expr: "{'n': x}"}}
  - {id: print, type: stdio.sink}
connections: [numbers -> wrap, wrap -> print]
"""


def run_flowstream(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "FORCE_COLOR"}
    return subprocess.run(
        [sys.executable, "-m", "flowstream", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )


def test_a_stream_run_piped_to_jq_gets_only_records(tmp_path: Path) -> None:
    wf = tmp_path / "lines.yaml"
    wf.write_text(STDIO)
    done = run_flowstream("run", str(wf), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    # Every stdout line is a record: what `| jq` reads.
    assert [json.loads(line) for line in done.stdout.splitlines()] == [
        {"n": i} for i in range(5)
    ]
    assert "completed: run " in done.stderr
    assert "node stats:" in done.stderr


def test_a_dag_run_prints_outputs_on_stdout_and_the_summary_on_stderr() -> None:
    result = CliRunner().invoke(cli, ["run", NUMBERS])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("result.out (6 items)\n  2\n")
    assert "completed" not in result.stdout
    assert "completed: run " in result.stderr
    # Piped: plain text, no escape codes.
    assert ESC not in result.stdout + result.stderr


def test_help_texts_are_not_cut() -> None:
    env = {"COLUMNS": "80"}
    for args in (["--help"], ["run", "--help"], ["nodes", "--help"]):
        result = CliRunner().invoke(cli, args, env=env, terminal_width=80)
        assert result.exit_code == 0
        # click cuts a long short-help with "..." (the usage line has its own).
        cut = [
            line
            for line in result.output.splitlines()
            if line.rstrip().endswith(("...", "…")) and not line.startswith("Usage:")
        ]
        assert cut == [], args
        assert "``" not in result.output, args


def test_nodes_shows_no_rst_literals() -> None:
    listing = CliRunner().invoke(cli, ["nodes"])
    assert listing.exit_code == 0
    assert "``" not in listing.output
    page = CliRunner().invoke(cli, ["nodes", "--markdown"])
    assert "``" not in page.output
    # Rendered as Markdown code spans.
    assert "else `default`." in page.output


def test_nodes_type_shows_one_type_in_full() -> None:
    result = CliRunner().invoke(cli, ["nodes", "control.route"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "control.route"
    assert "  config:" in lines
    assert "    routes: dict[str, cel] (required)" in lines
    assert "  example:" in lines
    assert "transform.map" not in result.output  # no other type


def test_nodes_type_shows_the_whole_docstring_as_plain_text() -> None:
    result = CliRunner().invoke(cli, ["nodes", "file.source"])
    assert result.exit_code == 0, result.output
    # Past the first line: every paragraph of the docstring.
    assert "Blank lines are skipped." in result.output
    assert "State: offset (byte offset of the next unread line)" in result.output
    assert "`" not in result.output
    shown = CliRunner().invoke(cli, ["nodes", "http.request"]).output
    assert "(flowstream.errors.ConnectError)" in shown
    assert "transport:" not in shown  # Args: is the Python function's


def test_nodes_markdown_has_every_paragraph_rendered() -> None:
    page = CliRunner().invoke(cli, ["nodes", "--markdown"]).output
    section = page.split("## `file.source`")[1].split("\n## ")[0]
    assert "State: `offset` (byte offset of the next unread line)" in section
    http = page.split("## `http.request`")[1].split("\n## ")[0]
    assert "* a str item is the URL;" in http  # an RST list is a Markdown one
    assert "Args:" not in http
    assert "MockTransport" not in http.split("Example:")[0]
    # An RST literal block (``::``) is an indented code block.
    ws = page.split("## `ws.sink`")[1].split("\n## ")[0]
    assert "connects to port 8765:\n\n    - id: live" in ws
    assert "::" not in ws


def test_nodes_unknown_type_names_it_and_suggests() -> None:
    result = CliRunner().invoke(cli, ["nodes", "transform.mapp"])
    assert result.exit_code == 2
    assert "unknown node type 'transform.mapp'" in result.stderr
    assert "transform.map" in result.stderr
    assert "Traceback" not in result.output


def test_a_fast_failed_run_shows_no_progress_frame(tmp_path: Path) -> None:
    wf = tmp_path / "fails.yaml"
    wf.write_text(
        "name: fails\nnodes:\n"
        "  - {id: numbers, type: source.range, config: {stop: 3}}\n"
        '  - {id: boom, type: transform.map, config: {expr: "1 / (x - x)"}}\n'
        "  - {id: out, type: sink.collect}\n"
        "connections: [numbers -> boom, boom -> out]\n"
    )
    done = run_flowstream("run", str(wf), "--progress", cwd=tmp_path)
    assert done.returncode == 1
    assert "running" not in done.stderr
    assert "failed: run " in done.stderr


def test_piped_progress_is_plain_lines_with_percent(tmp_path: Path) -> None:
    wf = tmp_path / "slow.yaml"
    wf.write_text(
        "name: slow\nmode: stream\nnodes:\n"
        "  - {id: numbers, type: source.range, config: {stop: 40}}\n"
        "  - {id: wait, type: transform.throttle, config: {rate: 40, burst: 1}}\n"
        "  - {id: out, type: sink.null}\n"
        "connections: [numbers -> wait, wait -> out]\n"
    )
    done = run_flowstream("run", str(wf), "--progress", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    frames = [ln for ln in done.stderr.splitlines() if ln.startswith("running ")]
    assert frames, done.stderr
    assert "numbers in 0 out " in frames[0]
    assert "%)" in frames[0]
    assert ESC not in done.stderr


def test_piped_progress_of_a_file_source_has_its_percent(tmp_path: Path) -> None:
    (tmp_path / "in.jsonl").write_text("".join(f'{{"i": {i}}}\n' for i in range(40)))
    wf = tmp_path / "file.yaml"
    wf.write_text(
        "name: file\nmode: stream\nnodes:\n"
        "  - {id: src, type: file.source, config: {path: in.jsonl}}\n"
        "  - {id: wait, type: transform.throttle, config: {rate: 40, burst: 1}}\n"
        "  - {id: out, type: sink.null}\n"
        "connections: [src -> wait, wait -> out]\n"
    )
    done = run_flowstream("run", str(wf), "--progress", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    frames = [ln for ln in done.stderr.splitlines() if ln.startswith("running ")]
    assert frames, done.stderr
    # Read whole at once: its bytes read are all of its size.
    assert "src in 0 out 40 (100%)" in frames[0]


def test_progress_is_in_bytes_for_a_file_and_has_no_end_when_followed() -> None:
    read = NodeStats(items_out=7, bytes_read=300, bytes_total=1200)
    assert progress_of("src", read, {}) == (300, 1200)
    followed = NodeStats(items_out=7, bytes_read=300)
    assert progress_of("src", followed, {}) == (300, None)
    ranged = NodeStats(items_out=4)
    assert progress_of("numbers", ranged, {"numbers": 10}) == (4, 10)
    assert progress_of("other", ranged, {"numbers": 10}) == (0, None)


def test_known_totals_come_from_source_range() -> None:
    registry = default_registry()
    graph = validate(read_workflow(NUMBERS), registry)
    assert known_totals(graph) == {"numbers": 10}


def test_times_show_as_iso_8601_utc_with_milliseconds() -> None:
    assert iso_utc(0) == "1970-01-01T00:00:00.000Z"
    assert iso_utc(1_000_000_000.4567) == "2001-09-09T01:46:40.456Z"


def test_the_summary_on_a_terminal_is_a_rich_table() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    result = CliRunner().invoke(cli, ["run", NUMBERS, "--json"])
    assert result.exit_code == 0
    from flowstream import FlowRuntime

    run = FlowRuntime(default_registry()).run(read_workflow(NUMBERS))
    screen = Terminal()
    print_summary(run, "dag", None, err=screen)
    shown = screen.getvalue()
    assert "completed: run " in shown
    assert "items/s (run)" in shown  # the table's header
    assert "│" in shown  # drawn by rich, not as plain lines


def test_on_a_terminal_progress_has_bars_and_is_erased_before_the_table(
    tmp_path: Path,
) -> None:
    import pty

    wf = tmp_path / "slow.yaml"
    wf.write_text(
        "name: slow\nmode: stream\nnodes:\n"
        "  - {id: numbers, type: source.range, config: {stop: 40}}\n"
        "  - {id: wait, type: transform.throttle, config: {rate: 40, burst: 1}}\n"
        "  - {id: out, type: sink.null}\n"
        "connections: [numbers -> wait, wait -> out]\n"
    )
    leader, follower = pty.openpty()
    env = {**os.environ, "TERM": "xterm", "COLUMNS": "120"}
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "flowstream", "run", str(wf)],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=follower,
        env=env,
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    assert proc.wait(timeout=60) == 0
    screen = b"".join(chunks).decode("utf-8", "replace")
    assert "%" in screen  # a bar with its percentage (source.range's total)
    # Erased (transient) before the summary: no bar drawn after it.
    last_erase = screen.rfind("\x1b[2K")
    assert last_erase != -1
    after = screen[last_erase:]
    assert "completed: run " in after
    assert "%" not in after  # no progress line (the table has no %)
