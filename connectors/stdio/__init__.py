"""Standard input and output as JSON Lines: ``stdio.source`` and ``stdio.sink``.

Reading stdin never blocks the event loop. A pipe or socket (``cat x |
flowstream run ...``) is read through ``loop.connect_read_pipe``:
non-blocking, with flow control, and a graceful stop cancels the wait. A
terminal or a regular file (``< data.jsonl``) is read by a daemon thread
that hands over at most a few chunks at a time (a terminal cannot be made
non-blocking without also changing stdout, which shares its file
description; a daemon thread blocked on a terminal never holds up the
process's exit).

Writing happens in a worker thread, so a slow reader of stdout slows the
pipeline (backpressure) without blocking the loop.
"""

from __future__ import annotations

import asyncio
import os
import stat
import sys
import threading
from collections import deque
from typing import TYPE_CHECKING, Any, BinaryIO, Literal

import msgspec

from flowstream import DEFAULT_MAX_DEPTH, NodeSpec, node
from flowstream.errors import ConnectionLost

from .._records import record_type
from ..files import JsonLinesDecoder, LineSplitter, bad_line, encode_json_lines

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from flowstream import NodeContext

__all__ = [
    "NODES",
    "StdioSink",
    "StdioSinkConfig",
    "StdioSource",
    "StdioSourceConfig",
    "stdio_nodes",
    "stdio_sink",
    "stdio_source",
]

CHUNK_BYTES = 1 << 16
"""Most bytes read from stdin at a time."""

THREAD_CHUNKS = 4
"""Chunks a reader thread may hand over before the source takes them."""


class _PipeReader:
    """A pipe or socket, read without blocking through the event loop."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._transport: asyncio.ReadTransport | None = None
        self._stream: asyncio.StreamReader | None = None

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        # A duplicate, so closing the transport leaves the process's stdin be.
        pipe = os.fdopen(os.dup(self._fd), "rb", buffering=0)
        try:
            stream = asyncio.StreamReader(limit=4 * CHUNK_BYTES)
            protocol = asyncio.StreamReaderProtocol(stream)
            self._transport, _ = await loop.connect_read_pipe(lambda: protocol, pipe)
        except BaseException:
            pipe.close()
            raise
        self._stream = stream

    async def read(self) -> bytes:
        assert self._stream is not None, "open was not called"
        return await self._stream.read(CHUNK_BYTES)

    async def aclose(self) -> None:
        transport, self._transport = self._transport, None
        if transport is None:
            return
        transport.close()
        # The transport closes the duplicate in a callback: let it run now.
        await asyncio.sleep(0)
        # connect_read_pipe made the shared file description non-blocking.
        os.set_blocking(self._fd, True)


class _ThreadReader:
    """A terminal or a regular file, read by a daemon thread.

    The thread hands chunks to the loop and may run at most `THREAD_CHUNKS`
    ahead of the source (a semaphore), so memory stays bounded.
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._slots = threading.Semaphore(THREAD_CHUNKS)
        self._chunks: deque[bytes | OSError] = deque()
        self._ready = asyncio.Event()
        self._closed = False

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        thread = threading.Thread(
            target=self._pump, args=(loop,), name="flowstream-stdin", daemon=True
        )
        thread.start()

    def _pump(self, loop: asyncio.AbstractEventLoop) -> None:
        while True:
            self._slots.acquire()
            if self._closed:
                return
            data: bytes | OSError
            try:
                data = os.read(self._fd, CHUNK_BYTES)
            except OSError as exc:
                data = exc
            try:
                loop.call_soon_threadsafe(self._put, data)
            except RuntimeError:  # the loop is closed: nobody is reading
                return
            if not data or isinstance(data, OSError):
                return

    def _put(self, data: bytes | OSError) -> None:
        self._chunks.append(data)
        self._ready.set()

    async def read(self) -> bytes:
        while not self._chunks:
            self._ready.clear()
            await self._ready.wait()
        data = self._chunks.popleft()
        self._slots.release()
        if isinstance(data, OSError):
            msg = f"reading stdin failed: {data}"
            raise ConnectionLost(msg) from data
        return data

    async def aclose(self) -> None:
        self._closed = True
        self._slots.release()  # wakes a thread waiting for a slot, to exit


