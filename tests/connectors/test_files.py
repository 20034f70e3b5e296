from __future__ import annotations

import asyncio
import csv
import json
import logging
from typing import TYPE_CHECKING, Any

import pytest

from connectors.files import (
    CsvDecoder,
    FileSource,
    FileSourceConfig,
    JsonLinesDecoder,
    LineSplitter,
    file_sink,
    file_source,
)
from connectors.files.source import READ_BYTES
from flowstream import (
    FlowRuntime,
    NodeEvent,
    NodeState,
    Workflow,
    WorkflowExecutor,
    WorkflowStarted,
    default_registry,
)
from flowstream.errors import WorkflowValidationError
from tests.local import local

if TYPE_CHECKING:
    from pathlib import Path


@pytest.fixture
def runtime() -> FlowRuntime:
    registry = default_registry(entry_points=False)
    registry.register_all([file_source, file_sink])
    return FlowRuntime(registry)


def read_jsonl(path: Path) -> list[Any]:
    return [json.loads(line) for line in path.read_text().splitlines()]


async def wait_for(condition: Any, what: str, limit: float = 5.0) -> None:
    """Poll ``condition()`` on the loop until true (bounded, no fixed sleeps)."""
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


# --- line splitting and decoding ------------------------------------------------


def test_line_splitter_tracks_offsets_across_chunks() -> None:
    splitter = LineSplitter()
    lines = splitter.feed(b"ab\r\ncd") + splitter.feed(b"e\n\nf")
    assert [(n.number, n.offset, n.data) for n in lines] == [
        (1, 0, b"ab"),
        (2, 4, b"cde"),
        (3, 8, b""),
    ]
    assert splitter.offset == 9
    assert splitter.holding
    (last,) = splitter.finish()
    assert (last.number, last.offset, last.data) == (4, 9, b"f")
    assert splitter.offset == 10


def test_line_splitter_cuts_over_long_lines_without_buffering_them() -> None:
    splitter = LineSplitter(max_line_bytes=4)
    lines = splitter.feed(b"123456") + splitter.feed(b"789\nok\n")
    assert [(n.data, n.too_long) for n in lines] == [(b"1234", True), (b"ok", False)]
    assert lines[1].offset == 10


def test_csv_decoder_joins_quoted_fields_that_span_lines() -> None:
    decoder = CsvDecoder(None, ",", None, 1 << 20)
    splitter = LineSplitter()
    records, bad = decoder.decode(splitter.feed(b'id,text\n1,"two\nlines"\n2,x\n'))
    assert records == [{"id": "1", "text": "two\nlines"}, {"id": "2", "text": "x"}]
    assert bad == []


def test_json_lines_decoder_reports_bad_lines_with_reasons() -> None:
    decoder = JsonLinesDecoder({"a": "int"}, 100)
    lines = LineSplitter().feed(b'{"a": 1}\n{"a": "x"}\n{oops\n')
    records, bad = decoder.decode(lines)
    assert records == [{"a": 1}]
    assert [(line.number, "schema violation" in why) for line, why in bad] == [
        (2, True),
        (3, False),
    ]


@pytest.mark.parametrize(
    "data",
    [
        b'{"a": 1}\n[{"a": 2}, {"a": 3}]\n{"a": 4}\n',  # every line good
        b'{"a": 1}\n\n{"a": 2}\n',  # a blank line
        b'{"a": 1} {"a": 2}\n{"a": 3}\n',  # two values on a line
        b'{"a": 1}\n[{"a": 2}, {"a": "x"}]\n',  # a bad record in an array
        b'{"a": 1}\n' + b'{"a": 22222222}\n',  # longer than max_line_bytes
    ],
)
def test_json_lines_batch_decoding_equals_line_by_line(data: bytes) -> None:
    # Lines are decoded in one call when all are good; whatever the lines,
    # the records and bad lines are those of decoding them one at a time.
    decoder = JsonLinesDecoder({"a": "int"}, 12)
    lines = LineSplitter(max_line_bytes=12).feed(data)
    one_by_one: tuple[list[Any], list[tuple[int, str]]] = ([], [])
    for line in lines:
        records, bad = decoder.decode([line])
        one_by_one[0].extend(records)
        one_by_one[1].extend((ln.number, why) for ln, why in bad)
    records, bad = decoder.decode(lines)
    assert (records, [(ln.number, why) for ln, why in bad]) == one_by_one


