"""``WS /api/runs/{run_id}/events``: a run's events, live, one JSON text frame each.

A subscriber first receives what the run has recorded so far (bounded: the
first and the latest events, see `EventHistory`), then every event as it is
published, and the server closes the socket (code 1000) after the run's
`WorkflowCompleted`. For a finished run the recorded events are sent and the
socket closes. The backlog and the subscription are taken in one step, so no
event is missed or sent twice.

A subscriber that reads too slowly loses the oldest of its buffered events
(the `EventBus` never waits for a reader); the run's ``events_dropped``
counts them. Application close codes: 4401 (the token is needed and missing
or wrong: pass ``?token=`` or an ``Authorization`` header), 4403 (a browser
page of another origin, without the token), 4404 (no such run).

Without the token, a server on loopback serves the feed to clients that are
not browsers (no ``Origin`` header) and to pages of its own origin (the UI);
any other page must pass the token, as it must beyond loopback.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlsplit

from litestar import WebSocket, websocket
from litestar.exceptions import WebSocketDisconnect
from litestar.params import PathParameter

from ..core.events import encode_event
from ..errors import EncodeError
from .auth import token_matches
from .context import server

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["run_events"]

logger = logging.getLogger("flowstream.server")

# What a send to a socket whose peer went away raises, depending on the
# ASGI server: the disconnect itself, or the transport failing under it.
_GONE = (WebSocketDisconnect, OSError, RuntimeError)


def same_origin(headers: Mapping[str, str]) -> bool:
    """Whether a handshake comes from a non-browser or a page of this server.

    Browsers always send ``Origin`` on a WebSocket handshake; it must name
    the host (and port) the request was sent to.
    """
    origin = headers.get("origin")
    if origin is None:
        return True
    netloc = urlsplit(origin).netloc.lower()
    return bool(netloc) and netloc == headers.get("host", "").lower()


@websocket("/api/runs/{run_id:str}/events", opt={"public": True})
async def run_events(
    socket: WebSocket[Any, Any, Any], run_id: Annotated[str, PathParameter()]
) -> None:
    """Send a run's events to one subscriber until the run ends."""
    ctx = server(socket)
    await socket.accept()
    authorized = token_matches(
        ctx.token,
        socket.headers.get("authorization"),
        socket.query_params.get("token"),
    )
    if not authorized and not ctx.config.loopback:
        await socket.close(code=4401, reason="unauthorized: the token is needed")
        return
    if not authorized and not same_origin(socket.headers):
        # A page of another origin: browsers let any page open a WebSocket
        # anywhere, so without this it could read the events of local runs.
        await socket.close(
            code=4403, reason="forbidden: another origin's page needs the token"
        )
        return
    live = ctx.runs.live(run_id)
    if live is not None:
        # One synchronous step: nothing can be published in between.
        backlog, subscription = live.history.snapshot(), live.bus.subscribe()
    else:
        recorded = ctx.store.run_events(run_id)
        if recorded is None:
            await socket.close(code=4404, reason=f"no run {run_id!r}")
            return
        backlog, subscription = recorded, None

    async def send_all() -> None:
        for raw in backlog:
            await socket.send_text(raw)
        if subscription is None:
            return
        with subscription:
            async for event in subscription:
                try:
                    raw = encode_event(event)
                except EncodeError:
                    continue  # an odd custom event; the run's record skips it too
                await socket.send_text(raw)

    async def wait_disconnect() -> None:
        while (await socket.receive())["type"] != "websocket.disconnect":
            pass  # subscribers have nothing to say; ignore what they send

    try:
        async with asyncio.TaskGroup() as group:
            sender = group.create_task(send_all())
            watcher = group.create_task(wait_disconnect())
            await asyncio.wait({sender, watcher}, return_when=asyncio.FIRST_COMPLETED)
            sender.cancel()
            watcher.cancel()
        if sender.cancelled():
            return  # the subscriber left
        await socket.close(code=1000)
    except* _GONE:
        logger.debug("events subscriber of run %s went away", run_id)
    finally:
        if subscription is not None:
            subscription.close()