def _reader_for(fd: int) -> _PipeReader | _ThreadReader:
    mode = os.fstat(fd).st_mode
    if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
        return _PipeReader(fd)
    if stat.S_ISCHR(mode) and not os.isatty(fd):
        return _PipeReader(fd)  # /dev/null and the like
    return _ThreadReader(fd)


class StdioSourceConfig(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True
):
    """Config of ``stdio.source``.

    Attributes:
        schema: Field name -> type name (see `connectors._records`);
            records that break it go to the ``error`` port.
        max_line_bytes: A longer line goes to the ``error`` port.
        max_depth: Deepest nesting of arrays/objects in a line; a deeper
            line goes to ``error`` as "too deeply nested" (the node goes on).
    """

    schema: dict[str, str] | None = None
    max_line_bytes: int = 1 << 20
    max_depth: int = DEFAULT_MAX_DEPTH

    def __post_init__(self) -> None:
        if self.max_line_bytes < 1:
            msg = f"max_line_bytes must be >= 1, got {self.max_line_bytes}"
            raise ValueError(msg)
        if self.max_depth < 1:
            msg = f"max_depth must be >= 1, got {self.max_depth}"
            raise ValueError(msg)
        if self.schema is not None:
            record_type(self.schema)  # names an unknown type name


class StdioSource:
    """Read JSON Lines from standard input until it closes.

    Emits a record per line (a line holding an array gives one per
    element); blank lines are skipped; a bad line goes to the ``error`` port
    with the reason and line number, and reading goes on. A last line
    without a line break counts. The source ends when stdin closes (DAG
    mode), or, in stream mode, when the run is stopped: a graceful stop
    cancels the wait for more input; records of complete lines already
    read were emitted.

    State: ``offset`` (bytes consumed), ``line`` (lines consumed).
    Delivery: at-most-once across restarts (stdin cannot be replayed).

    Example:
        ``cat events.jsonl | flowstream run wf.yaml`` with ``{id: input,
        type: stdio.source}`` emits each event of the file.
    """

    fd: int | None = None
    """The descriptor to read; None is stdin (`stdio_nodes` sets another)."""

    def __init__(self, config: StdioSourceConfig) -> None:
        self.config = config
        self._reader: _PipeReader | _ThreadReader | None = None

    async def __aenter__(self) -> StdioSource:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def initialize(self, ctx: NodeContext) -> None:
        """Start reading stdin (as a pipe, or in a thread)."""
        fd = self.fd if self.fd is not None else sys.stdin.fileno()
        reader = _reader_for(fd)
        await reader.open()
        self._reader = reader

    async def execute(self, *, ctx: NodeContext) -> AsyncIterator[list[Any]]:
        """Emit the records of each chunk read, as one batch."""
        reader = self._reader
        assert reader is not None, "initialize was not called"
        cfg = self.config
        state = ctx.state
        splitter = LineSplitter(
            state.get("offset", 0), state.get("line", 0), cfg.max_line_bytes
        )
        decoder = JsonLinesDecoder(cfg.schema, cfg.max_line_bytes, cfg.max_depth)
        while True:
            data = await reader.read()
            lines = splitter.feed(data) if data else splitter.finish()
            if lines:
                records, bad = decoder.decode(lines)
                for line, reason in bad:
                    item, text = bad_line("<stdin>", line, reason)
                    ctx.dead_letter(item, text)
                state["offset"], state["line"] = splitter.offset, splitter.line
                if records or bad:
                    yield records
            if not data:
                return

    async def shutdown(self) -> None:
        """Stop reading stdin."""
        await self.aclose()

    async def aclose(self) -> None:
        """Stop reading stdin; idempotent."""
        reader, self._reader = self._reader, None
        if reader is not None:
            await reader.aclose()


