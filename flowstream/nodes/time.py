"""Time nodes: holding items back in processing time.

Processing time is the event loop's clock (``loop.time()``), so tests run these
nodes instantly on `flowstream.testing.run_virtual`.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from typing import TYPE_CHECKING, Any

import msgspec

from ..core.node import node
from ..runtime.feeds import NO_ITEM, next_item
from ._rescaling import rescale_held

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from ..core.node import NodeContext

__all__ = ["delay"]


class Delay(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Config of ``time.delay``.

    Attributes:
        ms: How long each item is held back, in milliseconds.
        max_pending: How many items may be held at once; when that many wait,
            the node stops reading its input until the oldest is due
            (backpressure), so memory stays bounded.
    """

    ms: float
    max_pending: int = 10_000

    def __post_init__(self) -> None:
        if not (0 <= self.ms < math.inf):
            msg = f"ms must be a finite number >= 0, got {self.ms}"
            raise ValueError(msg)
        if self.max_pending < 1:
            msg = f"max_pending must be >= 1, got {self.max_pending}"
            raise ValueError(msg)


@node("time.delay", config=Delay, timed=True, rescale=rescale_held)
async def delay(
    inp: AsyncIterator[Any], *, config: Delay, ctx: NodeContext
) -> AsyncIterator[Any]:
    """Emit each item ``ms`` milliseconds after it arrived, in arrival order.

    Stream-safe. Items are held concurrently (a burst of items is delayed
    once, not once per item); at end of input the held items are still
    emitted on time. Processing time. Under checkpoints the held items are
    part of the snapshot: after a crash they are emitted at once on restart.

    Example:
        ``{id: later, type: time.delay, config: {ms: 250}}``
        turns ``[1, 2]`` into ``[1, 2]`` (both a quarter second later).
    """
    loop = asyncio.get_running_loop()
    hold = config.ms / 1000.0
    limit = config.max_pending
    # (due time, item), due times ascending. Local, not node state: nothing
    # here can fail on an item, so the generator is never restarted; a
    # checkpoint copies it into the state (items held across a barrier belong
    # to the epoch before it).
    now = loop.time()
    pending: deque[tuple[float, Any]] = deque(
        (now, item) for item in ctx.state.get("held", ())
    )
    if ctx.checkpointing:

        def snapshot(epoch: int) -> None:
            ctx.state["held"] = [item for _, item in pending]

        ctx.on_barrier(snapshot)
    ended = False
    while pending or not ended:
        now = loop.time()
        while pending and pending[0][0] <= now:
            yield pending.popleft()[1]
        if not pending and ended:
            break
        if ended or len(pending) >= limit:
            await asyncio.sleep(pending[0][0] - now)
            continue
        try:
            item = await next_item(inp, pending[0][0] - now if pending else None)
        except StopAsyncIteration:
            ended = True
            continue
        if item is not NO_ITEM:
            pending.append((loop.time() + hold, item))
