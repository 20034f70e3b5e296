"""Decoding frames of records, with an optional schema, for every connector.

A frame holds one record or an array of records, as JSON or MessagePack (or
raw bytes; ``auto`` tells JSON from MessagePack by the first byte). With a
``schema`` (field name -> type name) records are validated by msgspec while
they are decoded; a record that breaks it becomes a `BadRecord` with the
reason instead of failing the whole frame.

Frames nesting deeper than ``max_depth`` levels of arrays/objects (default
`flowstream.DEFAULT_MAX_DEPTH`, 128) are bad frames too ("too deeply
nested"): checked before decoding for JSON and right after for MessagePack,
so a small hostile frame can never exhaust the recursion limit downstream.

Type names: ``str``, ``int``, ``float``, ``bool``, ``bytes``, ``any``,
``list``, ``dict``; a trailing ``?`` makes a field optional (may be missing).
Unknown fields are dropped.
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired, TypedDict

import msgspec

from flowstream import DEFAULT_MAX_DEPTH, NestingLimit

__all__ = ["TYPE_NAMES", "BadRecord", "Encoding", "RecordDecoder", "record_type"]

Encoding = Literal["json", "msgpack", "raw", "auto"]

TYPE_NAMES: dict[str, Any] = {
    "str": str,
    "int": int,
    "float": float,
    "bool": bool,
    "bytes": bytes,
    "any": Any,
    "list": list,
    "dict": dict,
}

MAX_RAW_IN_ERROR = 256
"""How many bytes of a bad frame a dead letter keeps."""


class BadRecord(msgspec.Struct, frozen=True):
    """A frame or record that could not be decoded, with why (for ``error``)."""

    reason: str
    raw: bytes

    def as_item(self) -> dict[str, Any]:
        """The dead-letter item: the reason and the (bounded) raw bytes."""
        return {"reason": self.reason, "raw": self.raw}


def record_type(schema: dict[str, str]) -> Any:
    """Build the TypedDict that validates records of ``schema``.

    Raises:
        ValueError: A type name is unknown (the message lists the known ones).
    """
    fields: dict[str, Any] = {}
    for name, type_name in schema.items():
        optional = type_name.endswith("?")
        base = TYPE_NAMES.get(type_name.rstrip("?"))
        if base is None:
            known = ", ".join(TYPE_NAMES)
            msg = f"field {name!r}: unknown type {type_name!r} (known: {known})"
            raise ValueError(msg)
        fields[name] = NotRequired[base] if optional else base
    return TypedDict("Record", fields)  # type: ignore[operator]


class RecordDecoder:
    """Decodes frames into records, reporting bad frames and records apart.

    Args:
        encoding: ``json``, ``msgpack``, ``raw`` (the frame is the record) or
            ``auto``: a text frame (``str``) is JSON; a binary one is JSON
            when it starts with ``{`` or ``[`` (after whitespace),
            MessagePack otherwise. A record frame is a map or an array, and
            no MessagePack map or array starts with those bytes, so the
            choice is unambiguous.
        schema: Field name -> type name, or None to accept any record.
        max_frame_bytes: Larger frames are refused whole.
        max_depth: Frames nesting deeper are refused whole.
    """

    def __init__(
        self,
        encoding: Encoding = "json",
        schema: dict[str, str] | None = None,
        max_frame_bytes: int = 1 << 20,
        max_depth: int = DEFAULT_MAX_DEPTH,
    ) -> None:
        self.encoding = encoding
        self.max_frame_bytes = max_frame_bytes
        self.nesting = NestingLimit(max_depth)
        self._small = max_depth  # bytes: no frame this short nests deeper
        record: Any = record_type(schema) if schema else None
        self._record = record
        target: Any = Any if record is None else record | list[record]
        # (typed, loose) decoder pairs by format; loose re-reads a frame whose
        # record broke the schema, to keep the other records.
        self._json = (msgspec.json.Decoder(target), msgspec.json.Decoder())
        self._msgpack = (msgspec.msgpack.Decoder(target), msgspec.msgpack.Decoder())

    def decode(self, frame: bytes | str) -> tuple[list[Any], list[BadRecord]]:
        """Return the good records of a frame and a `BadRecord` for each bad one."""
        text = isinstance(frame, str)
        data: bytes = frame.encode() if isinstance(frame, str) else frame
        size = len(data)
        if size > self.max_frame_bytes:
            limit = self.max_frame_bytes
            reason = f"frame of {size} bytes exceeds max_frame_bytes={limit}"
            return [], [BadRecord(reason, data[:MAX_RAW_IN_ERROR])]
        encoding = self.encoding
        if encoding == "raw":
            return [data], []
        if encoding == "auto":
            # A text frame is never MessagePack (``42`` or ``null`` is JSON).
            json = text or data.lstrip()[:1] in (b"{", b"[")
            encoding = "json" if json else "msgpack"
        # Every level of nesting takes a byte (two in JSON): a frame this
        # short fits the limit, and the usual small record pays nothing more.
        small = size <= self._small
        typed: Any
        loose: Any
        if encoding == "json":
            typed, loose = self._json
            if not small and self.nesting.json_exceeds(data):
                return [], [BadRecord(self.nesting.reason, data[:MAX_RAW_IN_ERROR])]
        else:
            typed, loose = self._msgpack
        try:
            value = typed.decode(data)
        except msgspec.DecodeError as exc:
            if self._record is None or not isinstance(exc, msgspec.ValidationError):
                reason = f"malformed {encoding}: {exc}"
                return [], [BadRecord(reason, data[:MAX_RAW_IN_ERROR])]
            return self._one_by_one(data, loose, encoding)
        except RecursionError:
            # MessagePack is checked once decoded; the decoder itself may
            # already run out of stack on a deep enough frame.
            return [], [BadRecord(self.nesting.reason, data[:MAX_RAW_IN_ERROR])]
        if not small and encoding == "msgpack" and self._msgpack_too_deep(data, value):
            return [], [BadRecord(self.nesting.reason, data[:MAX_RAW_IN_ERROR])]
        return (value if type(value) is list else [value]), []

    def _msgpack_too_deep(self, data: bytes, value: Any) -> bool:
        nesting = self.nesting
        return nesting.msgpack_may_exceed(data) and nesting.value_exceeds(value)

    def _one_by_one(
        self, data: bytes, loose: Any, encoding: str
    ) -> tuple[list[Any], list[BadRecord]]:
        # The frame parsed far enough to break the schema: keep the good records.
        try:
            value = loose.decode(data)
        except msgspec.DecodeError as exc:
            # The schema error came first, then the frame turned out malformed
            # (trailing bytes, say): the whole frame is bad.
            reason = f"malformed {encoding}: {exc}"
            return [], [BadRecord(reason, data[:MAX_RAW_IN_ERROR])]
        except RecursionError:
            return [], [BadRecord(self.nesting.reason, data[:MAX_RAW_IN_ERROR])]
        if encoding == "msgpack" and self._msgpack_too_deep(data, value):
            return [], [BadRecord(self.nesting.reason, data[:MAX_RAW_IN_ERROR])]
        records = value if type(value) is list else [value]
        good: list[Any] = []
        bad: list[BadRecord] = []
        for i, rec in enumerate(records):
            try:
                good.append(msgspec.convert(rec, self._record))
            except msgspec.ValidationError as exc:
                raw = msgspec.json.encode(rec)[:MAX_RAW_IN_ERROR]
                where = f"record {i}: " if type(value) is list else ""
                bad.append(BadRecord(f"{where}schema violation: {exc}", raw))
        return good, bad
