"""What ``ws.source`` takes and reports: its config and its statistics.

Also the resume helpers its config validates and its client uses: the
``"{seq}"`` placeholder of ``resume_message`` and the ``resume_query``
parameter added to the url.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import msgspec

from flowstream import (
    DEFAULT_MAX_DEPTH,
    FilePath,
)

from .._records import record_type
from ._common import _at_least_one, _Endpoint

SEQ = "{seq}"
"""Where ``resume_message`` puts the last sequence."""


def _has_placeholder(template: Any) -> bool:
    if isinstance(template, str):
        return SEQ in template
    if isinstance(template, bytes):
        return SEQ.encode() in template
    if isinstance(template, list):
        return any(_has_placeholder(v) for v in template)
    if isinstance(template, dict):
        return any(_has_placeholder(v) for v in template.values())
    return False


def _fill(template: Any, seq: Any) -> Any:
    """``template`` with the sequence in place of every ``"{seq}"``."""
    if isinstance(template, str):
        return seq if template == SEQ else template.replace(SEQ, str(seq))
    if isinstance(template, bytes):
        return template.replace(SEQ.encode(), str(seq).encode())
    if isinstance(template, list):
        return [_fill(v, seq) for v in template]
    if isinstance(template, dict):
        return {k: _fill(v, seq) for k, v in template.items()}
    return template


def _with_query(url: str, name: str, value: Any) -> str:
    """``url`` with the query parameter ``name`` set to ``value``."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    query = [(k, v) for k, v in query if k != name] + [(name, str(value))]
    return urlunsplit(parts._replace(query=urlencode(query)))


class WebSocketSourceConfig(
    _Endpoint, frozen=True, kw_only=True, forbid_unknown_fields=True
):
    """Config of ``ws.source``.

    Attributes:
        subscribe: Sent after every (re)connect in client mode: a string as a
            text frame, bytes as a binary frame, anything else encoded with
            ``encoding``.
        schema: Field name -> type name (``str``, ``int``, ``float``,
            ``bool``, ``bytes``, ``any``, ``list``, ``dict``; ``?`` makes a
            field optional); records that break it go to ``error``.
        max_frame_bytes: Larger frames go to ``error`` (connection kept),
            counted in ``oversized_frames``.
        max_depth: Deepest nesting of arrays/objects in a frame; a deeper
            frame goes to ``error`` as "too deeply nested" (the node goes on).
        hard_max_frame_bytes: Frames above this are not even read: the
            connection is closed with code 1009 (an ``error`` item and a
            ``frame_too_big`` event say so, ``oversized_frames`` counts it);
            default 4 x ``max_frame_bytes``.
        max_buffered_bytes: One memory budget for the frame bytes the source
            holds, all connections together: websockets' per-connection
            buffers (partial and complete frames), the queue for the graph
            and the journal's pending frames. When it is spent the source
            stops reading every socket (TCP backpressure) until it has
            drained to three quarters of it. It may be passed by one read
            chunk (256 KiB) and one frame (``hard_max_frame_bytes``) plus one
            more chunk, which
            lets a frame larger than the budget through.
        max_connections: Server mode: most clients connected at once; a
            further client is accepted and closed at once with code 1013
            (try again later), counted in ``refused_connections`` and
            logged (a warning each time the limit is reached again).
        queue_frames: Frames waiting for the graph, all connections
            together; past it (or past ``queue_bytes``), readers stop reading
            their sockets.
        queue_bytes: Bytes of those frames (one larger frame may enter an
            empty queue).
        read_buffer_frames: Frames websockets buffers per connection before
            it stops reading the socket.
        seq_field: Client mode: the record field holding the server's
            sequence number (a field name, dotted for nested ones:
            ``meta.seq``); numbers or strings, increasing. Records at or
            below the last one handed on are dropped and counted; a record
            without one goes to ``error``.
        resume_query: Client mode: on (re)connecting, once a sequence is
            known, add ``?NAME=<last seq>`` to the url.
        resume_message: Client mode: on (re)connecting, once a sequence is
            known, send this after ``subscribe`` (encoded like it), with the
            string ``"{seq}"`` replaced by the last sequence (the value
            itself where a whole string is ``"{seq}"``, its text inside a
            longer string).
        journal: A SQLite file: frames are written to it before they enter
            the graph, and replayed from it after a crash (needs a
            checkpoint store).
        journal_max_frames: Most frames read but not yet in the journal (a
            crash loses at most these) or journaled but not yet queued for
            the graph; readers wait past it.
    """

    subscribe: Any = None
    schema: dict[str, str] | None = None
    max_frame_bytes: int = 1 << 20
    max_depth: int = DEFAULT_MAX_DEPTH
    hard_max_frame_bytes: int | None = None
    max_buffered_bytes: int = 64 << 20
    max_connections: int = 1024
    queue_frames: int = 256
    queue_bytes: int = 1 << 20
    read_buffer_frames: int = 16
    seq_field: str | None = None
    resume_query: str | None = None
    resume_message: Any = None
    journal: FilePath | None = None
    journal_max_frames: int = 64

    def __post_init__(self) -> None:
        super().__post_init__()
        _at_least_one(
            max_frame_bytes=self.max_frame_bytes,
            max_depth=self.max_depth,
            max_buffered_bytes=self.max_buffered_bytes,
            max_connections=self.max_connections,
            queue_frames=self.queue_frames,
            queue_bytes=self.queue_bytes,
            read_buffer_frames=self.read_buffer_frames,
            journal_max_frames=self.journal_max_frames,
        )
        self._check_resume()
        if self.journal is not None and not self.journal.strip():
            msg = "journal must be a file path, got an empty string"
            raise ValueError(msg)
        if self.hard_max_frame_bytes is not None and (
            self.hard_max_frame_bytes < self.max_frame_bytes
        ):
            msg = (
                f"hard_max_frame_bytes ({self.hard_max_frame_bytes}) must be >= "
                f"max_frame_bytes ({self.max_frame_bytes})"
            )
            raise ValueError(msg)
        if self.schema:
            record_type(self.schema)  # names an unknown type now, not at run time
        if self.encoding == "raw" and not isinstance(
            self.subscribe, str | bytes | None
        ):
            msg = "with encoding 'raw', subscribe must be a string or bytes"
            raise ValueError(msg)

    def _check_resume(self) -> None:
        resume = self.resume_query is not None or self.resume_message is not None
        if self.seq_field is None:
            if resume:
                msg = "resume_query and resume_message need a seq_field"
                raise ValueError(msg)
            return
        if self.mode != "client":
            msg = "seq_field is for mode 'client' (one server, one sequence)"
            raise ValueError(msg)
        if self.encoding == "raw":
            msg = "seq_field needs records with fields, not encoding 'raw'"
            raise ValueError(msg)
        if not all(self.seq_keys):
            msg = (
                "seq_field must be a field name, dotted if nested, "
                f"got {self.seq_field!r}"
            )
            raise ValueError(msg)
        if self.resume_query is not None and not self.resume_query:
            msg = "resume_query must be a query parameter name, got ''"
            raise ValueError(msg)
        if self.resume_message is not None and not _has_placeholder(
            self.resume_message
        ):
            msg = f"resume_message must contain {SEQ!r}, where the sequence goes"
            raise ValueError(msg)

    @property
    def seq_keys(self) -> list[str]:
        """The keys of ``seq_field``, outermost first (empty without one)."""
        return self.seq_field.split(".") if self.seq_field is not None else []

    @property
    def hard_limit(self) -> int:
        """The frame size above which a connection is closed (1009)."""
        return self.hard_max_frame_bytes or 4 * self.max_frame_bytes


class WebSocketSourceStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """A snapshot of a ``ws.source`` node (from ``statistics()``).

    Attributes:
        connections: Open connections now.
        frames: Frames received since the start.
        buffered_frames: Frames waiting for the graph now.
        buffered_bytes: Their size.
        peak_frames: The most frames that ever waited (<= ``queue_frames``).
        peak_bytes: The most bytes that ever waited (<= ``queue_bytes``, or
            one frame's size if larger).
        held_bytes: Frame bytes held anywhere in the source now (connections,
            queue, journal): what ``max_buffered_bytes`` bounds.
        peak_held_bytes: The most there ever were (<= ``max_buffered_bytes``
            + 512 KiB + ``hard_max_frame_bytes``).
        reading_stops: Times the budget was spent and every socket stopped
            being read.
        refused_connections: Clients closed with 1013 (``max_connections``).
        oversized_frames: Frames over ``max_frame_bytes`` (to ``error``) or
            over ``hard_max_frame_bytes`` (connection closed with 1009).
        waiting_readers: Readers waiting for room (not reading their socket).
        duplicates: Records at or below the last sequence, dropped
            (``seq_field``).
        journaled_frames: Frames written to the journal since the start.
        unjournaled_frames: Frames read but not yet in the journal now: what
            a crash would lose (besides what the connections buffer).
        peak_unjournaled: The most there ever were (<=
            ``journal_max_frames``).
        replayed_frames: Frames replayed from the journal at start.
        pruned_frames: Frames pruned from the journal (covered by a
            committed checkpoint).
    """

    connections: int
    frames: int
    buffered_frames: int
    buffered_bytes: int
    peak_frames: int
    peak_bytes: int
    waiting_readers: int
    held_bytes: int = 0
    peak_held_bytes: int = 0
    reading_stops: int = 0
    refused_connections: int = 0
    oversized_frames: int = 0
    duplicates: int = 0
    journaled_frames: int = 0
    unjournaled_frames: int = 0
    peak_unjournaled: int = 0
    replayed_frames: int = 0
    pruned_frames: int = 0
