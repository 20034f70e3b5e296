"""File connectors: ``file.source`` and ``file.sink``, JSON Lines or CSV.

``file.source`` reads a file line by line (``follow: true`` keeps tailing it
as it grows, in stream mode); ``file.sink`` appends records to a file. Both
keep the byte offset they reached in the node's state (``ctx.state``), where
checkpoints will find it:

* source: ``offset`` is where the next unread line starts, ``line`` how many
  lines were consumed (and ``fields``, a CSV header already read);
* sink: ``offset`` is the end of what the node wrote (at a checkpoint, the
  size the file is truncated back to on recovery), ``records`` how many
  records it wrote (and ``fields``, its CSV columns).

Blocking file calls run in worker threads on raw descriptors (``os.pread``,
``os.write``), never on the event loop. A descriptor is closed only once no
thread uses it any more, even after an aborted run.

The line splitting and JSON Lines encoding here are shared with
`connectors.stdio`.
"""

from __future__ import annotations

import asyncio
import csv
import functools
import io
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, TypeVar

import msgspec

from flowstream import node

from ._records import RecordDecoder, record_type

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from flowstream import NodeContext

__all__ = [
    "FileSink",
    "FileSinkConfig",
    "FileSource",
    "FileSourceConfig",
    "file_sink",
    "file_source",
]

FileFormat = Literal["jsonl", "csv"]

CHUNK_BYTES = 1 << 16
"""How much ``file.source`` reads per call (one batch at most per chunk)."""

MAX_TEXT_IN_ERROR = 256
"""How many characters of a bad line a dead letter keeps."""

CLOSE_WAIT_S = 4.0
"""How long closing waits for a thread still using a descriptor."""

T = TypeVar("T")


def _format_of(path: str, given: FileFormat | None) -> FileFormat:
    if given is not None:
        return given
    return "csv" if Path(path).suffix.lower() == ".csv" else "jsonl"


def _check_path(path: str) -> None:
    if not path.strip():
        msg = "path must not be empty"
        raise ValueError(msg)


def _check_csv_options(
    kind: FileFormat, fields: list[str] | None, delimiter: str
) -> None:
    if len(delimiter) != 1 or delimiter in '\r\n"':
        msg = f"delimiter must be one character, not a quote or newline: {delimiter!r}"
        raise ValueError(msg)
    if fields is not None:
        if kind != "csv":
            msg = "fields applies to the csv format only"
            raise ValueError(msg)
        if not fields or any(not f for f in fields) or len(set(fields)) != len(fields):
            msg = f"fields must be distinct non-empty names, got {fields!r}"
            raise ValueError(msg)


# --- lines -------------------------------------------------------------------


class Line(NamedTuple):
    """One line of input, without its line break."""

    number: int
    """1-based line number."""
    offset: int
    """Byte offset where the line starts."""
    data: bytes
    """The line's bytes (cut to the limit when ``too_long``)."""
    too_long: bool


class LineSplitter:
    """Cuts a byte stream into numbered lines, tracking byte offsets.

    ``offset`` is where the partial line held back (if any) starts: everything
    before it was returned as lines. A line longer than ``max_line_bytes`` is
    not buffered whole; it comes back with ``too_long`` set.

    Args:
        offset: Byte offset of the first byte fed.
        line: Lines already consumed before it (numbering continues).
        max_line_bytes: The longest line kept whole.
    """

    def __init__(self, offset: int = 0, line: int = 0, max_line_bytes: int = 1 << 20):
        self.offset = offset
        self.line = line
        self.max_line_bytes = max_line_bytes
        self._partial = bytearray()
        self._partial_size = 0  # may exceed len(_partial) for an over-long line

    @property
    def holding(self) -> bool:
        """Whether a partial line (no line break yet) is held back."""
        return self._partial_size > 0

    def feed(self, data: bytes) -> list[Line]:
        """Return the lines completed by ``data``; keep the rest for later."""
        lines: list[Line] = []
        start = 0
        find = data.find
        while True:
            nl = find(b"\n", start)
            if nl < 0:
                break
            if self._partial_size:
                self._hold(data[start:nl])
                lines.append(self._take(1))
            else:
                piece = data[start:nl]
                lines.append(self._line(piece, len(piece), 1))
            start = nl + 1
        if start < len(data):
            self._hold(data[start:])
        return lines

    def finish(self) -> list[Line]:
        """Return the last line if it had no line break (at end of input)."""
        return [self._take(0)] if self._partial_size else []

    def _hold(self, piece: bytes) -> None:
        room = self.max_line_bytes + 1 - len(self._partial)
        if room > 0:
            self._partial += piece[:room]
        self._partial_size += len(piece)

    def _take(self, newline: int) -> Line:
        data, size = bytes(self._partial), self._partial_size
        self._partial.clear()
        self._partial_size = 0
        return self._line(data, size, newline)

    def _line(self, data: bytes, size: int, newline: int) -> Line:
        self.line += 1
        line = Line(
            self.line,
            self.offset,
            data.removesuffix(b"\r")[: self.max_line_bytes],
            size > self.max_line_bytes,
        )
        self.offset += size + newline
        return line