@pytest.mark.parametrize("chunk", [1, 7, 64, 1 << 16])
@pytest.mark.parametrize(
    "data",
    [
        b'{"a": 1}\r\n{"a": 2}\n\n{"a": 3}\n{"a"',
        b'{"a": 1}\n{"a": 22222222}\n{"a": 2}\nnot json\n',
    ],
)
def test_line_blocks_number_lines_as_feed_does(data: bytes, chunk: int) -> None:
    # A block keeps a chunk's complete lines as one bytes; cut into lines, it
    # gives the lines (numbers, offsets, over-long marks) feed would.
    by_line, by_block = LineSplitter(max_line_bytes=12), LineSplitter(max_line_bytes=12)
    want: list[Any] = []
    got: list[Any] = []
    for at in range(0, len(data), chunk):
        piece = data[at : at + chunk]
        want += by_line.feed(piece)
        block = by_block.feed_block(piece)
        got += block if isinstance(block, list) else block.lines()
        assert by_block.offset == by_line.offset
    assert got == want
    assert by_block.finish() == by_line.finish()


BIDS_AND_PEOPLE = {
    "bid": {"auction": "int", "price": "int", "note": "str?"},
    "person": {"id": "int", "name": "str"},
}


@pytest.mark.parametrize("by_block", [True, False])
def test_variants_decode_each_kind_to_a_dict_with_its_tag(by_block: bool) -> None:
    decoder = JsonLinesDecoder(None, 1 << 10, variants=BIDS_AND_PEOPLE)
    data = (
        b'{"type": "bid", "auction": 7, "price": 3, "url": "dropped"}\n'
        b'{"type": "person", "id": 1, "name": "Ann"}\n'
        b'{"type": "bid", "auction": 8, "price": 4, "note": "n"}\n'
    )
    splitter = LineSplitter()
    lines = splitter.feed_block(data) if by_block else splitter.feed(data)
    records, bad = decoder.decode(lines)
    assert bad == []
    assert records == [
        {"type": "bid", "auction": 7, "price": 3},
        {"type": "person", "id": 1, "name": "Ann"},
        {"type": "bid", "auction": 8, "price": 4, "note": "n"},
    ]


def test_variants_send_unknown_kinds_and_violations_to_bad_lines() -> None:
    decoder = JsonLinesDecoder(None, 1 << 10, variants=BIDS_AND_PEOPLE)
    data = (
        b'{"type": "bid", "auction": 7, "price": 3}\n'
        b'{"type": "auction", "id": 5}\n'
        b'{"type": "bid", "auction": "x", "price": 3}\n'
        b'{"auction": 1, "price": 3}\n'
        b"{oops\n"
        b'[{"type": "person", "id": 2, "name": "Bo"}]\n'
    )
    records, bad = decoder.decode(LineSplitter().feed_block(data))
    assert records == [
        {"type": "bid", "auction": 7, "price": 3},
        {"type": "person", "id": 2, "name": "Bo"},
    ]
    reasons = {line.number: why for line, why in bad}
    assert sorted(reasons) == [2, 3, 4, 5]
    assert "schema violation" in reasons[2]
    assert "'auction'" in reasons[2]
    assert "schema violation" in reasons[3]
    assert "$.auction" in reasons[3]
    assert "schema violation" in reasons[4]
    assert "`type`" in reasons[4]
    assert reasons[5].startswith("malformed json")


def test_variants_of_nested_types_still_bound_the_depth() -> None:
    decoder = JsonLinesDecoder(None, 1 << 16, 8, variants={"doc": {"body": "any"}})
    deep = b'{"type": "doc", "body": ' + b"[" * 20 + b"]" * 20 + b"}"
    records, bad = decoder.decode(LineSplitter().feed_block(deep + b"\n"))
    assert records == []
    assert ["too deeply nested" in why for _, why in bad] == [True]


# --- file.source ------------------------------------------------------------------


