"""User generators for `test_composed_counts`: maps, filters and others.

Not a test module (pytest would rewrite it): `runtime.shapes` must find each
map and filter here as written, so that the chains take the derived counts.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from flowstream import node

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

SIZES: list[int] = []


@node("k.inc")
async def inc(inp: AsyncIterator[int]) -> AsyncIterator[int]:
    """A map."""
    async for x in inp:
        yield x + 1


@node("k.inv")
async def inv(inp: AsyncIterator[int]) -> AsyncIterator[int]:
    """A map that fails on 7."""
    async for x in inp:
        yield 60 // (x - 7)


@node("k.odd")
async def odd(inp: AsyncIterator[int]) -> AsyncIterator[int]:
    """A filter."""
    async for x in inp:
        if x % 2:
            yield x


@node("k.sift")
async def sift(inp: AsyncIterator[int]) -> AsyncIterator[int]:
    """A filter that fails on 11."""
    async for x in inp:
        if 60 // (x - 11) % 3:
            yield x


@node("k.dup")
async def dup(inp: AsyncIterator[int]) -> AsyncIterator[int]:
    """Two items for each."""
    async for x in inp:
        yield x
        yield -x


@node("k.head")
async def head(inp: AsyncIterator[int]) -> AsyncIterator[int]:
    """The first five items, then it ends."""
    n = 0
    async for x in inp:
        yield x
        n += 1
        if n == 5:
            return


@node("k.pause")
async def pause(inp: AsyncIterator[int]) -> AsyncIterator[int]:
    """Waits on the loop before each item."""
    async for x in inp:
        await asyncio.sleep(0)
        yield x


@node("k.lump", batched=True)
async def lump(inp: AsyncIterator[list[int]]) -> AsyncIterator[list[int]]:
    """Everything in one batch at the end."""
    items: list[int] = []
    async for batch in inp:
        items.extend(batch)
    yield items


@node("k.sizes", batched=True)
async def sizes(inp: AsyncIterator[list[int]]) -> AsyncIterator[list[int]]:
    """Passes batches on, noting their sizes in SIZES."""
    async for batch in inp:
        SIZES.append(len(batch))
        yield batch


NODES = (inc, inv, odd, sift, dup, head, pause, lump, sizes)