def _text_of(data: bytes) -> str:
    return data[:MAX_TEXT_IN_ERROR].decode("utf-8", "replace")


def bad_line(where: str, line: Line, reason: str) -> tuple[dict[str, Any], str]:
    """The dead letter for a bad line: an item naming it, and the reason."""
    item = {
        "source": where,
        "line": line.number,
        "offset": line.offset,
        "text": _text_of(line.data),
    }
    return item, f"line {line.number}: {reason}"


class JsonLinesDecoder:
    """Decodes lines of JSON into records, one `RecordDecoder` frame per line.

    Blank lines are skipped. A line holding a JSON array gives one record
    per element (the frame rule of `RecordDecoder`).
    """

    def __init__(self, schema: dict[str, str] | None, max_line_bytes: int) -> None:
        self._decoder = RecordDecoder("json", schema, max_frame_bytes=max_line_bytes)
        self.max_line_bytes = max_line_bytes

    @property
    def held(self) -> Line | None:
        """The first line of a record not complete yet (never, for JSON Lines)."""
        return None

    def decode(self, lines: list[Line]) -> tuple[list[Any], list[tuple[Line, str]]]:
        """Return the records of ``lines`` and each bad line with its reason."""
        records: list[Any] = []
        bad: list[tuple[Line, str]] = []
        decode = self._decoder.decode
        for line in lines:
            if line.too_long:
                bad.append((line, f"longer than max_line_bytes={self.max_line_bytes}"))
                continue
            if not line.data.strip():
                continue
            good, errors = decode(line.data)
            if good:
                records.extend(good)
            for err in errors:
                bad.append((line, err.reason))
        return records, bad