async def test_json_lines_source_sends_bad_lines_to_the_error_port(
    runtime: FlowRuntime, tmp_path: Path
) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'{"a": 1}\n{"a": 2}\nnot json\n\n[{"a": 3}, {"a": 4}]\n{"a": 5}')
    wf = (
        Workflow("read")
        .node("src", "file.source", path=str(path))
        .node("out", "sink.collect")
        .node("errors", "sink.collect")
        .connect("src -> out")
        .connect("src.error -> errors")
    )
    executor = local(runtime.executor(wf))
    result = await executor.run()
    assert result.ok, result.error
    assert result.output("out") == [{"a": i} for i in range(1, 6)]
    (letter,) = result.output("errors")
    assert letter["node"] == "src"
    assert letter["reason"].startswith("line 3: malformed json")
    assert letter["item"] == {
        "source": str(path),
        "line": 3,
        "offset": 18,
        "text": "not json",
    }
    # The offset of the next line: the whole file (the last line had no break).
    state = executor.state.for_node("src")
    assert state["offset"] == path.stat().st_size
    assert state["line"] == 6


async def test_csv_source_with_a_schema_converts_cells(
    runtime: FlowRuntime, tmp_path: Path
) -> None:
    path = tmp_path / "people.csv"
    path.write_text(
        'name,age,note\nada,36,"first, programmer"\nbob,x,\ncy,7,"a\nb"\nshort\n'
        'dee,1,"quoted"after\n'
    )
    wf = (
        Workflow("csv")
        .node(
            "src",
            "file.source",
            path=str(path),
            schema={"name": "str", "age": "int", "note": "str?"},
        )
        .node("out", "sink.collect")
        .connect("src -> out")
    )
    executor = local(runtime.executor(wf))
    result = await executor.run()
    assert result.ok, result.error
    assert result.output("out") == [
        {"name": "ada", "age": 36, "note": "first, programmer"},
        {"name": "cy", "age": 7, "note": "a\nb"},
    ]
    reasons = [d.reason for d in result.dead_letters]
    assert reasons[0].startswith("line 3: schema violation")
    assert reasons[1] == "line 6: expected 3 fields, got 1"
    assert reasons[2].startswith("line 7: malformed csv: ',' expected after '\"'")
    assert executor.state.for_node("src")["fields"] == ["name", "age", "note"]


async def test_csv_source_with_given_fields_reads_every_line(
    runtime: FlowRuntime, tmp_path: Path
) -> None:
    path = tmp_path / "rows.txt"
    path.write_text("1;a\n2;b\n")
    wf = (
        Workflow("csv")
        .node(
            "src",
            "file.source",
            path=str(path),
            format="csv",
            delimiter=";",
            fields=["n", "s"],
        )
        .node("out", "sink.collect")
        .connect("src -> out")
    )
    result = await runtime.arun(wf)
    assert result.output("out") == [{"n": "1", "s": "a"}, {"n": "2", "s": "b"}]


async def test_over_long_lines_are_dead_lettered_and_reading_goes_on(
    runtime: FlowRuntime, tmp_path: Path
) -> None:
    path = tmp_path / "long.jsonl"
    path.write_text('{"a": 1}\n' + '"' + "x" * 500 + '"\n{"a": 2}\n')
    wf = (
        Workflow("long")
        .node("src", "file.source", path=str(path), max_line_bytes=100)
        .node("out", "sink.collect")
        .connect("src -> out")
    )
    result = await runtime.arun(wf)
    assert result.output("out") == [{"a": 1}, {"a": 2}]
    (letter,) = result.dead_letters
    assert letter.reason == "line 2: longer than max_line_bytes=100"


class Context:
    """A complete stand-in for the runtime's NodeContext, to drive a node by hand."""

    def __init__(self, state: dict[str, Any] | None = None) -> None:
        self.run_id = "run"
        self.node_id = "node"
        self.node_type = "test"
        self.state: NodeState = state if state is not None else {}
        self.logger = logging.getLogger("test")
        self.stopping = asyncio.Event()
        self.letters: list[tuple[Any, str]] = []
        self.checkpointing = False
        self.restored_epoch = 0
        self.instance = 0
        self.instances = 1
        self.progress: list[tuple[int, int | None]] = []

    def emit(self, port: str, item: Any) -> None:
        raise AssertionError(port)

    def emit_many(self, port: str, items: list[Any]) -> None:
        raise AssertionError(port)

    def read_progress(self, done: int, total: int | None = None) -> None:
        self.progress.append((done, total))

    def on_barrier(self, hook: Any) -> None:
        raise AssertionError(hook)

    def on_commit(self, hook: Any) -> None:
        raise AssertionError(hook)

    def track_watermark(self, read: Any) -> None:
        raise AssertionError(read)

    def dead_letter(self, item: Any, reason: str) -> None:
        self.letters.append((item, reason))

    def event(self, name: str, data: Any = None) -> None:
        pass


