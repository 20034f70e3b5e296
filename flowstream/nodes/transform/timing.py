"""Batching, deduplication and rates: ``transform.batch``, ``dedupe``, ``throttle``."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import msgspec

from ...core.expr import Expr, expr_function
from ...core.node import node
from ...runtime.feeds import NO_ITEM, next_item

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from ...core.node import NodeContext
from ._rescaling import rescale_dedupe
from ._shared import _check_finite, _identity, _slot

# --- batch ---------------------------------------------------------------------


class Batch(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Config of ``transform.batch``; set ``size``, ``interval_ms`` or both.

    Attributes:
        size: Emit a batch when it holds this many items.
        interval_ms: Emit a batch this long after its first item arrived
            (processing time), even if no more input comes.
    """

    size: int | None = None
    interval_ms: float | None = None

    def __post_init__(self) -> None:
        if self.size is None and self.interval_ms is None:
            msg = "set 'size', 'interval_ms' or both"
            raise ValueError(msg)
        if self.size is not None and self.size < 1:
            msg = f"size must be >= 1, got {self.size}"
            raise ValueError(msg)
        _check_finite("interval_ms", self.interval_ms)


@node("transform.batch", config=Batch, timed=True)
async def batch(
    inp: AsyncIterator[Any], *, config: Batch, ctx: NodeContext
) -> AsyncIterator[list[Any]]:
    """Group items into lists of ``size`` items and/or spanning ``interval_ms``.

    Stream-safe: with ``interval_ms`` a partial batch is emitted on time even
    when no more input comes; at end of input the remainder is emitted. Order
    is kept; every item is in exactly one batch.

    Example:
        ``{id: chunks, type: transform.batch, config: {size: 2}}``
        turns ``[1, 2, 3]`` into ``[[1, 2], [3]]``.
    """
    loop = asyncio.get_running_loop()
    size = config.size
    interval = None if config.interval_ms is None else config.interval_ms / 1000.0
    state = ctx.state
    # The open batch lives in the node state (with its start time), so it is
    # not lost if the node is restarted.
    if "open" not in state:
        state["open"] = []
        state["since"] = 0.0
    while True:
        buf: list[Any] = state["open"]
        timeout = None
        if interval is not None and buf:
            timeout = state["since"] + interval - loop.time()
            if timeout <= 0:
                state["open"] = []
                yield buf
                continue
        try:
            item = await next_item(inp, timeout)
        except StopAsyncIteration:
            break
        if item is NO_ITEM:
            continue  # the deadline passed: flushed at the top of the loop
        if not buf:
            state["since"] = loop.time()
        buf.append(item)
        if size is not None and len(buf) >= size:
            # A new list: the emitted one must never change again.
            state["open"] = []
            yield buf
    buf = state["open"]
    if buf:
        state["open"] = []
        yield buf


# --- dedupe --------------------------------------------------------------------