stdio_source = node("stdio.source", config=StdioSourceConfig, batched=True)(StdioSource)


class StdioSinkConfig(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True
):
    """Config of ``stdio.sink``.

    Attributes:
        stream: ``stdout``, or ``stderr`` (for dead letters, say).
    """

    stream: Literal["stdout", "stderr"] = "stdout"


class StdioSink:
    """Write records to standard output (or error) as JSON Lines.

    Each batch is written with one write and flushed, so a reader sees
    records as they come and never half a line. An item with no JSON form
    goes to the ``error`` port. The write runs in a worker thread: a slow
    reader slows the pipeline down (backpressure); a reader that went away
    fails the node (`ConnectionLost`).

    Stream-safe. Delivery: each record is written once. State:
    ``records`` written.

    Example:
        ``flowstream run wf.yaml | jq .`` with ``{id: show, type:
        stdio.sink}`` prints each record on a line.
    """

    output: BinaryIO | None = None
    """Where to write; None is the configured stream (`stdio_nodes` sets it)."""

    def __init__(self, config: StdioSinkConfig) -> None:
        self.config = config
        self._out: BinaryIO | None = None

    async def __aenter__(self) -> StdioSink:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def initialize(self, ctx: NodeContext) -> None:
        """Find the stream; flush what Python buffered in its text layer."""
        if self.output is not None:
            self._out = self.output
        else:
            text = sys.stdout if self.config.stream == "stdout" else sys.stderr
            text.flush()  # earlier prints go first
            self._out = text.buffer
        if "records" not in ctx.state:
            ctx.state["records"] = 0

    async def execute(
        self, inp: AsyncIterator[list[Any]], *, ctx: NodeContext
    ) -> AsyncIterator[list[Any]]:
        """Write and flush each batch."""
        async for batch in inp:
            data, count, rejected = encode_json_lines(batch)
            if data:
                await asyncio.to_thread(self._write, data)
                ctx.state["records"] += count
            if rejected:
                for item, reason in rejected:
                    ctx.dead_letter(item, reason)
                yield []  # lets the runtime hand the dead letters on now

    def _write(self, data: bytes) -> None:
        out = self._out
        assert out is not None, "initialize was not called"
        try:
            out.write(data)
            out.flush()
        except BrokenPipeError as exc:
            msg = f"the reader of {self.config.stream} went away"
            raise ConnectionLost(msg) from exc

    async def shutdown(self) -> None:
        """Nothing to release: every batch was flushed."""
        await self.aclose()

    async def aclose(self) -> None:
        """Forget the stream (it is the process's; it stays open)."""
        self._out = None


stdio_sink = node("stdio.sink", config=StdioSinkConfig, batched=True)(StdioSink)


def stdio_nodes(
    *, stdin: int | None = None, stdout: BinaryIO | None = None
) -> tuple[NodeSpec, NodeSpec]:
    """``stdio.source``/``stdio.sink`` specs bound to other streams.

    For embedding (a process whose records come on another descriptor) and
    tests.

    Args:
        stdin: The descriptor the source reads (a pipe, file or terminal).
        stdout: The binary stream the sink writes (the ``stream`` config is
            then ignored).

    Returns:
        The two specs, to register in place of `stdio_source`/`stdio_sink`.
    """

    class BoundSource(StdioSource):
        fd = stdin

    class BoundSink(StdioSink):
        output = stdout

    return (
        node("stdio.source", config=StdioSourceConfig, batched=True)(BoundSource),
        node("stdio.sink", config=StdioSinkConfig, batched=True)(BoundSink),
    )


NODES: tuple[NodeSpec, ...] = (stdio_source, stdio_sink)
"""This family's node types (its ``flowstream.nodes`` entry point)."""