async def test_a_source_resumes_from_the_offset_in_its_state(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text('{"a": 1}\n{"a": 2}\n{"a": 3}\n')
    # As a restored checkpoint would leave it: two lines consumed.
    ctx = Context({"offset": 18, "line": 2})
    got = []
    async with FileSource(FileSourceConfig(path=str(path))) as source:
        await source.initialize(ctx)
        async for batch in source.execute(ctx=ctx):
            got += batch
    assert got == [{"a": 3}]
    assert ctx.state == {"offset": 27, "line": 3}


@pytest.mark.parametrize("suffix", ["jsonl", "csv"])
async def test_a_source_reports_bytes_read_of_the_file_size(
    runtime: FlowRuntime, tmp_path: Path, suffix: str
) -> None:
    path = tmp_path / f"in.{suffix}"
    path.write_text('{"a": 1}\n{"a": 2}\n' if suffix == "jsonl" else "a,b\n1,2\n3,4\n")
    size = path.stat().st_size
    wf = (
        Workflow("sized")
        .node("src", "file.source", path=str(path))
        .node("out", "sink.collect")
        .connect("src -> out")
    )
    result = await runtime.arun(wf)
    assert result.status == "completed", result.error
    stats = result.stats["src"]
    assert (stats.bytes_read, stats.bytes_total) == (size, size)
    # Nodes that read no input report no position.
    assert result.stats["out"].bytes_read is None


async def test_progress_is_reported_per_read_from_the_resumed_offset(
    tmp_path: Path,
) -> None:
    path = tmp_path / "big.jsonl"
    line = b'{"pad": "' + b"x" * 100 + b'"}\n'
    path.write_bytes(line * (2 * READ_BYTES // len(line) + 5))
    size = path.stat().st_size
    ctx = Context({"offset": len(line), "line": 1})
    seen = []
    async with FileSource(FileSourceConfig(path=str(path))) as source:
        await source.initialize(ctx)
        async for _ in source.execute(ctx=ctx):
            seen.append(ctx.progress[-1])
    # From the checkpointed offset, one report per read (not per item or
    # batch), each of the file's size; the last at its end.
    assert ctx.progress[0] == (len(line), size)
    assert ctx.progress[1] == (len(line) + READ_BYTES, size)
    assert ctx.progress[-1] == (size, size)
    assert len(ctx.progress) == 5  # 3 reads with data, the empty one, the start
    assert (len(line) + READ_BYTES, size) in seen  # mid-file, before the end


async def test_a_followed_file_has_no_total(tmp_path: Path) -> None:
    path = tmp_path / "tail.jsonl"
    path.write_text('{"a": 1}\n')
    ctx = Context()
    async with FileSource(
        FileSourceConfig(path=str(path), follow=True, poll_interval_ms=5)
    ) as source:
        await source.initialize(ctx)
        async for _ in source.execute(ctx=ctx):
            ctx.stopping.set()
    assert ctx.progress[-1] == (path.stat().st_size, None)
    assert all(total is None for _, total in ctx.progress)


@pytest.mark.parametrize("fuse", [True, False])
async def test_follow_tails_a_growing_file_and_a_stop_flushes_the_sink(
    runtime: FlowRuntime, tmp_path: Path, fuse: bool
) -> None:
    src, dst = tmp_path / "growing.jsonl", tmp_path / "copy.jsonl"
    src.write_text('{"n": 0}\n')
    wf = (
        Workflow("tail", mode="stream")
        .node("src", "file.source", path=str(src), follow=True, poll_interval_ms=5)
        .node("dst", "file.sink", path=str(dst))
        .connect("src -> dst")
    )
    executor = local(runtime.executor(wf, fuse=fuse))
    run = asyncio.ensure_future(executor.run())
    await wait_for(lambda: items_in(executor, "dst") >= 1, "the first record")
    with src.open("a") as f:
        for n in range(1, 50):
            f.write(json.dumps({"n": n}) + "\n")
            f.flush()
        f.write('{"n": 50, "partial": ')  # no line break yet: not emitted
        f.flush()
        await wait_for(lambda: items_in(executor, "dst") >= 50, "the appended lines")
        f.write("true}\n")
    await wait_for(lambda: items_in(executor, "dst") >= 51, "the completed line")
    executor.stop()
    result = await run
    assert result.ok, result.error
    written = read_jsonl(dst)
    assert written[:50] == [{"n": n} for n in range(50)]
    assert written[50] == {"n": 50, "partial": True}
    assert executor.state.for_node("src")["offset"] == src.stat().st_size
    assert executor.state.for_node("dst")["offset"] == dst.stat().st_size


async def test_follow_starts_over_when_the_file_is_truncated(
    runtime: FlowRuntime, tmp_path: Path
) -> None:
    path = tmp_path / "log.jsonl"
    path.write_text('{"n": 1}\n{"n": 2}\n')
    wf = (
        Workflow("tail", mode="stream")
        .node("src", "file.source", path=str(path), follow=True, poll_interval_ms=5)
        .node("out", "sink.collect")
        .connect("src -> out")
    )
    executor = local(runtime.executor(wf))
    run = asyncio.ensure_future(executor.run())
    await wait_for(lambda: items_in(executor, "out") >= 2, "the first lines")
    path.write_text('{"n": 3}\n')
    await wait_for(lambda: items_in(executor, "out") >= 3, "the truncated file")
    executor.stop()
    result = await run
    assert result.output("out") == [{"n": 1}, {"n": 2}, {"n": 3}]


async def test_follow_moves_to_a_new_file_put_at_the_path(
    runtime: FlowRuntime, tmp_path: Path
) -> None:
    path = tmp_path / "app.csv"
    path.write_text("n\n1\n")
    wf = (
        Workflow("tail", mode="stream")
        .node("src", "file.source", path=str(path), follow=True, poll_interval_ms=5)
        .node("out", "sink.collect")
        .connect("src -> out")
    )
    events: list[str] = []
    runtime.bus.add_listener(
        lambda e: events.append(e.name) if isinstance(e, NodeEvent) else None
    )
    executor = local(runtime.executor(wf))
    run = asyncio.ensure_future(executor.run())
    await wait_for(lambda: items_in(executor, "out") >= 1, "the first row")
    path.rename(tmp_path / "app.csv.1")
    path.write_text("n\n2\n")  # a new file, with its own header
    await wait_for(lambda: items_in(executor, "out") >= 2, "the new file's row")
    executor.stop()
    result = await run
    assert result.output("out") == [{"n": "1"}, {"n": "2"}]
    assert events == ["file.rotated"]


async def test_start_at_end_reads_only_what_is_appended(
    runtime: FlowRuntime, tmp_path: Path
) -> None:
    path = tmp_path / "log.csv"
    path.write_text("old,new\ntrue,false\n")
    wf = (
        Workflow("tail", mode="stream")
        .node(
            "src",
            "file.source",
            path=str(path),
            follow=True,
            start_at="end",
            poll_interval_ms=5,
        )
        .node("out", "sink.collect")
        .connect("src -> out")
    )
    started: list[WorkflowStarted] = []
    runtime.bus.add_listener(
        lambda e: started.append(e) if isinstance(e, WorkflowStarted) else None
    )
    executor = local(runtime.executor(wf))
    run = asyncio.ensure_future(executor.run())
    await wait_for(lambda: bool(started), "the run to start")
    with path.open("a") as f:
        f.write("false,true\n")
    await wait_for(lambda: items_in(executor, "out") >= 1, "the appended line")
    executor.stop()
    result = await run
    # The header was read although reading started past it.
    assert result.output("out") == [{"old": "false", "new": "true"}]


async def test_a_missing_file_fails_the_run_naming_the_node(
    runtime: FlowRuntime, tmp_path: Path
) -> None:
    wf = (
        Workflow("missing")
        .node("src", "file.source", path=str(tmp_path / "nope.jsonl"))
        .node("out", "sink.collect")
        .connect("src -> out")
    )
    result = await runtime.arun(wf)
    assert result.status == "failed"
    assert result.error is not None
    assert "'src'" in result.error
    assert "nope.jsonl" in result.error


# --- file.sink --------------------------------------------------------------------


async def test_json_lines_sink_appends_and_keeps_its_offset(
    runtime: FlowRuntime, tmp_path: Path
) -> None:
    path = tmp_path / "out.jsonl"
    path.write_text('{"earlier": 1}')  # a partial last line, from a crash
    for values in ([{"a": 1}, {"a": [1, 2]}], [{"a": 3}]):
        wf = (
            Workflow("write")
            .node("src", "source.values", values=values)
            .node("dst", "file.sink", path=str(path))
            .connect("src -> dst")
        )
        executor = local(runtime.executor(wf))
        result = await executor.run()
        assert result.ok, result.error
        assert executor.state.for_node("dst")["offset"] == path.stat().st_size
    assert read_jsonl(path) == [{"earlier": 1}, {"a": 1}, {"a": [1, 2]}, {"a": 3}]


def unencodable_odd(x: int) -> Any:
    return complex(x) if x % 2 else x


async def test_items_with_no_json_form_are_dead_lettered(
    runtime: FlowRuntime, tmp_path: Path
) -> None:
    path = tmp_path / "out.jsonl"
    wf = (
        Workflow("write")
        .node("src", "source.range", stop=4)
        .node("odd", "transform.map", fn=f"{__name__}:unencodable_odd")
        .node("dst", "file.sink", path=str(path))
        .connect("src -> odd")
        .connect("odd -> dst")
    )
    executor = local(runtime.executor(wf))
    result = await executor.run()
    assert result.ok, result.error
    assert read_jsonl(path) == [0, 2]
    assert [d.item for d in result.dead_letters] == [1 + 0j, 3 + 0j]
    assert all(
        d.reason.startswith("cannot encode as JSON") for d in result.dead_letters
    )
    assert executor.state.for_node("dst") == {
        "offset": path.stat().st_size,
        "records": 2,
    }


async def test_csv_sink_writes_one_header_and_dead_letters_odd_records(
    runtime: FlowRuntime, tmp_path: Path
) -> None:
    path = tmp_path / "out.csv"
    runs = [
        [{"id": 1, "tags": ["a"], "ok": True}, {"id": 2, "ok": None}, 7],
        [{"id": 3, "ok": False}, {"id": 4, "extra": 1}],
    ]
    letters = []
    for values in runs:
        wf = (
            Workflow("csv")
            .node("src", "source.values", values=values)
            .node("dst", "file.sink", path=str(path))
            .connect("src -> dst")
        )
        result = await runtime.arun(wf)
        assert result.ok, result.error
        letters += [d.reason for d in result.dead_letters]
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    assert rows == [
        ["id", "tags", "ok"],
        ["1", '["a"]', "true"],
        ["2", "", ""],
        ["3", "", "false"],
    ]
    assert letters == [
        "a CSV row needs a record, got int",
        "fields not among the CSV columns: extra",
    ]


async def test_csv_round_trip_through_sink_and_source(
    runtime: FlowRuntime, tmp_path: Path
) -> None:
    path = tmp_path / "data.csv"
    records = [{"id": i, "score": i / 2, "name": f"n{i}"} for i in range(100)]
    write = (
        Workflow("write")
        .node("src", "source.values", values=records)
        .node("dst", "file.sink", path=str(path), fsync="batch")
        .connect("src -> dst")
    )
    assert (await runtime.arun(write)).ok
    read = (
        Workflow("read")
        .node(
            "src",
            "file.source",
            path=str(path),
            schema={"id": "int", "score": "float", "name": "str"},
        )
        .node("out", "sink.collect")
        .connect("src -> out")
    )
    result = await runtime.arun(read)
    assert result.output("out") == records


# --- config -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("node_type", "config", "field", "words"),
    [
        ("file.source", {"path": ""}, "config.path", "path must not be empty"),
        ("file.source", {"path": "x", "follow": "yes"}, "config.follow", "bool"),
        (
            "file.source",
            {"path": "x", "poll_interval_ms": 0},
            "config.poll_interval_ms",
            "> 0",
        ),
        ("file.source", {"path": "x.jsonl", "fields": ["a"]}, "config.fields", "csv"),
        ("file.source", {"path": "x", "schema": {"a": "integer"}}, "config", "type"),
        ("file.source", {"path": "x", "pth": 1}, "config.pth", "unknown field"),
        (
            "file.source",
            {"path": "x", "variants": {"bid": {"price": "money"}}},
            "config",
            "variant 'bid', field 'price': unknown type 'money'",
        ),
        (
            "file.source",
            {"path": "x", "variants": {"bid": {"type": "str"}}},
            "config",
            "declares the tag field 'type'",
        ),
        (
            "file.source",
            {"path": "x.csv", "variants": {"bid": {"a": "int"}}},
            "config.variants",
            "jsonl format only",
        ),
        (
            "file.source",
            {"path": "x", "schema": {"a": "int"}, "variants": {"b": {}}},
            "config",
            "not both",
        ),
        (
            "file.sink",
            {"path": "x.csv", "delimiter": "ab"},
            "config.delimiter",
            "delimiter",
        ),
        ("file.sink", {"path": "x", "commit": "truncate"}, "config.commit", "enum"),
        ("file.sink", {}, "config.path", "missing required field"),
    ],
)
def test_bad_config_names_the_node_and_field(
    runtime: FlowRuntime,
    node_type: str,
    config: dict[str, Any],
    field: str,
    words: str,
) -> None:
    wf = Workflow("bad").node("f", node_type, config)
    if node_type == "file.sink":
        wf.node("src", "source.values", values=[]).connect("src -> f")
    with pytest.raises(WorkflowValidationError) as info:
        runtime.validate(wf)
    (problem,) = info.value.problems
    assert problem.node == "f"
    assert problem.field == field
    assert words in problem.message


async def test_follow_waits_for_a_missing_file_and_says_so_once(
    runtime: FlowRuntime, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Like `tail -F`: no "[Errno 2]" at start; the file is read once it exists.
    path = tmp_path / "later.jsonl"
    wf = (
        Workflow("tail", mode="stream")
        .node("src", "file.source", path=str(path), follow=True, poll_interval_ms=5)
        .node("out", "sink.collect")
        .connect("src -> out")
    )
    events: list[str] = []
    runtime.bus.add_listener(
        lambda e: events.append(e.name) if isinstance(e, NodeEvent) else None
    )
    executor = local(runtime.executor(wf))
    with caplog.at_level(logging.INFO):
        run = asyncio.ensure_future(executor.run())
        await wait_for(lambda: "file.waiting" in events, "the waiting event")
        assert not run.done()
        path.write_text('{"n": 1}\n')
        await wait_for(lambda: items_in(executor, "out") >= 1, "the new file")
        executor.stop()
        result = await run
    assert result.ok, result.error
    assert result.output("out") == [{"n": 1}]
    assert events.count("file.waiting") == 1
    assert events.count("file.appeared") == 1
    waiting = [r for r in caplog.records if "waiting for it" in r.getMessage()]
    assert len(waiting) == 1


async def test_follow_on_a_missing_file_stops_cleanly(
    runtime: FlowRuntime, tmp_path: Path
) -> None:
    path = tmp_path / "never.jsonl"
    wf = (
        Workflow("tail", mode="stream")
        .node("src", "file.source", path=str(path), follow=True, poll_interval_ms=5)
        .node("out", "sink.collect")
        .connect("src -> out")
    )
    events: list[str] = []
    runtime.bus.add_listener(
        lambda e: events.append(e.name) if isinstance(e, NodeEvent) else None
    )
    executor = local(runtime.executor(wf))
    run = asyncio.ensure_future(executor.run())
    await wait_for(lambda: "file.waiting" in events, "the waiting event")
    executor.stop()
    result = await run
    assert result.ok, result.error
    assert result.output("out") == []


async def test_a_missing_file_without_follow_still_fails(
    runtime: FlowRuntime, tmp_path: Path
) -> None:
    wf = (
        Workflow("read")
        .node("src", "file.source", path=str(tmp_path / "absent.jsonl"))
        .node("out", "sink.collect")
        .connect("src -> out")
    )
    result = await runtime.arun(wf)
    assert not result.ok
    assert "absent.jsonl" in (result.error or "")
