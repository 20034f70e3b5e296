"""Sink nodes: where items end inside the process."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..core.node import Kernel, node

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

__all__ = ["collect_sink", "null_sink"]


def _identity_kernel(config: None) -> Kernel:
    return lambda batch: batch


def _discard_kernel(config: None) -> Kernel:
    return lambda batch: []


@node("sink.collect", kernel=_identity_kernel)
async def collect_sink(inp: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """Gather every item; a run's outputs list them under this node, port ``out``.

    Keeps everything in memory: in stream mode use it only for bounded tests.

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
