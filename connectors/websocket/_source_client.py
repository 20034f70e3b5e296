"""``ws.source`` as a client: connect, subscribe, resume, reconnect.

`_Client` is the client half of `connectors.websocket.source.WebSocketSource`
(a mixin over the source's own state): it follows the ``url``, asks the server
to resume after the last sequence handed on (``resume_query`` or
``resume_message``), reads each connection with the source's ``_pump`` and
reconnects with the ``reconnect`` backoff until the run stops.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, cast

import msgspec
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.frames import CloseCode

from flowstream import check_url
from flowstream.errors import NetworkDenied

from .._reconnect import pause as _pause
from ._budget import MeteredClientConnection
from ._common import _client_options, _connect_failed
from ._source_config import _fill, _with_query

if TYPE_CHECKING:
    import asyncio

    from websockets.asyncio.client import ClientConnection

    from flowstream import NodeContext, NodeState

    from ._budget import Budget, MeteredServerConnection
    from ._common import Data
    from ._intake import _Intake
    from ._journal import Journal
    from ._source_config import WebSocketSourceConfig


class _Client:
    """The client half of ``ws.source``; the source itself holds the state."""

    config: WebSocketSourceConfig
    _budget: Budget
    _client: ClientConnection | None
    _failure: Exception | None
    _intake: _Intake
    _journal: Journal | None
    _replayed: asyncio.Event
    _seq_keys: list[str]
    _state: NodeState

    if TYPE_CHECKING:

        async def _pump(
            self, ws: MeteredServerConnection | MeteredClientConnection, peer: str
        ) -> bool: ...

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
        metered = functools.partial(MeteredClientConnection, budget=self._budget)
        if self._journal is not None and self._seq_keys:
            # The resume request must name the last sequence of the replay.
            await self._replayed.wait()
        failures = connections = 0
        while not ctx.stopping.is_set():
            target, resume = self._resume(url)
            try:
                check_url(target, what=f"ws.source {ctx.node_id}")
                ws = await connect(
                    target,
                    max_size=config.hard_limit,
                    max_queue=config.read_buffer_frames,
                    create_connection=cast("type[ClientConnection]", metered),
                    **options,
                )
            except (OSError, TimeoutError, InvalidHandshake) as exc:
                denied = NetworkDenied.found_in(exc)
                if denied is not None:  # the policy will not change: no retry
                    self._failure = denied
                    return
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
            assert isinstance(ws, MeteredClientConnection)
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
