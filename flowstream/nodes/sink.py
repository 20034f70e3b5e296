"""Sink nodes: where items end inside the process."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from ..core.node import Kernel, node

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

__all__ = ["Collect", "collect_sink", "null_sink"]


class Collect(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Config of ``sink.collect``.

    Attributes:
        max_items: Most items the node keeps (the newest). Unset: 1,000,000
            in stream mode, no bound in DAG mode; ``null``: no bound in
            either mode.
    """

    max_items: int | msgspec.UnsetType | None = msgspec.UNSET

    def __post_init__(self) -> None:
        if isinstance(self.max_items, int) and self.max_items < 1:
            msg = f"max_items must be >= 1 or null (unbounded), got {self.max_items}"
            raise ValueError(msg)


def _identity_kernel(config: Collect) -> Kernel:
    # The bound is the executor's: it holds the list the items go to.
    return lambda batch: batch


def _discard_kernel(config: None) -> Kernel:
    return lambda batch: []


@node("sink.collect", config=Collect, kernel=_identity_kernel)
async def collect_sink(
    inp: AsyncIterator[Any], *, config: Collect
) -> AsyncIterator[Any]:
    """Gather items; a run's outputs list them under this node, port ``out``.

    Keeps what it takes in memory, up to ``max_items`` (unset: 1,000,000 in
    stream mode, no bound in DAG mode; ``null``: no bound). Past the bound it
    keeps the newest ``max_items`` and drops the oldest: the run goes on (a
    stream's outputs stay a bounded tail of it), the first drop is logged as
    a warning naming the node, and the result counts what went, by node
    (``outputs_dropped``). The instances of a parallel node share the bound;
    on Ray each process bounds the instances it runs. Stream-safe. To keep
    everything of a long stream, write it out with a connector's sink instead.

    Example:
        ``source.values [1, 2] -> sink.collect`` gives outputs
        ``{"<id>": {"out": [1, 2]}}``.
    """
    async for x in inp:
        yield x


@node("sink.null", kernel=_discard_kernel)
async def null_sink(inp: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """Discard every item; the node's stats still count them. Stream-safe.

    Example:
        ``source.range {stop: 1000} -> sink.null`` ends with items_in 1000.
    """
    async for _ in inp:
        pass
    return
    yield  # an async generator that never yields
