"""The ``file.source`` node: records from a JSON Lines or CSV file (or its tail).

Its config, `FileSource` (reads chunks on a `connectors.files._common._Descriptor`,
splits and decodes them with `connectors.files._formats`, follows truncation
and rotation) and the `file_source` spec.
"""

from __future__ import annotations

import asyncio
import csv
import os
from typing import TYPE_CHECKING, Any, Literal

import msgspec

from flowstream import DEFAULT_MAX_DEPTH, FilePath, node

from .._records import record_type
from ._common import (
    FileFormat,
    _check_csv_options,
    _check_path,
    _Descriptor,
    _format_of,
    _open_for_reading,
    _read_head,
    _stat,
)
from ._formats import CsvDecoder, JsonLinesDecoder, LineSplitter, bad_line
from ._variants import variants_type

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from flowstream import NodeContext

    from ._formats import Block, Line

__all__ = ["FileSource", "FileSourceConfig", "file_source"]

CHUNK_BYTES = 1 << 16
"""How much of what ``file.source`` reads goes into one batch (at most)."""

READ_BYTES = 1 << 20
"""How much ``file.source`` reads per call (in a worker thread)."""


class FileSourceConfig(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True
):
    """Config of ``file.source``.

    Attributes:
        path: The file to read.
        format: ``jsonl`` or ``csv``; by default ``csv`` for a ``.csv`` path,
            else ``jsonl``.
        schema: Field name -> type name (see `connectors._records`); records
            that break it go to the ``error`` port.
        variants: JSON Lines records of several kinds, told apart by
            ``tag_field``: tag value -> field name -> type name. Each line
            is decoded into its variant by one typed decoder (batches in one
            call) and comes out as a dict with the tag; a record whose tag
            names no variant, or that breaks its variant, goes to ``error``.
            Unknown fields are dropped. Instead of ``schema``.
        tag_field: The field naming a record's variant (with ``variants``).
        follow: Keep reading as the file grows (stream mode), like
            ``tail -F``; survives truncation and rotation (a new file at the
            path is read from its start) and waits for a file that does not
            exist yet (said once, then read from its start).
        poll_interval_ms: How often a followed file is checked for growth.
        start_at: ``beginning``, or ``end`` to read only what is appended
            after the start (with ``follow``).
        fields: CSV column names, for a file with no header line; without
            them the first line is the header.
        delimiter: The CSV field separator.
        max_line_bytes: A longer line goes to the ``error`` port.
        max_depth: Deepest nesting of arrays/objects in a line; a deeper
            line goes to ``error`` as "too deeply nested" (the node goes on).
    """

    path: FilePath
    format: FileFormat | None = None
    schema: dict[str, str] | None = None
    variants: dict[str, dict[str, str]] | None = None
    tag_field: str = "type"
    follow: bool = False
    poll_interval_ms: float = 250.0
    start_at: Literal["beginning", "end"] = "beginning"
    fields: list[str] | None = None
    delimiter: str = ","
    max_line_bytes: int = 1 << 20
    max_depth: int = DEFAULT_MAX_DEPTH

    def __post_init__(self) -> None:
        _check_path(self.path)
        if not self.poll_interval_ms > 0:
            msg = f"poll_interval_ms must be > 0, got {self.poll_interval_ms}"
            raise ValueError(msg)
        if self.max_line_bytes < 1:
            msg = f"max_line_bytes must be >= 1, got {self.max_line_bytes}"
            raise ValueError(msg)
        if self.max_depth < 1:
            msg = f"max_depth must be >= 1, got {self.max_depth}"
            raise ValueError(msg)
        if self.schema is not None:
            record_type(self.schema)  # names an unknown type name
        if self.variants is not None:
            if self.schema is not None:
                msg = "set schema (one record type) or variants (tagged), not both"
                raise ValueError(msg)
            if self.kind != "jsonl":
                msg = "variants applies to the jsonl format only"
                raise ValueError(msg)
            variants_type(self.tag_field, self.variants)  # names what is wrong
        _check_csv_options(self.kind, self.fields, self.delimiter)

    @property
    def kind(self) -> FileFormat:
        """The format, given or inferred from the path."""
        return _format_of(self.path, self.format)


