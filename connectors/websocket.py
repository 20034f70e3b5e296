"""WebSocket connectors: ``ws.source`` takes records in, ``ws.sink`` sends them out.

Both run as a server (bound in ``initialize``, so the port is known before
``WorkflowStarted``; port 0 picks a free one, published as the node event
``listening`` and logged) or as a client of a ``url`` (reconnecting with
exponential backoff and jitter, node events ``connected``/``reconnected``).

Frames carry one record or an array of records, as JSON (text frames),
MessagePack (binary frames) or raw bytes (the frame is the record); decoding
and the optional schema are `connectors._records.RecordDecoder`'s.

Memory stays bounded end to end (never an unbounded buffer on the data path):

* ``ws.source``: each connection's reader hands its frames to a small bounded
  queue (``queue_frames``, ``queue_bytes``); the node decodes them as it
  drains them into the graph. When the pipeline is full the queue is full,
  readers wait, websockets stops reading their sockets once
  ``read_buffer_frames`` frames are buffered, and TCP flow control makes the
  senders' ``send`` block. With a ``journal`` (`connectors._journal`) frames
  pass through it first, and it holds back at most ``journal_max_frames``.
* ``ws.sink`` (client): ``send`` waits while the socket's write buffer is full,
  which holds up the sink's input channel and so the graph. Frames not yet
  confirmed by the peer (see `WebSocketSink`) are kept, up to
  ``max_unacked_bytes``.
* ``ws.sink`` (server): each subscriber has a queue of ``subscriber_queue``
  frames; a subscriber that falls behind is dropped or loses its oldest frames
  (``slow``), and never slows the others or the graph.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
from collections import deque
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import msgspec
from websockets.asyncio.client import connect
from websockets.asyncio.server import serve
from websockets.exceptions import (
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    InvalidHandshake,
)
from websockets.frames import CloseCode
from websockets.protocol import State

from flowstream import node
from flowstream.errors import ConnectError

from ._journal import Journal
from ._records import (
    MAX_RAW_IN_ERROR,
    BadRecord,
    Encoding,
    RecordDecoder,
    record_type,
)

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine

    from websockets.asyncio.client import ClientConnection
    from websockets.asyncio.connection import Connection
    from websockets.asyncio.server import Server, ServerConnection
    from websockets.http11 import Request, Response

    from flowstream import NodeContext, NodeState

    from ._journal import Row

__all__ = [
    "Reconnect",
    "WebSocketSink",
    "WebSocketSinkConfig",
    "WebSocketSinkStatistics",
    "WebSocketSource",
    "WebSocketSourceConfig",
    "WebSocketSourceStatistics",
    "ws_sink",
    "ws_source",
]

Mode = Literal["server", "client"]
Data = str | bytes


# A frame on its way to the graph, with its sender and its journal id (0:
# not journaled); or, instead of the frame, why a frame could not be read.
_Entry = tuple[bytes | BadRecord, str, int]
BATCH = 256
"""Records per batch the source aims for (it never waits to fill one).

Smaller than the engine's usual 1024: records are decoded just before they are
handed on, and a batch that stays small stays in the CPU caches and below the
garbage collector's first threshold (measured: +10% records/s over 1024).
"""


# --- config ------------------------------------------------------------------


class Reconnect(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How a client reconnects: exponential backoff with jitter.

    After *n* consecutive failed attempts the wait is ``delay_ms *
    backoff_multiplier**(n-1)``, capped at ``max_delay_ms``, times a random
    factor in ``[1 - jitter, 1]`` (so that many clients do not retry in step).
    A lost connection waits one ``delay_ms`` (with jitter) before reconnecting.

    Attributes:
        max_attempts: Consecutive failed attempts after which the node fails
            with `flowstream.errors.ConnectError`; None retries forever.
    """

    delay_ms: float = 100.0
    backoff_multiplier: float = 2.0
    max_delay_ms: float = 10_000.0
    jitter: float = 0.5
    max_attempts: int | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.delay_ms <= self.max_delay_ms:
            msg = (
                "need 0 <= delay_ms <= max_delay_ms, "
                f"got {self.delay_ms} and {self.max_delay_ms}"
            )
            raise ValueError(msg)
        if not self.backoff_multiplier >= 1:
            msg = f"backoff_multiplier must be >= 1, got {self.backoff_multiplier}"
            raise ValueError(msg)
        if not 0 <= self.jitter <= 1:
            msg = f"jitter must be between 0 and 1, got {self.jitter}"
            raise ValueError(msg)
        if self.max_attempts is not None and self.max_attempts < 1:
            msg = f"max_attempts must be >= 1 or null, got {self.max_attempts}"
            raise ValueError(msg)

    def delay_s(self, failures: int) -> float:
        """Return the wait in seconds after ``failures`` consecutive failures."""
        exponent = min(max(failures, 1) - 1, 64)  # past the cap long before
        delay = min(
            self.delay_ms * self.backoff_multiplier**exponent, self.max_delay_ms
        )
        return delay * (1.0 - self.jitter * random.random()) / 1000.0


