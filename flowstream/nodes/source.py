"""Source nodes: where items come from.

``source.values`` and ``source.range`` are finite and replayable: the index of
the next item is their offset, kept in the node's state, so a run restored from
a checkpoint goes on where the checkpoint was taken. They emit batches of up to
`BATCH_SIZE` items.
"""

from __future__ import annotations

import asyncio
import math
from typing import TYPE_CHECKING, Any

import msgspec

from ..core.node import NodeContext, node
from ._common import BATCH_SIZE

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

__all__ = ["range_source", "timer_source", "values_source"]


class Values(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Config of ``source.values``."""

    values: list[Any]


class Range(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Config of ``source.range``: like Python's ``range(start, stop, step)``."""

    stop: int
    start: int = 0
    step: int = 1

    def __post_init__(self) -> None:
        if self.step == 0:
            msg = "step must not be 0"
            raise ValueError(msg)


@node("source.values", config=Values, batched=True)
async def values_source(
    *, config: Values, ctx: NodeContext
) -> AsyncIterator[list[Any]]:
    """Emit the configured list of values, in order, then end.

    Example:
        ``{id: letters, type: source.values, config: {values: [a, b, c]}}``
        emits ``"a"``, ``"b"``, ``"c"``.
    """
    values = config.values
    # The offset (next index) is replayable state: updated before each
    # batch leaves, so a checkpoint between batches records exactly what left.
    for i in range(ctx.state.get("offset", 0), len(values), BATCH_SIZE):
        batch = values[i : i + BATCH_SIZE]
        ctx.state["offset"] = i + len(batch)
        yield batch


@node("source.range", config=Range, batched=True)
async def range_source(*, config: Range, ctx: NodeContext) -> AsyncIterator[list[int]]:
    """Emit the integers ``start, start+step, ...`` below ``stop``, then end.

    Example:
        ``{id: numbers, type: source.range, config: {start: 1, stop: 4}}``
        emits ``1``, ``2``, ``3``.
    """
    numbers = range(config.start, config.stop, config.step)
    for i in range(ctx.state.get("offset", 0), len(numbers), BATCH_SIZE):
        batch = list(numbers[i : i + BATCH_SIZE])
        ctx.state["offset"] = i + len(batch)
        yield batch


class Timer(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Config of ``source.timer``."""

    interval_ms: float = msgspec.field(default=1000.0)
    count: int | None = None
    """Stop after this many ticks; None ticks until the run is stopped."""

    def __post_init__(self) -> None:
        if not 0 < self.interval_ms < math.inf:
            msg = f"interval_ms must be a finite number > 0, got {self.interval_ms}"
            raise ValueError(msg)
        if self.count is not None and self.count < 0:
            msg = f"count must be >= 0, got {self.count}"
            raise ValueError(msg)


@node("source.timer", config=Timer)
async def timer_source(*, config: Timer) -> AsyncIterator[int]:
    """Emit the tick numbers 0, 1, 2, ... every ``interval_ms`` milliseconds.

    Ticks follow a fixed schedule from the start (no drift when the pipeline
    is briefly slow). Unbounded unless ``count`` is set: a stream-mode source.

    Example:
        ``{id: tick, type: source.timer, config: {interval_ms: 100, count: 3}}``
        emits ``0``, ``1``, ``2`` over about 0.2 s.
    """
    loop = asyncio.get_running_loop()
    start = loop.time()
    interval = config.interval_ms / 1000.0
    tick = 0
    while config.count is None or tick < config.count:
        yield tick
        tick += 1
        if config.count is not None and tick >= config.count:
            return
        await asyncio.sleep(max(0.0, start + tick * interval - loop.time()))
