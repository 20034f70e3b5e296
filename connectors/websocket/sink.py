"""The ``ws.sink`` node: records out over WebSocket, as a client or a server.

Its config and statistics, `WebSocketSink` (client mode: send, keep what the
peer has not confirmed, resend after reconnecting; server mode: a bounded
queue per subscriber) and the `ws_sink` spec.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, Any, Literal

import msgspec
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.frames import CloseCode
from websockets.protocol import State

from flowstream import check_url, node
from flowstream.errors import NetworkDenied

from ._common import (
    _at_least_one,
    _client_options,
    _close_server,
    _connect_failed,
    _Endpoint,
    _listen,
    _peer,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from websockets.asyncio.client import ClientConnection
    from websockets.asyncio.server import Server, ServerConnection

    from flowstream import NodeContext

    from ._common import Data

__all__ = [
    "WebSocketSink",
    "WebSocketSinkConfig",
    "WebSocketSinkStatistics",
    "ws_sink",
]


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
                check_url(url, what=f"ws.sink {ctx.node_id}")
                ws = await connect(url, **options)
            except (OSError, TimeoutError, InvalidHandshake) as exc:
                denied = NetworkDenied.found_in(exc)
                if denied is not None:  # the policy will not change: no retry
                    raise denied from None
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