class CsvDecoder:
    """Decodes CSV lines into records (dicts keyed by the header's fields).

    A quoted field may span lines: lines are held back until the quotes
    balance. Without ``fields`` the first record is the header. With a
    ``schema``, cells are converted from text (``"3"`` -> ``3``) and an empty
    cell counts as a missing field.
    """

    def __init__(
        self,
        fields: list[str] | None,
        delimiter: str,
        schema: dict[str, str] | None,
        max_line_bytes: int,
    ) -> None:
        self.fields = list(fields) if fields is not None else None
        self.delimiter = delimiter
        self.max_line_bytes = max_line_bytes
        self._schema = schema
        self._type: Any = record_type(schema) if schema else None
        self._pending: list[Line] = []

    @property
    def held(self) -> Line | None:
        """The first line of a record whose quotes are still open."""
        return self._pending[0] if self._pending else None

    def decode(self, lines: list[Line]) -> tuple[list[Any], list[tuple[Line, str]]]:
        """Return the records of ``lines`` and each bad record with its reason."""
        bad: list[tuple[Line, str]] = []
        texts: list[tuple[Line, str]] = []  # (first line, text) of whole records
        pending = self._pending
        for line in lines:
            if line.too_long:
                # An over-long line ends any record it was part of.
                first = pending[0] if pending else line
                pending = []
                bad.append((first, f"longer than max_line_bytes={self.max_line_bytes}"))
                continue
            if not pending and not line.data.count(b'"') % 2:
                group = [line]  # the common case: a record on one line
            else:
                pending.append(line)
                if sum(p.data.count(b'"') for p in pending) % 2:
                    continue  # a quoted field goes on in the next line
                group, pending = pending, []
            raw = b"\n".join(p.data for p in group)
            try:
                texts.append((group[0], raw.decode("utf-8")))
            except UnicodeDecodeError as exc:
                bad.append((group[0], f"not UTF-8 text: {exc}"))
        self._pending = pending
        records: list[Any] = []
        rows = self._rows([text for _, text in texts])
        for (first, _), row in zip(texts, rows, strict=True):
            record, error = self._record(row)
            if error is not None:
                bad.append((first, error))
            elif record is not None:
                records.append(record)
        return records, bad

    def flush(self) -> list[tuple[Line, str]]:
        """At end of input: a record whose quotes never closed is bad."""
        if not self._pending:
            return []
        first = self._pending[0]
        self._pending = []
        return [(first, "unterminated quoted field")]

    def _rows(self, texts: list[str]) -> list[list[str] | str]:
        """Each text's row, or why it is not one (one reader for all, if it can)."""
        try:
            rows: list[Any] = list(
                csv.reader(texts, delimiter=self.delimiter, strict=True)
            )
        except csv.Error:
            rows = []
        if len(rows) == len(texts):
            return rows
        out: list[list[str] | str] = []
        for text in texts:
            try:
                out.append(
                    next(csv.reader([text], delimiter=self.delimiter, strict=True))
                )
            except csv.Error as exc:
                out.append(f"malformed csv: {exc}")
        return out

    def _record(self, row: list[str] | str) -> tuple[dict[str, Any] | None, str | None]:
        if isinstance(row, str):
            return None, row
        if not row or row == [""]:
            return None, None  # blank line
        if self.fields is None:
            self.fields = row
            return None, None
        if len(row) != len(self.fields):
            return None, f"expected {len(self.fields)} fields, got {len(row)}"
        record = dict(zip(self.fields, row, strict=True))
        if self._type is None:
            return record, None
        present = {k: v for k, v in record.items() if v != ""}
        try:
            converted = msgspec.convert(present, self._type, strict=False)
        except msgspec.ValidationError as exc:
            return None, f"schema violation: {exc}"
        return dict(converted), None


# --- descriptors in threads ----------------------------------------------------


class _Descriptor:
    """A raw file descriptor whose blocking calls run in worker threads.

    Each call is shielded: cancelling the caller (an aborted run) leaves the
    thread to finish, and `aclose` waits for it before closing the
    descriptor, so a descriptor is never closed, or its number reused, under
    a running call.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._running: asyncio.Future[Any] | None = None

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.run_in_executor(None, fn, self.fd, *args)
        self._running = fut
        try:
            return await asyncio.shield(fut)
        finally:
            if fut.done():
                self._running = None

    async def aclose(self) -> None:
        if self.fd < 0:
            return
        running, self._running = self._running, None
        if running is not None and not running.done():
            await asyncio.wait({running}, timeout=CLOSE_WAIT_S)
        if running is not None and running.done() and not running.cancelled():
            running.exception()  # retrieved: an abandoned call's error is moot
        fd, self.fd = self.fd, -1
        os.close(fd)

    def close(self) -> None:
        # Last resort when no await is possible; see aclose.
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _read_head(fd: int, limit: int) -> bytes:
    """The file's first line (up to ``limit`` bytes), for an existing CSV header."""
    data = os.pread(fd, limit, 0)
    return data.split(b"\n", 1)[0]


def _sync_and_size(fd: int, sync: bool) -> int:
    if sync:
        os.fsync(fd)
    return os.fstat(fd).st_size


def _truncate(fd: int, size: int, sync: bool) -> None:
    os.ftruncate(fd, size)
    if sync:
        os.fsync(fd)


def _last_byte(fd: int) -> bytes:
    size = os.fstat(fd).st_size
    return os.pread(fd, 1, size - 1) if size else b""


def _open_for_reading(path: str) -> tuple[int, os.stat_result]:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    return fd, os.fstat(fd)


def _stat(path: str) -> os.stat_result | None:
    try:
        return os.stat(path)
    except FileNotFoundError:
        return None


