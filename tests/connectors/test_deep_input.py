"""Deeply nested frames and lines go to ``error``; the service goes on.

A frame of 1,200 nested arrays is 2.4 KB, yet it exhausted the recursion
limit where it was decoded and failed the run (blaming the sink). Each source
that decodes records bounds the nesting (``max_depth``) instead.
"""

from __future__ import annotations

import asyncio
import os
from typing import TYPE_CHECKING, Any

import msgspec
import pytest
from websockets.asyncio.client import connect

from connectors._records import RecordDecoder
from connectors.files import file_source
from connectors.stdio import stdio_nodes
from connectors.websocket import ws_source
from flowstream import FlowRuntime, NodeEvent, Workflow, default_registry
from flowstream.errors import WorkflowValidationError

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

DEEP_JSON = "[" * 1200 + "]" * 1200
DEEP_MSGPACK = b"\x91" * 1200 + b"\x01"  # 1,200 one-element arrays around 1
TOO_DEEP = "too deeply nested (depth > 128)"


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def ingest(**config: Any) -> Workflow:
    return (
        Workflow("ingest", mode="stream")
        .node("src", "ws.source", {"mode": "server", **config})
        .node("pass", "transform.map", expr="x")
        .node("out", "sink.collect")
        .node("errors", "sink.collect")
        .connect("src -> pass")
        .connect("pass -> out")
        .connect("src.error -> errors")
    )


async def run_ws(frames: Sequence[str | bytes], want: int, **config: Any) -> Any:
    """Send ``frames`` to a ws.source run; stop once ``want`` items are out."""
    registry = default_registry(entry_points=False)
    registry.register(ws_source)
    runtime = FlowRuntime(registry)
    listening: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def on_event(event: Any) -> None:
        if isinstance(event, NodeEvent) and event.name == "listening":
            if not listening.done():
                listening.set_result(event.data["port"])

    runtime.bus.add_listener(on_event)
    executor = runtime.executor(ingest(**config))
    run = asyncio.ensure_future(executor.run())
    try:
        async with asyncio.timeout(20):
            port = await listening
            async with connect(f"ws://127.0.0.1:{port}") as ws:
                for frame in frames:
                    await ws.send(frame)

            def done() -> int:
                stats = executor.statistics()
                return int(stats["out"].items_in + stats["errors"].items_in)

            while done() < want and not run.done():  # noqa: ASYNC110 - bounded
                await asyncio.sleep(0.005)
    finally:
        executor.stop()
    return await run


@pytest.mark.parametrize(
    ("encoding", "deep"),
    [("json", DEEP_JSON), ("auto", DEEP_JSON), ("msgpack", DEEP_MSGPACK)],
)
async def test_a_deep_ws_frame_goes_to_error_and_the_service_goes_on(
    encoding: str, deep: str | bytes
) -> None:
    good = msgspec.msgpack.encode if encoding == "msgpack" else msgspec.json.encode
    frames = [good({"n": 1}), deep, good({"n": 2})]
    result = await run_ws(frames, 3, encoding=encoding)
    assert result.ok, result.error
    assert result.output("out") == [{"n": 1}, {"n": 2}]
    (letter,) = result.output("errors")
    assert letter["reason"] == TOO_DEEP
    assert result.stats["src"].dead_letters == 1


async def test_max_depth_is_configurable() -> None:
    frames = [msgspec.json.encode(nested(4)), msgspec.json.encode(nested(5))]
    result = await run_ws(frames, 2, max_depth=4)
    assert result.ok, result.error
    assert result.output("out") == [nested(3)]  # a frame's array is its records
    assert [e["reason"] for e in result.output("errors")] == [
        "too deeply nested (depth > 4)"
    ]


@pytest.mark.parametrize("frame", ["42", "null", "7"])
async def test_auto_reads_a_text_frame_as_json(frame: str) -> None:
    # A text frame is never MessagePack: "7" is a JSON number (as MessagePack
    # it would have been 55), "42" and "null" are not "malformed msgpack".
    result = await run_ws([frame], 1, encoding="auto", schema={"n": "int"})
    assert result.ok, result.error
    (letter,) = result.output("errors")
    assert letter["reason"].startswith("schema violation: Expected `object`")


def test_a_deep_frame_is_refused_before_or_while_decoding() -> None:
    for encoding, deep in (("json", DEEP_JSON), ("msgpack", DEEP_MSGPACK)):
        for schema in (None, {"a": "any"}):
            good, bad = RecordDecoder(encoding, schema).decode(deep)  # type: ignore[arg-type]
            assert good == []
            assert [b.reason for b in bad] == [TOO_DEEP]
    # Deep inside a field of a record that otherwise fits the schema.
    frame = msgspec.msgpack.encode({"a": nested(200)})
    _, bad = RecordDecoder("msgpack", {"a": "any"}).decode(frame)
    assert [b.reason for b in bad] == [TOO_DEEP]
    # At the limit is fine; strings full of brackets do not count.
    frame = msgspec.json.encode([nested(127), "[" * 500, {"k": "{" * 500}])
    good, bad = RecordDecoder("json").decode(frame)
    assert bad == []
    assert len(good) == 3


def test_max_depth_is_checked_in_config() -> None:
    registry = default_registry(entry_points=False)
    registry.register(ws_source)
    wf = Workflow("w", mode="stream").node(
        "src", "ws.source", mode="server", max_depth=0
    )
    with pytest.raises(WorkflowValidationError, match="max_depth"):
        FlowRuntime(registry).validate(wf)


async def test_a_deep_line_goes_to_error_in_file_source(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text('{"n": 1}\n' + DEEP_JSON + '\n{"n": 2}\n')
    registry = default_registry(entry_points=False)
    registry.register(file_source)
    wf = (
        Workflow("read")
        .node("src", "file.source", path=str(path))
        .node("out", "sink.collect")
        .node("errors", "sink.collect")
        .connect("src -> out")
        .connect("src.error -> errors")
    )
    result = await FlowRuntime(registry).arun(wf)
    assert result.ok, result.error
    assert result.output("out") == [{"n": 1}, {"n": 2}]
    (letter,) = result.output("errors")
    assert letter["reason"] == f"line 2: {TOO_DEEP}"


async def test_a_deep_line_goes_to_error_in_stdio_source() -> None:
    read_end, write_end = os.pipe()
    os.write(write_end, ('{"n": 1}\n' + DEEP_JSON + '\n{"n": 2}\n').encode())
    os.close(write_end)
    registry = default_registry(entry_points=False)
    registry.register_all(stdio_nodes(stdin=read_end))
    wf = (
        Workflow("read")
        .node("src", "stdio.source")
        .node("out", "sink.collect")
        .node("errors", "sink.collect")
        .connect("src -> out")
        .connect("src.error -> errors")
    )
    try:
        result = await FlowRuntime(registry).arun(wf)
    finally:
        os.close(read_end)
    assert result.ok, result.error
    assert result.output("out") == [{"n": 1}, {"n": 2}]
    (letter,) = result.output("errors")
    assert letter["reason"] == f"line 2: {TOO_DEEP}"