class _Endpoint(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Where a WebSocket connector listens or connects (shared config)."""

    mode: Mode
    """``server``: listen on host/port(/path); ``client``: connect to ``url``."""
    url: str | None = None
    host: str = "127.0.0.1"
    port: int = 0
    """0 binds a free port; the ``listening`` event tells which."""
    path: str | None = None
    """Accept only this request path (others get 404); None accepts any."""
    encoding: Encoding = "json"
    compression: bool = False
    """Offer/accept permessage-deflate (costs CPU; off by default)."""
    ping_interval: float | None = 20.0
    """Seconds between keepalive pings; a peer silent for as long is dropped."""
    open_timeout: float = 10.0
    close_timeout: float = 3.0
    """Seconds a closing handshake may take (a server source's peers have as
    long to deliver what they sent before a stop; a server sink's subscribers
    to take their queues at end of input)."""
    reconnect: Reconnect = msgspec.field(default_factory=Reconnect)

    def __post_init__(self) -> None:
        if self.mode == "client":
            if not self.url or not self.url.startswith(("ws://", "wss://")):
                msg = (
                    f"mode 'client' needs a url 'ws://host:port/path', got {self.url!r}"
                )
                raise ValueError(msg)
        elif self.url is not None:
            msg = "url is for mode 'client'; a server takes host, port and path"
            raise ValueError(msg)
        if not 0 <= self.port <= 65535:
            msg = f"port must be between 0 and 65535, got {self.port}"
            raise ValueError(msg)
        if self.path is not None and not self.path.startswith("/"):
            msg = f"path must start with '/', got {self.path!r}"
            raise ValueError(msg)
        for name in ("open_timeout", "close_timeout", "ping_interval"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                msg = f"{name} must be > 0 seconds, got {value}"
                raise ValueError(msg)


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


def _at_least_one(**values: int) -> None:
    for name, value in values.items():
        if value < 1:
            msg = f"{name} must be >= 1, got {value}"
            raise ValueError(msg)


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
        max_frame_bytes: Larger frames go to ``error`` (connection kept).
        hard_max_frame_bytes: Frames above this are not even read: the
            connection is closed with code 1009 (and an ``error`` item says
            so); default 4 x ``max_frame_bytes``.
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
    hard_max_frame_bytes: int | None = None
    queue_frames: int = 256
    queue_bytes: int = 1 << 20
    read_buffer_frames: int = 16
    seq_field: str | None = None
    resume_query: str | None = None
    resume_message: Any = None
    journal: str | None = None
    journal_max_frames: int = 64

    def __post_init__(self) -> None:
        super().__post_init__()
        _at_least_one(
            max_frame_bytes=self.max_frame_bytes,
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


class WebSocketSinkConfig(
    _Endpoint, frozen=True, kw_only=True, forbid_unknown_fields=True
):
    """Config of ``ws.sink``.

    Attributes:
        records_per_frame: Most records in one frame. Frames are arrays, made
            from what is ready (no waiting to fill one); 1 sends each record
            as its own frame (not an array). Ignored for ``raw``.
        max_unacked_bytes: Client mode: bytes of frames sent but not yet
            confirmed by the server, kept to resend after a reconnect; when
            reached, the sink waits for the confirmation.
        subscriber_queue: Server mode: frames queued per subscriber.
        slow: Server mode: what happens to a subscriber whose queue is full:
            ``drop_subscriber`` closes it (code 1008), ``drop_oldest`` drops
            its oldest queued frames. Both are counted and published as node
            events (``subscriber_dropped``, ``frames_dropped``).
    """

    records_per_frame: int = 100
    max_unacked_bytes: int = 4 << 20
    subscriber_queue: int = 256
    slow: Literal["drop_subscriber", "drop_oldest"] = "drop_subscriber"

    def __post_init__(self) -> None:
        super().__post_init__()
        _at_least_one(
            records_per_frame=self.records_per_frame,
            max_unacked_bytes=self.max_unacked_bytes,
            subscriber_queue=self.subscriber_queue,
        )
        if self.encoding == "auto":
            msg = "encoding 'auto' is for sources; a sink sends json, msgpack or raw"
            raise ValueError(msg)


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
    duplicates: int = 0
    journaled_frames: int = 0
    unjournaled_frames: int = 0
    peak_unjournaled: int = 0
    replayed_frames: int = 0
    pruned_frames: int = 0


class WebSocketSinkStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """A snapshot of a ``ws.sink`` node (from ``statistics()``).

    Attributes:
        frames: Frames sent (client) or queued for subscribers (server).
        connections: Client mode: connections made since the start.
        unacked_frames: Client mode: frames sent and not yet confirmed.
        unacked_bytes: Their size.
        subscribers: Server mode: subscribers now.
        dropped_subscribers: Server mode: subscribers closed for being slow.
        dropped_frames: Server mode: frames dropped by ``drop_oldest``.
    """

    frames: int
    connections: int
    unacked_frames: int
    unacked_bytes: int
    subscribers: int
    dropped_subscribers: int
    dropped_frames: int


# --- shared pieces ---------------------------------------------------------------


class _Intake:
    """The bounded FIFO of frames from connection readers to the source node.

    Bounded in frames and in bytes: `put` waits while the queue is full, and
    that wait is what stops a reader from reading its socket. A frame enters
    if it fits, or if the queue is empty (a frame larger than ``max_bytes``
    passes, alone). One consumer (the source node) pops ``_entries`` itself,
    keeping ``bytes`` and waking ``_space`` if readers wait, and calls `wait`
    for more. `close` means no more frames: what is queued can still be
    popped, then `wait` returns False; later puts are refused.
    """

    __slots__ = (
        "_data",
        "_entries",
        "_space",
        "bytes",
        "closed",
        "max_bytes",
        "max_frames",
        "peak_bytes",
        "peak_frames",
        "waiting",
    )

    def __init__(self, max_frames: int, max_bytes: int) -> None:
        self.max_frames = max_frames
        self.max_bytes = max_bytes
        self.bytes = 0
        self.closed = False
        self.peak_frames = 0
        self.peak_bytes = 0
        self.waiting = 0
        self._entries: deque[_Entry] = deque()
        self._data = asyncio.Event()
        self._space = asyncio.Event()

    def __len__(self) -> int:
        return len(self._entries)

    def offer(self, entry: _Entry, size: int) -> bool:
        """Queue ``entry`` (``size`` bytes) if it fits now; False otherwise."""
        entries = self._entries
        n = len(entries)
        total = self.bytes + size
        if (n and (n >= self.max_frames or total > self.max_bytes)) or self.closed:
            return False
        entries.append(entry)
        self.bytes = total
        if total > self.peak_bytes:
            self.peak_bytes = total
        if n >= self.peak_frames:
            self.peak_frames = n + 1
        if not n:
            self._data.set()  # the consumer waits only on an empty queue
        return True

    async def put(self, entry: _Entry, size: int) -> bool:
        """Queue ``entry``, waiting for room; False (entry dropped) once closed."""
        while not self.offer(entry, size):
            if self.closed:
                return False
            self._space.clear()
            self.waiting += 1
            try:
                await self._space.wait()
            finally:
                self.waiting -= 1
        return True

    async def wait(self) -> bool:
        """Wait for an entry; False when closed and drained."""
        while not self._entries:
            if self.closed:
                return False
            self._data.clear()
            await self._data.wait()
        return True

    def close(self) -> None:
        self.closed = True
        self._data.set()
        self._space.set()


def _peer(ws: Connection) -> str:
    address = ws.remote_address
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}"
    return str(address)


def _only_path(path: str) -> Callable[[ServerConnection, Request], Response | None]:
    def check(connection: ServerConnection, request: Request) -> Response | None:
        if request.path.partition("?")[0] == path:
            return None
        return connection.respond(
            HTTPStatus.NOT_FOUND, f"no endpoint here; use {path}\n"
        )

    return check


async def _listen(
    config: _Endpoint,
    handler: Callable[[ServerConnection], Coroutine[Any, Any, None]],
    ctx: NodeContext,
    **limits: Any,
) -> Server:
    """Bind a server now and publish its address (``listening`` event and log)."""
    server = await serve(
        handler,
        config.host,
        config.port,
        process_request=_only_path(config.path) if config.path else None,
        compression="deflate" if config.compression else None,
        ping_interval=config.ping_interval,
        ping_timeout=config.ping_interval,
        open_timeout=config.open_timeout,
        close_timeout=config.close_timeout,
        **limits,
    )
    host, port = server.sockets[0].getsockname()[:2]
    netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    url = f"ws://{netloc}{config.path or '/'}"
    addresses = [list(s.getsockname()[:2]) for s in server.sockets]
    data = {"host": host, "port": port, "url": url, "addresses": addresses}
    ctx.event("listening", data)
    ctx.logger.info("listening on %s", url, extra={"host": host, "port": port})
    return server


async def _close_server(server: Server, seconds: float) -> None:
    server.close()
    try:
        async with asyncio.timeout(seconds):
            await server.wait_closed()
    except TimeoutError:
        server.logger.warning("connections still open %.1f s after close", seconds)


def _client_options(config: _Endpoint) -> dict[str, Any]:
    return {
        "compression": "deflate" if config.compression else None,
        "ping_interval": config.ping_interval,
        "ping_timeout": config.ping_interval,
        "open_timeout": config.open_timeout,
        "close_timeout": config.close_timeout,
    }


async def _pause(stopping: asyncio.Event, seconds: float) -> None:
    """Sleep ``seconds``, or less if the run is asked to stop."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await stopping.wait()


def _connect_failed(url: str, failures: int, exc: BaseException) -> ConnectError:
    msg = f"cannot connect to {url} ({failures} attempts): {exc}"
    return ConnectError(msg)


# --- ws.source -----------------------------------------------------------------


class WebSocketSource:
    """Records from WebSocket frames: a server many clients send to, or a client.

    Stream-safe: unbounded until the run is stopped. Each frame holds one
    record or an array of records (``encoding``); records come out in the
    order each connection sent them (connections interleave).

    Bad input never closes a connection: a frame that does not decode, a
    record that breaks the ``schema`` or a frame over ``max_frame_bytes`` goes
    to ``error`` as ``{"reason", "raw" (first 256 bytes), "peer"}`` and is
    counted. Only a frame over ``hard_max_frame_bytes`` closes its connection
    (code 1009), since reading it would buffer it.

    Memory: at most ``queue_frames``/``queue_bytes`` of frames taken in, one
    decoded batch (about 256 records), and per connection what websockets
    buffers (``read_buffer_frames`` frames, each under
    ``hard_max_frame_bytes``); with a journal, ``journal_max_frames`` frames
    more. Past that, senders block (TCP backpressure).

    A graceful stop closes the listener (or the client connection) with code
    1001 and keeps reading until each peer has answered the close: every frame
    a peer sent before that reaches the graph. Bounded by ``close_timeout``
    and the run's drain timeout.

    Delivery across a crash (stream mode with a checkpoint store):

    * By default, at most once: what was read but not yet handed on (the
      queue, websockets' and the kernel's buffers) is lost, and a restarted
      run takes whatever its peers send next.
    * Client mode with ``seq_field`` and ``resume_query`` or
      ``resume_message``: exactly-once state when the server honours the
      request. The state keeps the last sequence handed on (``seq``); every
      connect, including the first after a restart from a checkpoint, asks
      to resume after it, and records at or below it are dropped (counted
      as ``duplicates``), so each record counts once downstream.
    * ``journal``: at least once from the moment a frame is journaled.
      Every frame read is appended to the SQLite journal (group commit,
      fsync) before it is decoded; the state keeps the id of the last frame
      whose records were handed on (``journal_id``), and a restart replays
      the frames after it (decoded like live ones, bad ones to ``error``)
      before live frames. A crash loses at most ``journal_max_frames``
      frames read but not yet journaled (``unjournaled_frames``; a journal
      its last run did not close is reported at start with that bound),
      plus what the connections had buffered (``read_buffer_frames`` each,
      and the socket buffers). It needs a checkpoint store (the run fails at
      start otherwise): a committed epoch prunes the frames up to what the
      previous commit had handed on (a lower bound of what the epoch
      recorded, as a source cannot see its snapshot), so the journal holds
      about two checkpoint intervals of frames plus at most
      ``journal_max_frames`` + ``queue_frames`` waiting for the graph. A
      stuck graph stops the readers, so it does not grow the journal. With
      a new checkpoint store every frame left in the journal is replayed.

    Events: ``listening`` ``{host, port, url}``; ``client_connected`` and
    ``client_disconnected`` ``{peer}`` (server); ``connected``,
    ``reconnected`` ``{url, connections}`` (plus ``since``, the sequence
    asked to resume after, with ``seq_field``) and ``disconnected``
    (client); ``journal_opened`` ``{path, after, replay, pruned, unclean,
    max_unjournaled}``.

    Example:
        A server on a free port, validating records, with a journal (at
        least once across a crash, losing at most ``journal_max_frames``
        frames in flight; needs a checkpoint store)::

            - id: ingest
              type: ws.source
              config:
                mode: server
                port: 0
                path: /ingest
                encoding: json
                schema: {sensor: str, value: float, ts: float}
                journal: ingest-journal.db
    """

    def __init__(self, config: WebSocketSourceConfig) -> None:
        self.config = config
        self._decoder = RecordDecoder(
            config.encoding, config.schema, config.max_frame_bytes
        )
        self._intake = _Intake(config.queue_frames, config.queue_bytes)
        self._stack = contextlib.AsyncExitStack()
        self._tasks: list[asyncio.Task[None]] = []
        self._server: Server | None = None
        self._client: ClientConnection | None = None
        self._ctx: NodeContext | None = None
        self._state: NodeState = {}
        self._failure: Exception | None = None
        self._frames = 0
        # resume: the last sequence taken (None: none yet, or no seq_field)
        self._seq_keys = config.seq_keys
        self._seq: Any = None
        self._duplicates = 0
        # journal
        self._journal: Journal | None = None
        self._replay_until = 0
        self._replayed = asyncio.Event()
        self._replayed_frames = 0
        self._prune_floor = 0
        self._pruned_to = 0

    async def initialize(self, ctx: NodeContext) -> None:
        """Bind the server (or start the client); readers start at once.

        With a journal, open it first (pruning what the restored checkpoint
        covers); its frames after the checkpoint are replayed by `execute`.

        Raises:
            OSError: The server cannot bind its address.
            ValueError: A journal without a checkpoint store.
            flowstream.errors.ConnectorError: The journal cannot be opened.
        """
        self._ctx = ctx
        self._state = ctx.state
        self._seq = ctx.state.get("seq") if self._seq_keys else None
        config = self.config
        try:
            # Readers and the stop watcher live in a group owned by this node:
            # entered here, left in shutdown (the executor runs both in one
            # task). Their bodies never raise, so it never cancels the run.
            group = await self._stack.enter_async_context(asyncio.TaskGroup())
            if config.journal is not None:
                await self._open_journal(ctx, config.journal, group)
            else:
                self._replayed.set()
            if config.mode == "server":
                self._server = await _listen(
                    config,
                    self._serve_client,
                    ctx,
                    max_size=config.hard_limit,
                    max_queue=config.read_buffer_frames,
                )
                self._stack.push_async_callback(
                    _close_server, self._server, config.close_timeout
                )
            else:
                self._tasks.append(group.create_task(self._run_client(ctx)))
            self._tasks.append(group.create_task(self._stop_on_request(ctx)))
        except BaseException:
            await self.shutdown()
            raise

    async def execute(self) -> AsyncIterator[list[Any]]:
        """Yield the records of every frame taken in, in batches.

        Frames are decoded here, just before their records are handed on
        (fresh objects, consumed at once): batches of about `BATCH` records,
        or whatever is ready when no frame is waiting. With a journal, the
        frames to replay come first.

        The state (``seq``, ``journal_id``) is updated just before each
        batch leaves and while waiting, so a checkpoint between batches
        records exactly what was handed on.
        """
        if self._journal is not None:
            async with contextlib.aclosing(self._replay(self._journal)) as replay:
                async for replayed in replay:
                    yield replayed
            self._replayed.set()
        intake = self._intake
        entries = intake._entries
        popleft = entries.popleft
        decode = self._decode
        note = self._note if self._seq_keys or self._journal else None
        batch: list[Any] = []
        last_id = 0
        while True:
            if not entries:
                if batch:
                    if note is not None:
                        note(last_id)
                    yield batch
                    batch = []
                else:
                    if note is not None:
                        note(last_id)  # frames that held no record
                    if not await intake.wait():
                        break
                continue
            # Popped here rather than by an _Intake method: this runs once per
            # frame. The byte count goes down and waiting readers try again.
            frame, peer, frame_id = popleft()
            if type(frame) is bytes:
                intake.bytes -= len(frame)
                if intake.waiting:
                    intake._space.set()
                good, bad = decode(frame)
                if frame_id:
                    last_id = frame_id
                if batch:
                    batch += good
                else:
                    batch = good
                if bad:
                    self._reject(bad, peer)
                    if note is not None:
                        note(last_id)
                    yield batch  # may be empty: it flushes the dead letters
                    batch = []
                elif len(batch) >= BATCH:
                    if note is not None:
                        note(last_id)
                    yield batch
                    batch = []
            else:
                self._reject([frame], peer)  # type: ignore[list-item]
                if note is not None:
                    note(last_id)
                yield batch
                batch = []
        if self._failure is not None:
            raise self._failure

    async def shutdown(self) -> None:
        """Stop readers, close the server and connections, close the journal.

        Frames read but not yet journaled are journaled now (replayed by the
        next run).
        """
        self._intake.close()
        journal = self._journal
        if journal is not None:
            journal.close()
        for task in self._tasks:
            task.cancel()
        try:
            await self._stack.aclose()
        finally:
            if journal is not None:
                await journal.aclose()

    def statistics(self) -> WebSocketSourceStatistics:
        """Return the node's counters now."""
        if self._server is not None:
            connections = len(self._server.connections)
        else:
            connections = int(self._client is not None)
        intake = self._intake
        journal = self._journal
        return WebSocketSourceStatistics(
            connections=connections,
            frames=self._frames,
            buffered_frames=len(intake),
            buffered_bytes=intake.bytes,
            peak_frames=intake.peak_frames,
            peak_bytes=intake.peak_bytes,
            waiting_readers=intake.waiting + (journal.waiting if journal else 0),
            duplicates=self._duplicates,
            journaled_frames=journal.journaled if journal else 0,
            unjournaled_frames=journal.unjournaled if journal else 0,
            peak_unjournaled=journal.peak_unjournaled if journal else 0,
            replayed_frames=self._replayed_frames,
            pruned_frames=journal.pruned if journal else 0,
        )

    # --- internals ---------------------------------------------------------------

    def _decode(self, frame: bytes) -> tuple[list[Any], list[BadRecord]]:
        try:
            good, bad = self._decoder.decode(frame)
        except msgspec.DecodeError as exc:
            # RecordDecoder lets a few malformed frames raise (a schema error
            # before trailing garbage): still bad input.
            reason = f"malformed {self.config.encoding}: {exc}"
            return [], [BadRecord(reason, frame[:MAX_RAW_IN_ERROR])]
        if self._seq_keys and good:
            good = self._in_sequence(good, bad)
        return good, bad

    def _in_sequence(self, records: list[Any], bad: list[BadRecord]) -> list[Any]:
        """Keep the records after the last sequence; note the new last one."""
        keys = self._seq_keys
        last = self._seq
        kept: list[Any] = []
        for record in records:
            seq = record
            for key in keys:
                seq = seq.get(key, _NO_SEQ) if type(seq) is dict else _NO_SEQ
            if type(seq) not in (int, float, str):
                reason = (
                    f"no sequence: field {self.config.seq_field!r} is missing "
                    "or not a number or a string"
                )
                bad.append(_bad_record(reason, record))
                continue
            if last is not None:
                try:
                    seen = seq <= last
                except TypeError:
                    reason = f"sequence {seq!r} cannot follow {last!r}"
                    bad.append(_bad_record(reason, record))
                    continue
                if seen:
                    self._duplicates += 1
                    continue
            last = seq
            kept.append(record)
        self._seq = last
        return kept

    def _note(self, frame_id: int) -> None:
        """Record in the state what was handed on (called before each batch)."""
        if frame_id:
            self._state["journal_id"] = frame_id
        if self._seq is not None:
            self._state["seq"] = self._seq

    def _reject(self, bad: list[BadRecord], peer: str) -> None:
        assert self._ctx is not None
        for record in bad:
            item = record.as_item()
            item["peer"] = peer
            self._ctx.dead_letter(item, record.reason)

    async def _pump(self, ws: Connection, peer: str) -> bool:
        """Read frames into the intake (or the journal) until the connection closes.

        Returns False when the intake was closed (the node is shutting down).
        """
        recv = ws.recv
        intake = self._intake
        offer = intake.offer
        journal = self._journal
        try:
            while True:
                frame = await recv(decode=False)
                self._frames += 1
                if journal is not None:
                    if not journal.offer(frame, peer) and not await journal.add(
                        frame, peer
                    ):
                        return False
                    continue
                entry = (frame, peer, 0)
                size = len(frame)
                if not offer(entry, size) and not await intake.put(entry, size):
                    return False
        except ConnectionClosedOK:
            return True
        except ConnectionClosedError as exc:
            assert self._ctx is not None
            if exc.sent is not None and exc.sent.code == CloseCode.MESSAGE_TOO_BIG:
                limit = self.config.hard_limit
                reason = (
                    f"frame larger than hard_max_frame_bytes={limit}: "
                    "connection closed with code 1009"
                )
                return await intake.put((BadRecord(reason, b""), peer, 0), 0)
            self._ctx.logger.warning(
                "connection from %s lost: %s", peer, exc, extra={"peer": peer}
            )
            return True

    async def _serve_client(self, ws: ServerConnection) -> None:
        assert self._ctx is not None
        peer = _peer(ws)
        self._ctx.event("client_connected", {"peer": peer})
        try:
            await self._pump(ws, peer)
        finally:
            self._ctx.event("client_disconnected", {"peer": peer})

    def _control_frame(self, value: Any) -> Data | None:
        if value is None or isinstance(value, str | bytes):
            return value
        if self.config.encoding == "msgpack":
            return msgspec.msgpack.encode(value)
        return msgspec.json.encode(value).decode()

    def _resume(self, url: str) -> tuple[str, Data | None]:
        """Where to connect and what to send to resume after the last sequence."""
        config = self.config
        seq = self._state.get("seq") if self._seq_keys else None
        if seq is None:
            return url, None
        if config.resume_query is not None:
            url = _with_query(url, config.resume_query, seq)
        message = None
        if config.resume_message is not None:
            message = self._control_frame(_fill(config.resume_message, seq))
        return url, message

    async def _run_client(self, ctx: NodeContext) -> None:
        try:
            await self._follow(ctx)
            if self._journal is not None:
                await self._journal.drain()  # what was read reaches the intake
        except Exception as exc:  # reported by execute, never to the group
            self._failure = exc
        finally:
            self._intake.close()

    async def _follow(self, ctx: NodeContext) -> None:
        """Connect, subscribe, resume and read; reconnect until stopped."""
        config = self.config
        url = config.url
        assert url is not None
        policy = config.reconnect
        options = _client_options(config)
        subscribe = self._control_frame(config.subscribe)
        if self._journal is not None and self._seq_keys:
            # The resume request must name the last sequence of the replay.
            await self._replayed.wait()
        failures = connections = 0
        while not ctx.stopping.is_set():
            target, resume = self._resume(url)
            try:
                ws = await connect(
                    target,
                    max_size=config.hard_limit,
                    max_queue=config.read_buffer_frames,
                    **options,
                )
            except (OSError, TimeoutError, InvalidHandshake) as exc:
                failures += 1
                if policy.max_attempts is not None and failures >= policy.max_attempts:
                    self._failure = _connect_failed(url, failures, exc)
                    return
                delay = policy.delay_s(failures)
                ctx.logger.warning(
                    "cannot connect to %s (%s); retrying in %.2f s",
                    url,
                    exc,
                    delay,
                    extra={"url": url, "failures": failures},
                )
                await _pause(ctx.stopping, delay)
                continue
            failures = 0
            connections += 1
            self._client = ws
            try:
                name = "reconnected" if connections > 1 else "connected"
                data = {"url": url, "connections": connections}
                if self._seq_keys:
                    data["since"] = self._state.get("seq")
                ctx.event(name, data)
                if ctx.stopping.is_set():
                    await ws.close(CloseCode.GOING_AWAY)
                    return
                if subscribe is not None:
                    await ws.send(subscribe)
                if resume is not None:
                    await ws.send(resume)
                if not await self._pump(ws, url):
                    return
            except ConnectionClosed:
                pass  # the subscribe message met a closed connection
            finally:
                self._client = None
                ws.transport.abort()  # no-op after a closing handshake
            if not ctx.stopping.is_set():
                ctx.event("disconnected", {"url": url})
                await _pause(ctx.stopping, policy.delay_s(1))

    async def _stop_on_request(self, ctx: NodeContext) -> None:
        await ctx.stopping.wait()
        try:
            if self._server is not None:
                # Stop accepting; closing each connection with 1001 lets every
                # frame its peer sent before the close reach the intake first.
                self._server.close()
                await self._server.wait_closed()
                if self._journal is not None:
                    await self._journal.drain()
                self._intake.close()
            elif self._client is not None:
                await self._client.close(CloseCode.GOING_AWAY)
        except Exception as exc:  # reported by execute, never to the group
            self._failure = exc
            self._intake.close()

    # --- journal -----------------------------------------------------------------

    async def _open_journal(
        self, ctx: NodeContext, path: str, group: asyncio.TaskGroup
    ) -> None:
        if not ctx.checkpointing:
            msg = (
                f"journal {path!r} needs stream mode with a checkpoint store "
                "(checkpoint: {path: ...}): only checkpoints say which frames "
                "the graph has taken, so without them it would never be pruned"
            )
            raise ValueError(msg)
        config = self.config
        journal = self._journal = Journal(
            path, max_frames=config.journal_max_frames, max_bytes=config.queue_bytes
        )
        after = self._state.get("journal_id", 0)
        opened = await journal.open(after)
        self._replay_until = opened.last_id
        self._prune_floor = self._pruned_to = after
        ctx.on_commit(self._committed)
        for work in (journal.write(), journal.deliver(self._put_journaled)):
            self._tasks.append(group.create_task(self._journaling(work)))
        data = {
            "path": path,
            "after": after,
            "replay": opened.backlog,
            "pruned": opened.pruned,
            "unclean": opened.unclean,
            "max_unjournaled": config.journal_max_frames,
        }
        ctx.event("journal_opened", data)
        if opened.unclean:
            ctx.logger.warning(
                "journal %s was left open by its last run (a crash?): it may "
                "have lost up to %s frames it had read but not yet journaled, "
                "plus what its connections had buffered",
                path,
                opened.lost_at_most,
                extra={"path": path, "lost_at_most": opened.lost_at_most},
            )
        if opened.behind:
            ctx.logger.warning(
                "journal %s ends before frame %d, which the checkpoint covers: "
                "it is not the journal the checkpoint was taken with",
                path,
                after,
            )
        if opened.backlog:
            ctx.logger.info(
                "journal %s: replaying %d frames after frame %d",
                path,
                opened.backlog,
                after,
            )

    async def _journaling(self, work: Coroutine[Any, Any, None]) -> None:
        try:
            await work
        except Exception as exc:  # reported by execute, never to the group
            self._failure = exc
            self._intake.close()
            if self._journal is not None:
                self._journal.close()

    async def _put_journaled(self, row: Row) -> bool:
        frame_id, frame, peer = row
        entry = (frame, peer, frame_id)
        size = len(frame)
        intake = self._intake
        return intake.offer(entry, size) or await intake.put(entry, size)

    async def _replay(self, journal: Journal) -> AsyncGenerator[list[Any], None]:
        """The records of the journaled frames the checkpoint did not cover."""
        after, until = self._state.get("journal_id", 0), self._replay_until
        decode = self._decode
        batch: list[Any] = []
        while after < until:
            rows = await journal.read(after, until, BATCH)
            if not rows:
                break
            for frame_id, frame, peer in rows:
                good, bad = decode(frame)
                self._replayed_frames += 1
                after = frame_id
                batch += good
                if bad:
                    self._reject(bad, peer)
                    self._note(frame_id)
                    yield batch
                    batch = []
                elif len(batch) >= BATCH:
                    self._note(frame_id)
                    yield batch
                    batch = []
            self._note(after)
            if batch:
                yield batch
                batch = []

    async def _committed(self, epoch: int) -> None:
        """Prune the journal: epoch ``epoch`` covers what the last commit saw.

        A source cannot tell which of its offsets a snapshot caught (the
        executor may take it while the source waits on its input, and a
        barrier hook would stop that), but it was taken after the previous
        commit, when the state already covered ``_prune_floor``.
        """
        journal = self._journal
        assert journal is not None
        upto, self._prune_floor = self._prune_floor, self._state.get("journal_id", 0)
        if upto <= self._pruned_to:
            return
        try:
            await journal.prune(upto)
        except sqlite3.Error as exc:
            assert self._ctx is not None
            self._ctx.logger.warning(
                "journal %s: cannot prune it (%s); retrying at the next checkpoint",
                self.config.journal,
                exc,
            )
            return
        self._pruned_to = upto


_NO_SEQ: Any = object()


def _bad_record(reason: str, record: Any) -> BadRecord:
    try:
        raw = msgspec.json.encode(record)[:MAX_RAW_IN_ERROR]
    except (TypeError, ValueError):
        raw = repr(record).encode()[:MAX_RAW_IN_ERROR]
    return BadRecord(reason, raw)


ws_source = node(
    "ws.source", config=WebSocketSourceConfig, batched=True, stops_itself=True
)(WebSocketSource)


# --- ws.sink -------------------------------------------------------------------


class _Subscriber:
    """One connection of a server-mode sink, with its bounded queue."""

    __slots__ = (
        "done",
        "dropped",
        "dropped_frames",
        "idle",
        "peer",
        "queue",
        "wake",
        "ws",
    )

    def __init__(self, ws: ServerConnection) -> None:
        self.ws = ws
        self.peer = _peer(ws)
        self.queue: deque[Data] = deque()
        self.wake = asyncio.Event()
        self.idle = asyncio.Event()  # queue empty and nothing being sent
        self.idle.set()
        self.dropped = False
        self.done = False
        self.dropped_frames = 0


class WebSocketSink:
    """Send records over WebSocket: to a server (client mode) or to subscribers.

    Stream-safe. Records are encoded per ``encoding`` and batched into frames
    of up to ``records_per_frame`` (from whatever is ready: no waiting to fill
    a frame). Items that cannot be encoded go to ``error``.

    Client mode, at least once: ``send`` completes when a frame is handed to
    the socket, which says nothing about the server having it. So the sink
    keeps sent frames until a ping sent after them is answered (frames and
    pings travel in order, so a pong means the server's WebSocket stack read
    everything before it) and resends the unconfirmed ones, in order, after
    reconnecting: nothing handed to the sink is lost and order is kept, but
    the server may see a frame twice. A pong confirms receipt by the peer's
    WebSocket stack, not processing by its application: a server that crashes
    with frames in its own buffers loses them (use application-level acks for
    end-to-end delivery). At end of input the sink waits for the confirmation
    of every frame (the run's drain timeout bounds it).

    Server mode, at most once: frames go to whoever is subscribed at the time
    (nobody: they are discarded). A full subscriber queue triggers ``slow``.
    At end of input the sink gives subscribers ``close_timeout`` seconds to
    take their queues.

    Events: ``listening`` (server), ``subscriber_connected``,
    ``subscriber_disconnected``, ``subscriber_dropped``, ``frames_dropped``;
    ``connected``, ``reconnected`` ``{url, connections, resent}`` (client).

    Example:
        Broadcast to whoever connects to port 8765::

            - id: live
              type: ws.sink
              config: {mode: server, port: 8765, slow: drop_oldest}
    """

    def __init__(self, config: WebSocketSinkConfig) -> None:
        self.config = config
        # JSON goes as text frames, MessagePack as binary; raw keeps the type.
        self._text: bool | None = True if config.encoding == "json" else None
        self._encoder: msgspec.json.Encoder | msgspec.msgpack.Encoder = (
            msgspec.msgpack.Encoder()
            if config.encoding == "msgpack"
            else msgspec.json.Encoder()
        )
        self._ctx: NodeContext | None = None
        self._frames = 0
        # client mode
        self._ws: ClientConnection | None = None
        self._unacked: deque[tuple[int, Data]] = deque()
        self._unacked_bytes = 0
        self._seq = 0
        self._ping: asyncio.Future[float] | None = None
        self._connections = 0
        # server mode
        self._server: Server | None = None
        self._subscribers: set[_Subscriber] = set()
        self._dropped_subscribers = 0
        self._dropped_frames = 0

    async def initialize(self, ctx: NodeContext) -> None:
        """Bind the server in server mode (clients connect at the first item).

        Raises:
            OSError: The server cannot bind its address.
        """
        self._ctx = ctx
        if self.config.mode == "server":
            self._server = await _listen(self.config, self._serve_subscriber, ctx)

    async def execute(self, inp: AsyncIterator[list[Any]]) -> AsyncIterator[Any]:
        """Send every batch; at end of input, flush (see the class docstring)."""
        assert self._ctx is not None
        ctx = self._ctx
        server = self.config.mode == "server"
        async for batch in inp:
            frames, rejected = self._encode(batch)
            for item, reason in rejected:
                ctx.dead_letter(item, reason)
            if server:
                await self._broadcast(frames)
            else:
                for frame in frames:
                    await self._send(frame)
                await self._request_ack()
            if rejected:
                yield []  # flushes the dead letters now, not at the end
        if server:
            await self._drain_subscribers()
        else:
            await self._flush()

    async def shutdown(self) -> None:
        """Close the connection, or the server and every subscriber."""
        if self._ws is not None:
            ws, self._ws = self._ws, None
            try:
                async with asyncio.timeout(self.config.close_timeout):
                    await ws.close()
            finally:
                ws.transport.abort()  # no-op once closed
        if self._server is not None:
            for sub in self._subscribers:
                sub.done = True
                sub.wake.set()
            await _close_server(self._server, self.config.close_timeout)

    def statistics(self) -> WebSocketSinkStatistics:
        """Return the node's counters now."""
        return WebSocketSinkStatistics(
            frames=self._frames,
            connections=self._connections,
            unacked_frames=len(self._unacked),
            unacked_bytes=self._unacked_bytes,
            subscribers=len(self._subscribers),
            dropped_subscribers=self._dropped_subscribers,
            dropped_frames=self._dropped_frames,
        )

    # --- encoding --------------------------------------------------------------------

    def _encode(self, batch: list[Any]) -> tuple[list[Data], list[tuple[Any, str]]]:
        """Frames for a batch, and the items that cannot be sent with why."""
        frames: list[Data] = []
        rejected: list[tuple[Any, str]] = []
        if self.config.encoding == "raw":
            for item in batch:
                if isinstance(item, str | bytes):
                    frames.append(item)
                else:
                    kind = type(item).__name__
                    rejected.append(
                        (item, f"raw encoding needs str or bytes, got {kind}")
                    )
            return frames, rejected
        encode = self._encoder.encode
        size = self.config.records_per_frame
        if size == 1:
            for item in batch:
                try:
                    frames.append(encode(item))
                except (TypeError, ValueError, OverflowError) as exc:
                    rejected.append(
                        (item, f"cannot encode as {self.config.encoding}: {exc}")
                    )
            return frames, rejected
        for start in range(0, len(batch), size):
            chunk = batch[start : start + size]
            try:
                frames.append(encode(chunk))
            except (TypeError, ValueError, OverflowError):
                good = []
                for item in chunk:
                    try:
                        encode(item)
                    except (TypeError, ValueError, OverflowError) as exc:
                        reason = f"cannot encode as {self.config.encoding}: {exc}"
                        rejected.append((item, reason))
                    else:
                        good.append(item)
                if good:
                    frames.append(encode(good))
        return frames, rejected

    # --- client mode -----------------------------------------------------------------

    async def _send(self, frame: Data) -> None:
        while True:
            ws = self._ws or await self._connect()
            try:
                while (
                    self._unacked
                    and self._unacked_bytes >= self.config.max_unacked_bytes
                ):
                    await self._confirm(ws)
                await ws.send(frame, text=self._text)
            except ConnectionClosed as exc:
                self._lost(ws, exc)
                continue
            self._frames += 1
            self._seq += 1
            self._unacked.append((self._seq, frame))
            self._unacked_bytes += len(frame)
            if self._unacked_bytes >= self.config.max_unacked_bytes // 2:
                await self._request_ack()  # early, so the bound is rarely hit
            return

    async def _request_ack(self) -> None:
        """Ask the server to confirm what was sent, unless a ping is on its way.

        Called once per input batch (batches are large under load, single
        items when idle) and when half of ``max_unacked_bytes`` is in use.
        """
        ws = self._ws
        if ws is None or self._ping is not None or not self._unacked:
            return
        try:
            await self._ping_now(ws)
        except ConnectionClosed as exc:
            self._lost(ws, exc)  # the frames are resent after reconnecting

    async def _flush(self) -> None:
        """Wait until the server confirmed every frame sent (reconnecting if need)."""
        while self._unacked:
            ws = self._ws or await self._connect()
            try:
                await self._confirm(ws)
            except ConnectionClosed as exc:
                self._lost(ws, exc)

    async def _confirm(self, ws: ClientConnection) -> None:
        """Wait for a pong that confirms at least the oldest unconfirmed frame.

        Raises:
            ConnectionClosed: The connection was lost meanwhile.
        """
        if self._ping is None:
            await self._ping_now(ws)
        ping = self._ping
        assert ping is not None
        # wait(), not await: being cancelled here must not cancel the ping.
        await asyncio.wait([ping])
        exc = None if ping.cancelled() else ping.exception()
        if exc is not None:
            raise exc

    async def _ping_now(self, ws: ClientConnection) -> None:
        seq = self._seq
        ping = await ws.ping()
        assert isinstance(ping, asyncio.Future)
        self._ping = ping

        def on_pong(done: asyncio.Future[float]) -> None:
            if self._ping is done:
                self._ping = None
            if done.cancelled() or done.exception() is not None:
                return
            # Frames travel in order: the pong confirms every frame before it.
            unacked = self._unacked
            while unacked and unacked[0][0] <= seq:
                self._unacked_bytes -= len(unacked.popleft()[1])

        ping.add_done_callback(on_pong)

    def _lost(self, ws: ClientConnection, exc: ConnectionClosed) -> None:
        assert self._ctx is not None
        if self._ws is ws:
            self._ws = None
            self._ping = None
            self._ctx.logger.warning(
                "connection to %s lost (%s); %d frames to resend",
                self.config.url,
                exc,
                len(self._unacked),
                extra={"url": self.config.url},
            )

    async def _connect(self) -> ClientConnection:
        """Connect (with backoff), resend the unconfirmed frames, and return."""
        assert self._ctx is not None
        ctx = self._ctx
        url = self.config.url
        assert url is not None
        policy = self.config.reconnect
        options = _client_options(self.config)
        failures = 0
        while True:
            try:
                ws = await connect(url, **options)
            except (OSError, TimeoutError, InvalidHandshake) as exc:
                failures += 1
                if policy.max_attempts is not None and failures >= policy.max_attempts:
                    raise _connect_failed(url, failures, exc) from exc
                delay = policy.delay_s(failures)
                ctx.logger.warning(
                    "cannot connect to %s (%s); retrying in %.2f s",
                    url,
                    exc,
                    delay,
                    extra={"url": url, "failures": failures},
                )
                await asyncio.sleep(delay)
                continue
            try:
                for _, frame in self._unacked:
                    await ws.send(frame, text=self._text)
            except ConnectionClosed:
                failures += 1
                await asyncio.sleep(policy.delay_s(failures))
                continue
            self._connections += 1
            self._ws = ws
            name = "reconnected" if self._connections > 1 else "connected"
            data = {
                "url": url,
                "connections": self._connections,
                "resent": len(self._unacked),
            }
            ctx.event(name, data)
            return ws

    # --- server mode -----------------------------------------------------------------

    async def _serve_subscriber(self, ws: ServerConnection) -> None:
        assert self._ctx is not None
        sub = _Subscriber(ws)
        self._subscribers.add(sub)
        self._ctx.event("subscriber_connected", {"peer": sub.peer})
        queue = sub.queue
        try:
            while True:
                if sub.dropped:
                    await ws.close(CloseCode.POLICY_VIOLATION, "subscriber too slow")
                    break
                if not queue:
                    if sub.done:
                        break
                    sub.idle.set()
                    sub.wake.clear()
                    await sub.wake.wait()
                    continue
                await ws.send(queue.popleft(), text=self._text)
        except ConnectionClosed:
            pass
        finally:
            self._subscribers.discard(sub)
            sub.idle.set()
            self._ctx.event("subscriber_disconnected", {"peer": sub.peer})

    async def _broadcast(self, frames: list[Data]) -> None:
        """Queue frames for every subscriber, never waiting for one (see ``slow``).

        Frames go out in chunks of at most ``subscriber_queue``, and before a
        chunk, if a subscriber still has frames queued, every subscriber gets
        one turn of the event loop: one that keeps up empties its queue in that
        turn, so a burst larger than the queue does not by itself make everyone
        "slow".
        """
        cap = self.config.subscriber_queue
        for start in range(0, len(frames), cap):
            if any(sub.queue for sub in self._subscribers):
                await asyncio.sleep(0)
            self._offer(frames[start : start + cap])

    def _offer(self, frames: list[Data]) -> None:
        self._frames += len(frames)
        cap = self.config.subscriber_queue
        for sub in tuple(self._subscribers):
            if sub.ws.state is State.CLOSED:
                self._subscribers.discard(sub)  # left while idle
                sub.done = True
                sub.wake.set()
                continue
            queue = sub.queue
            excess = len(queue) + len(frames) - cap
            if excess > 0:
                if self.config.slow == "drop_subscriber":
                    self._drop_subscriber(sub)
                    continue
                self._drop_oldest(sub, excess)
                queue.extend(frames[-cap:])
            else:
                queue.extend(frames)
            sub.idle.clear()
            sub.wake.set()

    def _drop_subscriber(self, sub: _Subscriber) -> None:
        assert self._ctx is not None
        self._subscribers.discard(sub)
        queued = len(sub.queue)
        sub.queue.clear()
        sub.dropped = True
        sub.idle.set()
        sub.wake.set()
        self._dropped_subscribers += 1
        self._ctx.event("subscriber_dropped", {"peer": sub.peer, "queued": queued})
        self._ctx.logger.warning(
            "dropped slow subscriber %s (%d frames queued)",
            sub.peer,
            queued,
            extra={"peer": sub.peer},
        )

    def _drop_oldest(self, sub: _Subscriber, excess: int) -> None:
        assert self._ctx is not None
        queue = sub.queue
        dropped = excess
        if excess >= len(queue):
            queue.clear()  # the rest of the excess is the batch's own oldest frames
        else:
            for _ in range(excess):
                queue.popleft()
        sub.dropped_frames += dropped
        self._dropped_frames += dropped
        data = {"peer": sub.peer, "dropped": dropped, "total": sub.dropped_frames}
        self._ctx.event("frames_dropped", data)

    async def _drain_subscribers(self) -> None:
        """Give subscribers ``close_timeout`` seconds to take their queues."""
        assert self._ctx is not None
        timeout = self.config.close_timeout
        try:
            async with asyncio.timeout(timeout):
                for sub in tuple(self._subscribers):
                    await sub.idle.wait()
        except TimeoutError:
            left = sum(len(s.queue) for s in self._subscribers)
            self._ctx.logger.warning(
                "subscribers still had %d frames queued after %.1f s", left, timeout
            )


ws_sink = node("ws.sink", config=WebSocketSinkConfig, batched=True)(WebSocketSink)