class Dedupe(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Config of ``transform.dedupe``; set ``max_keys``, ``ttl_ms`` or both.

    Attributes:
        key: What makes items duplicates, a CEL expression over the item
            ``x``; the item itself when omitted.
        max_keys: Remember at most this many keys; past it, the key first seen
            longest ago is forgotten.
        ttl_ms: Forget a key this long after the item that was kept for it
            (processing time); later duplicates are not kept alive.
    """

    key: Expr | None = None
    max_keys: int | None = None
    ttl_ms: float | None = None

    def __post_init__(self) -> None:
        if self.max_keys is None and self.ttl_ms is None:
            msg = (
                "set 'max_keys', 'ttl_ms' or both: dedupe must forget keys "
                "to run in bounded memory"
            )
            raise ValueError(msg)
        if self.max_keys is not None and self.max_keys < 1:
            msg = f"max_keys must be >= 1, got {self.max_keys}"
            raise ValueError(msg)
        _check_finite("ttl_ms", self.ttl_ms)


@node("transform.dedupe", config=Dedupe, rescale=rescale_dedupe)
async def dedupe(
    inp: AsyncIterator[Any], *, config: Dedupe, ctx: NodeContext
) -> AsyncIterator[Any]:
    """Keep the first item of each key; drop its duplicates within the horizon.

    Stream-safe, in bounded memory: a key is remembered until ``ttl_ms`` after
    its kept item and/or until ``max_keys`` newer keys pushed it out; an item
    whose key is no longer remembered is kept as a new first. Dropping
    duplicates is the node's purpose, not a failure: they are counted in the
    node state (``dropped``) and reported at end of input in a
    ``duplicates_dropped`` event.

    Example:
        ``{id: unique, type: transform.dedupe, config: {max_keys: 1000}}``
        turns ``[a, b, a, c, b]`` into ``[a, b, c]``.
    """
    key = _identity if config.key is None else expr_function(config.key)
    max_keys = config.max_keys
    ttl = None if config.ttl_ms is None else config.ttl_ms / 1000.0
    loop = asyncio.get_running_loop()
    state = ctx.state
    # Key -> time its kept item arrived, oldest first. An OrderedDict: it
    # drops its oldest entry in O(1), and encodes as a plain mapping.
    seen: OrderedDict[str | int, float] = state.get("seen")
    if seen is None:
        seen = state["seen"] = OrderedDict()
        state["dropped"] = 0
    elif type(seen) is not OrderedDict:
        # Restored from a checkpoint as a plain dict (oldest first still).
        seen = state["seen"] = OrderedDict(seen)
    async for x in inp:
        slot = _slot(key(x))
        now = loop.time()
        if ttl is not None:
            while seen:
                oldest, since = next(iter(seen.items()))
                if now - since < ttl:
                    break
                del seen[oldest]
        if slot in seen:
            state["dropped"] += 1
            continue
        seen[slot] = now
        if max_keys is not None and len(seen) > max_keys:
            seen.popitem(last=False)
        yield x
    if state["dropped"]:
        ctx.event("duplicates_dropped", {"count": state["dropped"]})


# --- throttle ------------------------------------------------------------------


class Throttle(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Config of ``transform.throttle``: at most ``rate`` items per ``per_ms``.

    Attributes:
        rate: Items let through per ``per_ms`` on average.
        per_ms: The period ``rate`` is counted over, in milliseconds.
        burst: How many items may pass at once after a quiet spell (the token
            bucket's size); ``rate`` when omitted.
    """

    rate: int
    per_ms: float = 1000.0
    burst: int | None = None

    def __post_init__(self) -> None:
        if self.rate < 1:
            msg = f"rate must be >= 1, got {self.rate}"
            raise ValueError(msg)
        _check_finite("per_ms", self.per_ms)
        if self.burst is not None and self.burst < 1:
            msg = f"burst must be >= 1, got {self.burst}"
            raise ValueError(msg)


@node("transform.throttle", config=Throttle)
async def throttle(inp: AsyncIterator[Any], *, config: Throttle) -> AsyncIterator[Any]:
    """Let items through at ``rate`` per ``per_ms`` (a token bucket); never drops.

    Stream-safe. A token is added every ``per_ms / rate`` ms up to ``burst``;
    each item takes one, waiting for it if there is none. While it waits it
    reads no input, so upstream slows down (backpressure). Processing time.

    Example:
        ``{id: gently, type: transform.throttle, config: {rate: 2, per_ms: 1000}}``
        turns ``[1, 2, 3]`` into ``[1, 2, 3]`` (the third half a second later).
    """
    loop = asyncio.get_running_loop()
    size = float(config.burst or config.rate)
    per_second = config.rate / (config.per_ms / 1000.0)
    # The bucket is plain local state: nothing in this loop can fail on an
    # item, so the generator is never restarted and has nothing to resume.
    tokens = size
    last = loop.time()
    async for x in inp:
        now = loop.time()
        tokens = min(size, tokens + (now - last) * per_second)
        last = now
        if tokens < 1.0:
            await asyncio.sleep((1.0 - tokens) / per_second)
            now = loop.time()
            # The loop may wake a clock tick early: the wait earned the token.
            tokens = max(1.0, min(size, tokens + (now - last) * per_second))
            last = now
        tokens -= 1.0
        yield x