# --- file.source -----------------------------------------------------------------


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
        follow: Keep reading as the file grows (stream mode), like
            ``tail -f``; survives truncation and rotation (a new file at the
            path is read from its start).
        poll_interval_ms: How often a followed file is checked for growth.
        start_at: ``beginning``, or ``end`` to read only what is appended
            after the start (with ``follow``).
        fields: CSV column names, for a file with no header line; without
            them the first line is the header.
        delimiter: The CSV field separator.
        max_line_bytes: A longer line goes to the ``error`` port.
    """

    path: str
    format: FileFormat | None = None
    schema: dict[str, str] | None = None
    follow: bool = False
    poll_interval_ms: float = 250.0
    start_at: Literal["beginning", "end"] = "beginning"
    fields: list[str] | None = None
    delimiter: str = ","
    max_line_bytes: int = 1 << 20

    def __post_init__(self) -> None:
        _check_path(self.path)
        if not self.poll_interval_ms > 0:
            msg = f"poll_interval_ms must be > 0, got {self.poll_interval_ms}"
            raise ValueError(msg)
        if self.max_line_bytes < 1:
            msg = f"max_line_bytes must be >= 1, got {self.max_line_bytes}"
            raise ValueError(msg)
        if self.schema is not None:
            record_type(self.schema)  # names an unknown type name
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

    Example:
        ``{id: events, type: file.source, config: {path: events.jsonl,
        follow: true}}`` emits each record appended to ``events.jsonl``
        until the run is stopped.
    """

    def __init__(self, config: FileSourceConfig) -> None:
        self.config = config
        self._fd: _Descriptor | None = None
        self._ino: tuple[int, int] = (0, 0)

    async def __aenter__(self) -> FileSource:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def initialize(self, ctx: NodeContext) -> None:
        """Open the file (it must exist) and find where to start reading."""
        loop = asyncio.get_running_loop()
        fd, st = await loop.run_in_executor(None, _open_for_reading, self.config.path)
        self._fd = _Descriptor(fd)
        self._ino = (st.st_dev, st.st_ino)
        cfg = self.config
        if "offset" not in ctx.state and cfg.start_at == "end":
            ctx.state["offset"] = st.st_size
            ctx.state["line"] = 0
            if cfg.kind == "csv" and cfg.fields is None and st.st_size:
                # Skipping the file skips its header too: read it first.
                head = await self._fd.call(_read_head, cfg.max_line_bytes)
                text = head.decode("utf-8", "replace").rstrip("\r")
                ctx.state["fields"] = next(csv.reader([text], delimiter=cfg.delimiter))

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
        return JsonLinesDecoder(cfg.schema, cfg.max_line_bytes)

    async def execute(self, *, ctx: NodeContext) -> AsyncIterator[list[Any]]:
        """Emit the records of each chunk read, as one batch."""
        cfg = self.config
        assert self._fd is not None, "initialize was not called"
        state = ctx.state
        splitter = LineSplitter(
            state.get("offset", 0), state.get("line", 0), cfg.max_line_bytes
        )
        decoder = self._decoder(state.get("fields"))
        read_at = splitter.offset
        while True:
            fd = self._fd
            assert fd is not None
            data: bytes = await fd.call(os.pread, CHUNK_BYTES, read_at)
            read_at += len(data)
            at_end = not data
            final = at_end and not cfg.follow
            if data:
                lines = splitter.feed(data)
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


file_source = node(
    "file.source", config=FileSourceConfig, batched=True, stops_itself=True
)(FileSource)


# --- file.sink ---------------------------------------------------------------------


class FileSinkConfig(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True
):
    """Config of ``file.sink``.

    Attributes:
        path: The file to append to (created if missing).
        format: ``jsonl`` or ``csv``; by default ``csv`` for a ``.csv`` path,
            else ``jsonl``.
        commit: ``append``: records are appended after what the file holds;
            under stream checkpoints, a restart first truncates the file back
            to the size it had at the last committed checkpoint.
        fsync: When data is forced to disk: ``end`` (end of input and
            shutdown, and at each checkpoint), ``batch`` (after every batch
            too), or ``never`` (then a checkpoint survives a crash of the
            process, not a power loss).
        fields: CSV columns; by default an existing file's header, else the
            first record's fields.
        header: Write a CSV header line into an empty file.
        delimiter: The CSV field separator.
    """

    path: str
    format: FileFormat | None = None
    commit: Literal["append"] = "append"
    fsync: Literal["end", "batch", "never"] = "end"
    fields: list[str] | None = None
    header: bool = True
    delimiter: str = ","

    def __post_init__(self) -> None:
        _check_path(self.path)
        _check_csv_options(self.kind, self.fields, self.delimiter)

    @property
    def kind(self) -> FileFormat:
        """The format, given or inferred from the path."""
        return _format_of(self.path, self.format)


