"""The ``ws.source`` node: records from WebSocket frames, as a server or a client.

`WebSocketSource` binds a server (or follows a url, resuming after the last
sequence), reads frames into `connectors.websocket._intake._Intake` (through
`connectors.websocket._journal` with a ``journal``), decodes them and hands their
records on in batches. Its config and statistics are in
`connectors.websocket._source_config`; its client half (connect, resume,
reconnect) in `connectors.websocket._source_client`, and its journal half
(open, replay, prune) in `connectors.websocket._source_journal`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from typing import TYPE_CHECKING, Any, cast

import msgspec
from websockets.exceptions import (
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
)
from websockets.frames import CloseCode

from flowstream import node

from .._records import MAX_RAW_IN_ERROR, BadRecord, RecordDecoder
from ._budget import Budget, MeteredClientConnection, MeteredServerConnection
from ._common import (
    _close_server,
    _listen,
    _peer,
)
from ._intake import BATCH, BATCH_BYTES, _Intake
from ._source_client import _Client
from ._source_config import (
    WebSocketSourceConfig,
    WebSocketSourceStatistics,
)
from ._source_journal import _Journaling

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from websockets.asyncio.client import ClientConnection
    from websockets.asyncio.server import Server, ServerConnection

    from flowstream import NodeContext, NodeState

    from ._journal import Journal


__all__ = ["WebSocketSource", "ws_source"]


class WebSocketSource(_Client, _Journaling):
    """Records from WebSocket frames: a server many clients send to, or a client.

    Stream-safe: unbounded until the run is stopped. Each frame holds one
    record or an array of records (``encoding``); records come out in the
    order each connection sent them (connections interleave).

    Bad input never closes a connection: a frame that does not decode, a
    record that breaks the ``schema`` or a frame over ``max_frame_bytes`` goes
    to ``error`` as ``{"reason", "raw" (first 256 bytes), "peer"}`` and is
    counted. Only a frame over ``hard_max_frame_bytes`` closes its connection
    (code 1009), since reading it would buffer it.

    Memory is bounded whatever the number of clients: every frame byte the
    source holds (websockets' per-connection buffers, partial frames
    included, the queue for the graph and the journal's pending frames)
    counts against one budget, ``max_buffered_bytes`` (64 MiB by default).
    When it is spent the source stops reading every socket, so senders
    block (TCP backpressure), until it has drained to three quarters of it;
    it is passed by at most one frame and two read chunks (256 KiB each):
    the read that crossed it, and the last read of the one connection at a
    time allowed to finish a partial frame so that nothing wedges. Within
    it, the queue for the graph holds at most ``queue_frames`` /
    ``queue_bytes`` and each connection at most ``read_buffer_frames``
    frames. Past ``max_connections`` clients (1024), a new client is closed
    at once with code 1013 (try again later), counted and logged. Besides
    frames, each connection costs its socket buffers and some kilobytes of
    state; the graph holds one decoded batch (about 256 records) per
    frame. ``held_bytes`` and ``peak_held_bytes`` (statistics) show the
    budget at work.

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
      A journal pruned past what the checkpoint covers (newer than the
      store: an older store restored, or a backup that copied the store
      before the journal) is reported; a client that resumes by sequence
      then skips the journal and asks the server for everything after the
      checkpointed sequence, so nothing is lost. Back up the journal first.

    Events: ``listening`` ``{host, port, url}``; ``client_connected`` and
    ``client_disconnected`` ``{peer}`` (server); ``connected``,
    ``reconnected`` ``{url, connections}`` (plus ``since``, the sequence
    asked to resume after, with ``seq_field``) and ``disconnected``
    (client); ``journal_opened`` ``{path, after, replay, pruned,
    pruned_past, unclean, max_unjournaled}``.

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
            config.encoding,
            config.schema,
            config.max_frame_bytes,
            max_depth=config.max_depth,
        )
        self._intake = _Intake(config.queue_frames, config.queue_bytes)
        self._budget = Budget(config.max_buffered_bytes, self._intake)
        self._clients = 0
        self._refused = 0
        self._at_limit = False
        self._oversized = 0
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
                metered = functools.partial(
                    MeteredServerConnection, budget=self._budget
                )
                self._server = await _listen(
                    config,
                    self._serve_client,
                    ctx,
                    max_size=config.hard_limit,
                    max_queue=config.read_buffer_frames,
                    create_connection=cast("type[ServerConnection]", metered),
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
        budget = self._budget
        entries = intake._entries
        popleft = entries.popleft
        decode = self._decode
        note = self._note if self._seq_keys or self._journal else None
        batch: list[Any] = []
        batch_bytes = 0
        last_id = 0
        while True:
            if not entries:
                if batch:
                    if note is not None:
                        note(last_id)
                    yield batch
                    batch = []
                    batch_bytes = 0
                else:
                    if note is not None:
                        note(last_id)  # frames that held no record
                    if not await intake.wait():
                        break
                continue
            # Popped here rather than by an _Intake method: this runs once per
            # frame. The byte count goes down and waiting readers try again.
            frame, peer, frame_id = popleft()
            if not isinstance(frame, BadRecord):
                intake.bytes -= len(frame)
                if intake.waiting:
                    intake._space.set()
                if budget.stopped:
                    budget.released()
                batch_bytes += len(frame)
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
                    batch_bytes = 0
                elif len(batch) >= BATCH or batch_bytes >= BATCH_BYTES:
                    if note is not None:
                        note(last_id)
                    yield batch
                    batch = []
                    batch_bytes = 0
            else:
                self._reject([frame], peer)
                if note is not None:
                    note(last_id)
                yield batch
                batch = []
                batch_bytes = 0
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
        budget = self._budget
        return WebSocketSourceStatistics(
            connections=connections,
            frames=self._frames,
            buffered_frames=len(intake),
            buffered_bytes=intake.bytes,
            peak_frames=intake.peak_frames,
            peak_bytes=intake.peak_bytes,
            waiting_readers=intake.waiting + (journal.waiting if journal else 0),
            held_bytes=budget.held,
            peak_held_bytes=budget.peak,
            reading_stops=budget.stops,
            refused_connections=self._refused,
            oversized_frames=self._oversized,
            duplicates=self._duplicates,
            journaled_frames=journal.journaled if journal else 0,
            unjournaled_frames=journal.unjournaled if journal else 0,
            peak_unjournaled=journal.peak_unjournaled if journal else 0,
            replayed_frames=self._replayed_frames,
            pruned_frames=journal.pruned if journal else 0,
        )

    # --- internals ---------------------------------------------------------------

    def _decode(self, frame: bytes | str) -> tuple[list[Any], list[BadRecord]]:
        # A frame is a str only with encoding ``auto``: a text frame, JSON.
        if len(frame) > self.config.max_frame_bytes:
            self._oversized += 1  # the decoder sends it to error
        try:
            good, bad = self._decoder.decode(frame)
        except msgspec.DecodeError as exc:
            # RecordDecoder lets a few malformed frames raise (a schema error
            # before trailing garbage): still bad input.
            reason = f"malformed {self.config.encoding}: {exc}"
            raw = frame.encode() if isinstance(frame, str) else frame
            return [], [BadRecord(reason, raw[:MAX_RAW_IN_ERROR])]
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

    async def _pump(
        self, ws: MeteredServerConnection | MeteredClientConnection, peer: str
    ) -> bool:
        """Read frames into the intake (or the journal) until the connection closes.

        Returns False when the intake was closed (the node is shutting down).
        """
        recv = ws.recv
        # With ``auto``, text frames stay text (JSON whatever they start
        # with); otherwise every frame is read as the bytes it holds.
        text = None if self.config.encoding == "auto" else False
        took = ws.took
        intake = self._intake
        offer = intake.offer
        journal = self._journal
        try:
            while True:
                frame = await recv(decode=text)
                self._frames += 1
                size = len(frame)
                # The frame counts against the budget in the connection until
                # the journal or the intake has it (and counts it).
                if journal is not None:
                    if not journal.offer(frame, peer) and not await journal.add(
                        frame, peer
                    ):
                        return False
                    took(size)
                    continue
                entry = (frame, peer, 0)
                if not offer(entry, size) and not await intake.put(entry, size):
                    return False
                took(size)
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
                self._oversized += 1
                self._ctx.event("frame_too_big", {"peer": peer, "limit": limit})
                self._ctx.logger.warning(
                    "%s sent a frame over hard_max_frame_bytes=%d: connection "
                    "closed with code 1009",
                    peer,
                    limit,
                    extra={"peer": peer},
                )
                return await intake.put((BadRecord(reason, b""), peer, 0), 0)
            self._ctx.logger.warning(
                "connection from %s lost: %s", peer, exc, extra={"peer": peer}
            )
            return True

    async def _serve_client(self, ws: ServerConnection) -> None:
        assert self._ctx is not None
        assert isinstance(ws, MeteredServerConnection)
        peer = _peer(ws)
        if self._clients >= self.config.max_connections:
            await self._refuse(ws, peer)
            return
        self._at_limit = False
        self._clients += 1
        self._ctx.event("client_connected", {"peer": peer})
        try:
            await self._pump(ws, peer)
        finally:
            self._clients -= 1
            self._ctx.event("client_disconnected", {"peer": peer})

    async def _refuse(self, ws: MeteredServerConnection, peer: str) -> None:
        """Close a client past ``max_connections`` with 1013 (try again later)."""
        assert self._ctx is not None
        ws.discard()  # what it sends while closing is dropped, not held
        self._refused += 1
        limit = self.config.max_connections
        if not self._at_limit:  # once each time the limit is reached
            self._at_limit = True
            self._ctx.logger.warning(
                "max_connections=%d reached: refusing new clients with code "
                "1013 (try again later), starting with %s",
                limit,
                peer,
                extra={"peer": peer, "max_connections": limit},
            )
        self._ctx.event("client_refused", {"peer": peer, "max_connections": limit})
        with contextlib.suppress(ConnectionClosed):
            await ws.close(CloseCode.TRY_AGAIN_LATER, "too many connections")

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