class FileSource:
    """Read records from a JSON Lines or CSV file; with ``follow``, tail it.

    Emits one record per line (JSON Lines; a line holding an array gives one
    per element) or per CSV row (a dict keyed by the header). A bad line (not
    JSON, not UTF-8, wrong field count, schema violation, too long) goes to
    the ``error`` port with the reason and its line number, and reading goes
    on. Blank lines are skipped.

    Without ``follow`` the source ends at end of file (a last line without a
    line break counts). With ``follow`` it is a stream-mode source: it waits
    for the file to grow, emits only complete lines, starts over when the
    file is truncated, and moves to a new file put at the path (rotation).
    A graceful stop ends it after the lines already read.

    State: ``offset`` (byte offset of the next unread line), ``line`` (lines
    consumed), ``fields`` (a CSV header). A run whose state already holds an
    ``offset`` (restored from a checkpoint) resumes there. Delivery is
    at-least-once once offsets are checkpointed.

    With ``parallelism: N`` (not with ``follow``), N instances read the file
    together: instance i reads the lines that start in bytes ``[size * i /
    N, size * (i + 1) / N)``, each cut moved to the next line start, so
    every line is read once. Each instance keeps its own ``offset`` and its
    part's ``end`` in its state; a resumed run reads the same parts. The
    records are those of one instance, in another order across parts.

    Statistics: ``bytes_read`` (the position reached in the file) of
    ``bytes_total`` (its size; none with ``follow``), updated per read:
    ``flowstream run --progress`` shows them as a bar with % and ETA. A part
    of a split file counts from its own start, of its own length.

    Example:
        ``{id: events, type: file.source, config: {path: events.jsonl,
        follow: true}}`` emits each record appended to ``events.jsonl``
        until the run is stopped.
    """

    def __init__(self, config: FileSourceConfig) -> None:
        self.config = config
        self._fd: _Descriptor | None = None
        self._ino: tuple[int, int] = (0, 0)
        self._size = 0  # the file's size when opened (progress's total)

    async def __aenter__(self) -> FileSource:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def initialize(self, ctx: NodeContext) -> None:
        """Open the file and find where to start reading.

        Without ``follow`` the file must exist. With ``follow`` a missing
        file is waited for, as ``tail -F`` does: said once (a log warning and
        a ``file.waiting`` event), then read from its start when it appears.
        """
        loop = asyncio.get_running_loop()
        path = self.config.path
        try:
            fd, st = await loop.run_in_executor(None, _open_for_reading, path)
        except FileNotFoundError:
            if not self.config.follow:
                raise
            ctx.logger.warning("%s does not exist yet; waiting for it to appear", path)
            ctx.event("file.waiting", {"path": path})
            return
        self._fd = _Descriptor(fd)
        self._ino = (st.st_dev, st.st_ino)
        self._size = st.st_size
        cfg = self.config
        if ctx.instances > 1:
            await self._split(ctx, st.st_size)
            return
        if "offset" not in ctx.state and cfg.start_at == "end":
            ctx.state["offset"] = st.st_size
            ctx.state["line"] = 0
            if cfg.kind == "csv" and cfg.fields is None and st.st_size:
                # Skipping the file skips its header too: read it first.
                head = await self._fd.call(_read_head, cfg.max_line_bytes)
                text = head.decode("utf-8", "replace").rstrip("\r")
                ctx.state["fields"] = next(csv.reader([text], delimiter=cfg.delimiter))

    async def _split(self, ctx: NodeContext, size: int) -> None:
        """Instance i of N: read the lines that start in its part of the file.

        The file is cut at ``size * i // N``, each cut moved to the start of
        the next line, so every line belongs to exactly one instance. The
        range is fixed in the state at the first start (``offset``,
        ``end``), so a resumed run reads the same parts whatever the file
        became since. Line numbers (``line``) count from the file's start.
        """
        state = ctx.state
        if "end" in state:
            return  # resumed: the range was fixed at the first start
        fd = self._fd
        assert fd is not None
        i, n = ctx.instance, ctx.instances
        start = await fd.call(_line_start, size * i // n, size)
        end = await fd.call(_line_start, size * (i + 1) // n, size)
        state["offset"], state["end"] = start, end
        state["start"] = start  # for progress: the part's own length
        state["line"] = await fd.call(_lines_before, start)
        cfg = self.config
        if cfg.kind == "csv" and cfg.fields is None and start > 0:
            # The header is the file's first line, in instance 0's part.
            head = await fd.call(_read_head, cfg.max_line_bytes)
            text = head.decode("utf-8", "replace").rstrip("\r")
            state["fields"] = next(csv.reader([text], delimiter=cfg.delimiter))

    async def _appeared(self, ctx: NodeContext) -> bool:
        """Wait for a followed file that was missing at start; False if stopped."""
        loop = asyncio.get_running_loop()
        path = self.config.path
        while not ctx.stopping.is_set():
            try:
                fd, st = await loop.run_in_executor(None, _open_for_reading, path)
            except FileNotFoundError:
                await self._wait(ctx)
                continue
            self._fd = _Descriptor(fd)
            self._ino = (st.st_dev, st.st_ino)
            ctx.logger.info("%s appeared; reading it", path)
            ctx.event("file.appeared", {"path": path})
            return True
        return False

    async def shutdown(self) -> None:
        """Close the file."""
        await self.aclose()

    async def aclose(self) -> None:
        """Close the file; idempotent."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            await fd.aclose()

    def _decoder(self, fields: list[str] | None) -> JsonLinesDecoder | CsvDecoder:
        cfg = self.config
        if cfg.kind == "csv":
            return CsvDecoder(
                cfg.fields if cfg.fields is not None else fields,
                cfg.delimiter,
                cfg.schema,
                cfg.max_line_bytes,
            )
        return JsonLinesDecoder(
            cfg.schema,
            cfg.max_line_bytes,
            cfg.max_depth,
            variants=cfg.variants,
            tag_field=cfg.tag_field,
        )

    async def execute(self, *, ctx: NodeContext) -> AsyncIterator[list[Any]]:
        """Emit the records of each chunk read, as one batch."""
        cfg = self.config
        if self._fd is None and not await self._appeared(ctx):
            return  # stopped while waiting for the file
        state = ctx.state
        splitter = LineSplitter(
            state.get("offset", 0), state.get("line", 0), cfg.max_line_bytes
        )
        decoder = self._decoder(state.get("fields"))
        # JSON Lines: the lines of a chunk stay one bytes, decoded in one call.
        feed = splitter.feed_block if cfg.kind == "jsonl" else splitter.feed
        read_at = splitter.offset
        # A part of a split file (several instances) ends at a line start.
        end: int | None = state.get("end")
        # Progress: the position in the file (or the part), of its size (a
        # file that grows while it is read has the size reached); followed,
        # no end.
        base = state.get("start", 0) if end is not None else 0
        total = end - base if end is not None else None if cfg.follow else self._size
        ctx.read_progress(read_at - base, total)
        while True:
            fd = self._fd
            assert fd is not None
            want = READ_BYTES if end is None else min(READ_BYTES, end - read_at)
            data: bytes = await fd.call(os.pread, want, read_at) if want > 0 else b""
            read_at += len(data)
            if total is not None and read_at - base > total:
                total = read_at - base
            ctx.read_progress(read_at - base, total)
            at_end = not data
            final = at_end and not cfg.follow
            # One read per READ_BYTES (a hop to a worker thread costs as much
            # as decoding many lines), one batch per CHUNK_BYTES of it.
            for at in range(0, max(len(data), 1), CHUNK_BYTES):
                piece = data[at : at + CHUNK_BYTES]
                lines: list[Line] | Block
                if piece:
                    lines = feed(piece)
                else:
                    lines = splitter.finish() if final else []
                if lines or final:
                    records, bad = decoder.decode(lines)
                    if final and isinstance(decoder, CsvDecoder):
                        bad += decoder.flush()
                    self._dead_letters(ctx, bad)
                    held = decoder.held
                    if held is not None:
                        state["offset"], state["line"] = held.offset, held.number - 1
                    else:
                        state["offset"], state["line"] = splitter.offset, splitter.line
                    if isinstance(decoder, CsvDecoder) and decoder.fields is not None:
                        state["fields"] = decoder.fields
                    if records or bad:
                        yield records
            if final or ctx.stopping.is_set():
                return
            if at_end:
                await self._wait(ctx)
                if ctx.stopping.is_set():
                    return
                if await self._moved_or_truncated(ctx, read_at):
                    splitter = LineSplitter(0, 0, cfg.max_line_bytes)
                    feed = splitter.feed_block if cfg.kind == "jsonl" else splitter.feed
                    decoder = self._decoder(None)
                    state["offset"], state["line"] = 0, 0
                    read_at = 0

    def _dead_letters(self, ctx: NodeContext, bad: list[tuple[Line, str]]) -> None:
        for line, reason in bad:
            item, text = bad_line(self.config.path, line, reason)
            ctx.dead_letter(item, text)

    async def _wait(self, ctx: NodeContext) -> None:
        # Woken early by a graceful stop: this source stops itself.
        try:
            async with asyncio.timeout(self.config.poll_interval_ms / 1000.0):
                await ctx.stopping.wait()
        except TimeoutError:
            pass

    async def _moved_or_truncated(self, ctx: NodeContext, read_at: int) -> bool:
        """After end of file: whether to start over (truncated, or rotated)."""
        loop = asyncio.get_running_loop()
        path = self.config.path
        st = await loop.run_in_executor(None, _stat, path)
        if st is None:
            return False  # mid-rotation: keep the old file until a new one shows
        if (st.st_dev, st.st_ino) != self._ino:
            fd, new = await loop.run_in_executor(None, _open_for_reading, path)
            old, self._fd = self._fd, _Descriptor(fd)
            self._ino = (new.st_dev, new.st_ino)
            if old is not None:
                await old.aclose()
            ctx.logger.info("%s was replaced; reading the new file", path)
            ctx.event("file.rotated", {"path": path})
            return True
        if st.st_size < read_at:
            ctx.logger.warning("%s was truncated; reading it from the start", path)
            ctx.event("file.truncated", {"path": path, "size": st.st_size})
            return True
        return False


def _line_start(fd: int, at: int, size: int) -> int:
    """The first line start at or after byte ``at`` (``size`` if none)."""
    if at <= 0:
        return 0
    pos = at - 1  # a line starts at ``at`` if the byte before it ends one
    while pos < size:
        chunk = os.pread(fd, CHUNK_BYTES, pos)
        if not chunk:
            break
        found = chunk.find(b"\n")
        if found >= 0:
            return pos + found + 1
        pos += len(chunk)
    return size


def _lines_before(fd: int, offset: int) -> int:
    """How many line breaks the file has before byte ``offset``."""
    count = pos = 0
    while pos < offset:
        chunk = os.pread(fd, min(READ_BYTES, offset - pos), pos)
        if not chunk:
            break
        count += chunk.count(b"\n")
        pos += len(chunk)
    return count


def _partitions(config: FileSourceConfig) -> str | None:
    """Whether the file can be read by several instances (byte ranges)."""
    if config.follow:
        return (
            "a followed file grows, so it cannot be cut into fixed parts; "
            "drop follow to read a file in parallel"
        )
    return None


file_source = node(
    "file.source",
    config=FileSourceConfig,
    batched=True,
    stops_itself=True,
    partitioned=_partitions,
)(FileSource)