_json_encoder = msgspec.json.Encoder()

Rejected = list[tuple[Any, str]]
"""Items a sink could not write, each with the reason (for the error port)."""


def encode_json_lines(batch: list[Any]) -> tuple[bytes, int, Rejected]:
    """Encode a batch as JSON Lines, setting aside items with no JSON form.

    Returns:
        The bytes, how many records they hold, and the rejected items.
    """
    try:
        return _json_encoder.encode_lines(batch), len(batch), []
    except (TypeError, msgspec.EncodeError):
        pass
    parts: list[bytes] = []
    rejected: Rejected = []
    for item in batch:
        try:
            parts.append(_json_encoder.encode(item))
        except (TypeError, msgspec.EncodeError) as exc:
            rejected.append((item, f"cannot encode as JSON: {exc}"))
    data = b"\n".join(parts) + b"\n" if parts else b""
    return data, len(parts), rejected


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return _json_encoder.encode(value).decode()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


class FileSink:
    """Append records to a JSON Lines or CSV file; flush and fsync at the end.

    Each batch is encoded and written with one ``write`` (so readers see
    whole lines), and the file is fsynced at end of input and at shutdown
    (``fsync: batch`` for every batch). An item that cannot be written (no
    JSON form; for CSV not a mapping, or with fields outside the columns)
    goes to the ``error`` port. A file whose last line lacks a line break
    (a crashed writer) gets one before the first record, so records never
    merge with a partial line.

    CSV columns come from ``fields``, else the existing file's header, else
    the first record; missing fields are empty cells, lists and dicts are
    JSON text, booleans ``true``/``false``.

    Stream-safe. Delivery: exactly-once effects under stream checkpoints,
    across crashes and ``kill -9``: at each checkpoint barrier the file is
    fsynced and its size kept in the checkpoint (``offset``); a restart
    truncates the file back to that size, dropping what the uncommitted epoch
    wrote, before the sources replay it. A file found shorter than that size
    was changed outside the run: the node fails to start, naming it. Readers
    of the file may see the records of an epoch not committed yet, which a
    recovery removes. Without checkpoints: at-least-once (a rerun appends
    again). State: ``offset`` (end of what this node wrote), ``records``,
    ``fields`` (CSV columns, under checkpoints).

    Example:
        ``{id: out, type: file.sink, config: {path: out.csv}}`` appends each
        record as a CSV row, with a header line if the file was empty.
    """

    def __init__(self, config: FileSinkConfig) -> None:
        self.config = config
        self._fd: _Descriptor | None = None
        self._fields: list[str] | None = config.fields
        self._header_due = False
        self._needs_newline = False
        self._dirty = False

    async def __aenter__(self) -> FileSink:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def initialize(self, ctx: NodeContext) -> None:
        """Open the file for appending; read an existing CSV header.

        Under checkpoints, first truncate the file to the restored ``offset``.

        Raises:
            ValueError: The file is shorter than the restored ``offset``.
        """
        cfg = self.config
        loop = asyncio.get_running_loop()
        flags = os.O_RDWR | os.O_CREAT | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
        fd = await loop.run_in_executor(None, os.open, cfg.path, flags, 0o666)
        self._fd = _Descriptor(fd)
        size: int = await self._fd.call(os.lseek, 0, os.SEEK_END)
        committed: int | None = ctx.state.get("offset") if ctx.checkpointing else None
        if committed is not None:
            await self._roll_back(ctx, size, committed)
            size = committed
            if cfg.fields is None and ctx.state.get("fields"):
                self._fields = list(ctx.state["fields"])
        ctx.state["offset"] = size
        if "records" not in ctx.state:
            ctx.state["records"] = 0
        if ctx.checkpointing:
            ctx.on_barrier(functools.partial(self._at_barrier, ctx))
        self._header_due = cfg.kind == "csv" and cfg.header and size == 0
        if size:
            last = await self._fd.call(_last_byte)
            self._needs_newline = last != b"\n"
            if cfg.kind == "csv" and self._fields is None:
                head = await self._fd.call(_read_head, 1 << 20)
                text = head.decode("utf-8", "replace").rstrip("\r")
                row = next(csv.reader([text], delimiter=cfg.delimiter))
                self._fields = row or None

    async def _roll_back(self, ctx: NodeContext, size: int, committed: int) -> None:
        """Cut what an epoch that never committed wrote (it will be replayed)."""
        assert self._fd is not None
        path = self.config.path
        if size < committed:
            await self.aclose()  # a node that fails to start gets no shutdown
            msg = (
                f"{path} holds {size} bytes, fewer than the {committed} this sink "
                f"had written at the last checkpoint (epoch {ctx.restored_epoch}): "
                f"it was changed outside the run; restore it, or start afresh "
                f"with a new checkpoint store"
            )
            raise ValueError(msg)
        if size > committed:
            sync = self.config.fsync != "never"
            await self._fd.call(_truncate, committed, sync)
            ctx.logger.info(
                "%s: truncated %d bytes written after checkpoint %d",
                path,
                size - committed,
                ctx.restored_epoch,
            )

    async def _at_barrier(self, ctx: NodeContext, epoch: int) -> None:
        # Every batch before the barrier is written (os.write, no user-space
        # buffer): make it durable and note the size the epoch keeps.
        if self._fd is None:
            return
        sync = self._dirty and self.config.fsync != "never"
        if sync:
            self._dirty = False
        ctx.state["offset"] = await self._fd.call(_sync_and_size, sync)
        if self._fields is not None:
            ctx.state["fields"] = list(self._fields)

    async def execute(
        self, inp: AsyncIterator[list[Any]], *, ctx: NodeContext
    ) -> AsyncIterator[list[Any]]:
        """Write each batch with one write; fsync at end of input."""
        cfg = self.config
        async for batch in inp:
            if cfg.kind == "csv":
                data, count, rejected = self._encode_csv(batch)
            else:
                data, count, rejected = encode_json_lines(batch)
            if data:
                await self._write(data, count, ctx)
                if cfg.fsync == "batch":
                    await self.flush()
            if rejected:
                for item, reason in rejected:
                    ctx.dead_letter(item, reason)
                yield []  # lets the runtime hand the dead letters on now
        await self.flush()

    async def _write(self, data: bytes, count: int, ctx: NodeContext) -> None:
        assert self._fd is not None, "initialize was not called"
        if self._needs_newline:
            data = b"\n" + data
            self._needs_newline = False
        self._dirty = True
        await self._fd.call(_write_all, data)
        ctx.state["offset"] += len(data)
        ctx.state["records"] += count

    async def flush(self) -> None:
        """Force what was written to disk (a no-op when nothing is pending)."""
        if self._fd is None or not self._dirty or self.config.fsync == "never":
            return
        self._dirty = False
        await self._fd.call(os.fsync)

    async def shutdown(self) -> None:
        """Fsync what is pending and close the file."""
        await self.aclose()

    async def aclose(self) -> None:
        """Fsync what is pending and close the file; idempotent."""
        if self._fd is None:
            return
        try:
            await self.flush()
        finally:
            fd, self._fd = self._fd, None
            await fd.aclose()

    def _encode_csv(self, batch: list[Any]) -> tuple[bytes, int, Rejected]:
        cfg = self.config
        out = io.StringIO()
        writer = csv.writer(out, delimiter=cfg.delimiter, lineterminator="\n")
        count = 0
        rejected: Rejected = []
        for item in batch:
            if not isinstance(item, dict):
                kind = type(item).__name__
                rejected.append((item, f"a CSV row needs a record, got {kind}"))
                continue
            if self._fields is None:
                self._fields = [str(k) for k in item]
            if self._header_due:
                writer.writerow(self._fields)
                self._header_due = False
            extra = [str(k) for k in item if k not in self._fields]
            if extra:
                names = ", ".join(extra)
                rejected.append((item, f"fields not among the CSV columns: {names}"))
                continue
            writer.writerow([_cell(item.get(f)) for f in self._fields])
            count += 1
        return out.getvalue().encode(), count, rejected


file_sink = node("file.sink", config=FileSinkConfig, batched=True)(FileSink)
