"""The file formats: lines in, JSON Lines and CSV records out, and back.

`LineSplitter` cuts bytes into numbered `Line`s (tracking byte offsets),
`JsonLinesDecoder` and `CsvDecoder` turn lines into records, `bad_line`
makes the dead letter for a bad one, and `encode_json_lines` (with `_cell`
for CSV cells) writes records out. Shared by ``file.*`` and `connectors.stdio`.
"""

from __future__ import annotations

import csv
from typing import Any, NamedTuple

import msgspec

from flowstream import DEFAULT_MAX_DEPTH

from .._records import MAX_RAW_IN_ERROR, BadRecord, RecordDecoder, record_type
from ._variants import FLAT_TYPES, is_flat, variants_type

MAX_TEXT_IN_ERROR = 256
"""How many characters of a bad line a dead letter keeps."""


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

    def feed_block(self, data: bytes) -> Block | list[Line]:
        """Like `feed`, but the complete lines come back as one `Block`.

        The lines stay one ``bytes`` (no object per line), so that a decoder
        can take them all in one call. Falls back to `feed` (a list of
        lines) when a line might exceed ``max_line_bytes``.
        """
        last = data.rfind(b"\n")
        if last < 0 or self._partial_size > len(self._partial):
            return self.feed(data)
        head = bytes(self._partial) + data[:last] if self._partial_size else data[:last]
        if len(head) > self.max_line_bytes:
            return self.feed(data)  # nothing changed yet: the per-line path
        count = head.count(b"\n") + 1
        block = Block(self.line + 1, self.offset, head, count, self.max_line_bytes)
        self.line += count
        self.offset += len(head) + 1
        self._partial.clear()
        self._partial_size = 0
        if last + 1 < len(data):
            self._hold(data[last + 1 :])
        return block

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


class Block:
    """Complete lines kept as one ``bytes``, joined by their line breaks.

    Falsy when it holds no line, like an empty list of lines.
    """

    __slots__ = ("count", "data", "first_line", "first_offset", "max_line_bytes")

    def __init__(
        self,
        first_line: int,
        first_offset: int,
        data: bytes,
        count: int,
        max_line_bytes: int,
    ) -> None:
        self.first_line = first_line
        self.first_offset = first_offset
        self.data = data
        self.count = count
        self.max_line_bytes = max_line_bytes

    def __len__(self) -> int:
        return self.count

    def lines(self) -> list[Line]:
        """The block cut into numbered `Line`s (for the per-line path)."""
        splitter = LineSplitter(
            self.first_offset, self.first_line - 1, self.max_line_bytes
        )
        return splitter.feed(self.data + b"\n")


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

    With ``variants`` (tag value -> field name -> type name) each record is
    decoded into the variant its ``tag_field`` names, by one typed decoder
    (`connectors.files._variants`), and comes out as a dict; a record whose
    tag names no variant, or that breaks its variant, is a bad line. A
    schema (or variants) of scalar fields only bounds the records' depth,
    so the nesting check is skipped then.

    The usual batch, every line good, is decoded in one call; the per-line
    path runs only to find the bad lines of a batch that failed.
    """

    def __init__(
        self,
        schema: dict[str, str] | None,
        max_line_bytes: int,
        max_depth: int = DEFAULT_MAX_DEPTH,
        *,
        variants: dict[str, dict[str, str]] | None = None,
        tag_field: str = "type",
    ) -> None:
        self._decoder = RecordDecoder(
            "json", schema, max_frame_bytes=max_line_bytes, max_depth=max_depth
        )
        self.max_line_bytes = max_line_bytes
        record: Any = record_type(schema) if schema else None
        self._structs = variants is not None
        if variants is not None:
            record = variants_type(tag_field, variants)
            self._flat = is_flat(variants)
        else:
            self._flat = schema is not None and all(
                t.rstrip("?") in FLAT_TYPES for t in schema.values()
            )
        # Decodes a whole batch of lines in one call (the usual case: every
        # line good); the per-line path finds the bad lines when it fails.
        self._lines = msgspec.json.Decoder(
            Any if record is None else record | list[record]
        )
        self._one = msgspec.json.Decoder(record | list[record]) if variants else None

    @property
    def held(self) -> Line | None:
        """The first line of a record not complete yet (never, for JSON Lines)."""
        return None

    def decode(
        self, lines: list[Line] | Block
    ) -> tuple[list[Any], list[tuple[Line, str]]]:
        """Return the records of ``lines`` and each bad line with its reason."""
        if isinstance(lines, Block):
            fast = self._values(lines.data, lines.count)
            if fast is not None:
                return fast, []
            lines = lines.lines()
        else:
            fast = self._all_at_once(lines)
            if fast is not None:
                return fast, []
        records: list[Any] = []
        bad: list[tuple[Line, str]] = []
        decode = self._decode_line if self._structs else self._decoder.decode
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

    def _decode_line(self, data: bytes) -> tuple[list[Any], list[BadRecord]]:
        assert self._one is not None
        nesting = self._decoder.nesting
        if not self._flat and nesting.json_exceeds(data):
            return [], [BadRecord(nesting.reason, data[:MAX_RAW_IN_ERROR])]
        try:
            value = self._one.decode(data)
        except msgspec.ValidationError as exc:
            return [], [BadRecord(f"schema violation: {exc}", data[:MAX_RAW_IN_ERROR])]
        except msgspec.DecodeError as exc:
            return [], [BadRecord(f"malformed json: {exc}", data[:MAX_RAW_IN_ERROR])]
        except RecursionError:
            return [], [BadRecord(nesting.reason, data[:MAX_RAW_IN_ERROR])]
        records = _BUILTINS(value, builtin_types=(bytes,))
        return (records if type(records) is list else [records]), []

    def _all_at_once(self, lines: list[Line]) -> list[Any] | None:
        """The records of ``lines`` if each holds one good JSON value, else None."""
        if not lines or any(line.too_long for line in lines):
            return None
        return self._values(b"\n".join([ln.data for ln in lines]), len(lines))

    def _values(self, data: bytes, count: int) -> list[Any] | None:
        """The records of ``count`` lines if each holds one good value, else None."""
        if not self._flat and self._decoder.nesting.json_exceeds(data):
            return None  # the per-line path names the line nested too deeply
        try:
            values = self._lines.decode_lines(data)
        except (msgspec.DecodeError, RecursionError):
            return None
        # Blank or multi-value lines: the per-line path says what they hold.
        if len(values) != count:
            return None
        if self._structs:
            # Plain dicts with the tag; bytes stay bytes (not base64 text).
            values = _BUILTINS(values, builtin_types=(bytes,))
        records: list[Any] = []
        for v in values:
            if type(v) is list:
                records.extend(v)  # a line holding an array: one record each
            else:
                records.append(v)
        return records


_BUILTINS = msgspec.to_builtins


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

    def decode(
        self, lines: list[Line] | Block
    ) -> tuple[list[Any], list[tuple[Line, str]]]:
        """Return the records of ``lines`` and each bad record with its reason."""
        if isinstance(lines, Block):
            lines = lines.lines()
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


# --- encoding -------------------------------------------------------------------


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
