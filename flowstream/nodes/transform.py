"""Stateless transforms of single items.

Each node here is 1-in/1-out and stateless, so it also carries a batch kernel:
in a fused chain the runtime applies the kernels to whole batches in one task.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..core.node import Kernel, node
from ._common import ItemFunction, item_function

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

__all__ = ["filter_items", "map_items"]


def _map_kernel(config: ItemFunction) -> Kernel:
    f = item_function(config)
    return lambda batch: list(map(f, batch))


def _filter_kernel(config: ItemFunction) -> Kernel:
    f = item_function(config)
    return lambda batch: list(filter(f, batch))


@node("transform.map", config=ItemFunction, kernel=_map_kernel)
async def map_items(
    inp: AsyncIterator[Any], *, config: ItemFunction
) -> AsyncIterator[Any]:
    """Replace each item by ``expr`` (CEL over ``x``) or ``fn(x)``. Stream-safe.

    Example:
        ``{id: double, type: transform.map, config: {expr: "x * 2"}}`` turns
        ``1, 2, 3`` into ``2, 4, 6``.
    """
    f = item_function(config)
    async for x in inp:
        yield f(x)


@node("transform.filter", config=ItemFunction, kernel=_filter_kernel)
async def filter_items(
    inp: AsyncIterator[Any], *, config: ItemFunction
) -> AsyncIterator[Any]:
    """Keep the items for which ``expr`` or ``fn(x)`` is true. Stream-safe.

    Example:
        ``{id: odd, type: transform.filter, config: {expr: "x % 2 == 1"}}``
        keeps ``1, 3`` of ``1, 2, 3``.
    """
    f = item_function(config)
    async for x in inp:
        if f(x):
            yield x
