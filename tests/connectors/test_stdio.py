from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from connectors.stdio import stdio_nodes, stdio_sink, stdio_source
from flowstream import (
    FlowRuntime,
    Workflow,
    WorkflowExecutor,
    default_registry,
    write_workflow,
)
from flowstream.errors import WorkflowValidationError
from tests.local import local

ROOT = Path(__file__).resolve().parents[2]

RUNNER = """\
import asyncio, signal, sys

from flowstream import FlowRuntime, default_registry, read_workflow
from connectors.files import file_sink
from connectors.stdio import stdio_sink, stdio_source


async def main() -> int:
    registry = default_registry(entry_points=False)
    registry.register_all([stdio_source, stdio_sink, file_sink])
    executor = FlowRuntime(registry).executor(read_workflow(sys.argv[1]))
    # What the CLI does: the first SIGTERM drains the run.
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, executor.stop)
    result = await executor.run()
    print(f"status={result.status} error={result.error}", file=sys.stderr)
    for letter in result.dead_letters:
        print(f"dead: {letter.reason}", file=sys.stderr)
    print(f"state={dict(executor.state.snapshot())}", file=sys.stderr)
    return 0 if result.ok else 1


sys.exit(asyncio.run(main()))
"""


def registry_with(**streams: Any) -> FlowRuntime:
    registry = default_registry(entry_points=False)
    registry.register_all(stdio_nodes(**streams))
    return FlowRuntime(registry)


def echo(mode: str = "dag") -> Workflow:
    return (
        Workflow("echo", mode=mode)  # type: ignore[arg-type]
        .node("src", "stdio.source")
        .node("out", "stdio.sink")
        .connect("src -> out")
    )


async def wait_for(condition: Any, what: str, limit: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not condition():
        if loop.time() > deadline:
            msg = f"timed out waiting for {what}"
            raise AssertionError(msg)
        await asyncio.sleep(0.005)


def items_in(executor: WorkflowExecutor, node_id: str) -> int:
    stats = executor.statistics().get(node_id)
    return stats.items_in if stats is not None else 0


# --- in process -------------------------------------------------------------------


async def test_a_pipe_is_read_without_blocking_and_left_blocking() -> None:
    read_end, write_end = os.pipe()
    out = io.BytesIO()
    try:
        os.write(write_end, b'{"a": 1}\nnope\n[2, 3]\n{"last": true}')
        os.close(write_end)
        write_end = -1
        result = await registry_with(stdin=read_end, stdout=out).arun(echo())
        assert result.ok, result.error
        assert os.get_blocking(read_end)  # restored after connect_read_pipe
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)
    lines = out.getvalue().decode().splitlines()
    assert [json.loads(line) for line in lines] == [{"a": 1}, 2, 3, {"last": True}]
    (letter,) = result.dead_letters
    assert letter.reason.startswith("line 2: malformed json")
    assert letter.item["line"] == 2


async def test_a_regular_file_is_read_in_a_thread(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text("".join(f'{{"n": {n}}}\n' for n in range(5000)))
    out = io.BytesIO()
    fd = os.open(path, os.O_RDONLY)
    try:
        runtime = registry_with(stdin=fd, stdout=out)
        executor = local(runtime.executor(echo()))
        result = await executor.run()
    finally:
        os.close(fd)
    assert result.ok, result.error
    got = [json.loads(line) for line in out.getvalue().splitlines()]
    assert got == [{"n": n} for n in range(5000)]
    assert executor.state.for_node("src") == {
        "offset": path.stat().st_size,
        "line": 5000,
    }
    assert executor.state.for_node("out") == {"records": 5000}


async def test_a_stop_ends_a_source_waiting_on_an_open_pipe() -> None:
    read_end, write_end = os.pipe()
    out = io.BytesIO()
    try:
        executor = local(
            registry_with(stdin=read_end, stdout=out).executor(echo("stream"))
        )
        run = asyncio.ensure_future(executor.run())
        os.write(write_end, b'{"a": 1}\n{"a": 2}\n{"a": 3')  # the last is partial
        await wait_for(lambda: items_in(executor, "out") >= 2, "two records")
        executor.stop()
        result = await run
    finally:
        os.close(read_end)
        os.close(write_end)
    assert result.ok, result.error
    assert out.getvalue() == b'{"a":1}\n{"a":2}\n'


def test_bad_config_names_the_node_and_field() -> None:
    registry = default_registry(entry_points=False)
    registry.register_all([stdio_source, stdio_sink])
    wf = (
        Workflow("bad")
        .node("src", "stdio.source", max_line_bytes=0)
        .node("out", "stdio.sink", stream="stdlog")
        .connect("src -> out")
    )
    with pytest.raises(WorkflowValidationError) as info:
        FlowRuntime(registry).validate(wf)
    problems = {(p.node, p.field): p.message for p in info.value.problems}
    expected = "max_line_bytes must be >= 1, got 0"
    assert problems[("src", "config.max_line_bytes")] == expected
    assert "stdlog" in problems[("out", "config.stream")]


# --- a subprocess -------------------------------------------------------------------


@pytest.fixture
def runner(tmp_path: Path) -> Path:
    script = tmp_path / "runner.py"
    script.write_text(RUNNER)
    return script


async def spawn(runner: Path, workflow: Path, stdin: Any) -> asyncio.subprocess.Process:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-W",
        "default::ResourceWarning",
        str(runner),
        str(workflow),
        stdin=stdin,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=workflow.parent,
        env=env,
    )


async def test_a_subprocess_echoes_stdin_and_reports_bad_lines(
    runner: Path, tmp_path: Path
) -> None:
    workflow = tmp_path / "echo.yaml"
    write_workflow(
        echo()
        .node("errors", "stdio.sink", stream="stderr")
        .connect("src.error -> errors"),
        workflow,
    )
    proc = await spawn(runner, workflow, asyncio.subprocess.PIPE)
    async with asyncio.timeout(30):
        out, err = await proc.communicate(b'{"a": 1}\n{broken\n{"b": 2}\n')
    text = err.decode()
    assert proc.returncode == 0, text
    assert out == b'{"a":1}\n{"b":2}\n'
    assert '"reason":"line 2: malformed json' in text
    assert "status=completed" in text
    assert "Warning" not in text


async def test_sigterm_in_stream_mode_drains_and_flushes_every_sink(
    runner: Path, tmp_path: Path
) -> None:
    workflow = tmp_path / "tee.yaml"
    copy = tmp_path / "copy.jsonl"
    write_workflow(
        echo("stream").node("save", "file.sink", path=str(copy)).connect("src -> save"),
        workflow,
    )
    proc = await spawn(runner, workflow, asyncio.subprocess.PIPE)
    assert proc.stdin is not None
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(30):
            proc.stdin.write(b"".join(b'{"n": %d}\n' % n for n in range(100)))
            await proc.stdin.drain()
            lines = [await proc.stdout.readline() for _ in range(100)]
            # Every record came through while stdin stays open: now drain.
            proc.send_signal(signal.SIGTERM)
            rest = await proc.stdout.read()
            err = (await proc.communicate())[1].decode()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err
    assert [json.loads(line) for line in lines] == [{"n": n} for n in range(100)]
    assert rest == b""
    assert "status=completed" in err
    assert [json.loads(line) for line in copy.read_text().splitlines()] == [
        {"n": n} for n in range(100)
    ]
    # The file sink's committed offset is the whole file: nothing was left behind.
    assert f"'save': {{'offset': {copy.stat().st_size}, 'records': 100}}" in err
    assert "Warning" not in err


async def test_a_subprocess_reads_a_redirected_file_in_a_thread(
    runner: Path, tmp_path: Path
) -> None:
    workflow = tmp_path / "echo.yaml"
    write_workflow(echo(), workflow)
    data = tmp_path / "in.jsonl"
    data.write_text("".join(f"[{n}]\n" for n in range(3)))
    with data.open("rb") as stdin:
        proc = await spawn(runner, workflow, stdin)
        async with asyncio.timeout(30):
            out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert out == b"0\n1\n2\n"
