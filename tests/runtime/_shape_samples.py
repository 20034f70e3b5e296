"""User generators of every shape, for `test_shapes`.

Not a test module: pytest rewrites the asserts of test modules, which
compiles them differently from their source (method calls), and a function
whose code is not what its source compiles to has no known shape.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


async def double(inp: AsyncIterator[int]) -> AsyncIterator[int]:
    """A map."""
    async for x in inp:
        yield 2 * x


async def pairs(inp: AsyncIterator[tuple[int, int]]) -> AsyncIterator[int]:
    async for a, b in inp:
        yield a + b


async def closing_map(inp: AsyncIterator[int]) -> AsyncIterator[int]:
    try:
        async for x in inp:
            yield x + 1
    finally:
        await asyncio.sleep(0)


async def odd(inp: AsyncIterator[int]) -> AsyncIterator[int]:
    async for x in inp:
        if x % 2:
            yield x


async def nothing(inp: AsyncIterator[int]) -> AsyncIterator[None]:
    async for _ in inp:
        yield


# --- not a map nor a filter ----------------------------------------------------


async def awaits_in_expr(inp: AsyncIterator[int]) -> AsyncIterator[int]:
    async for x in inp:
        yield await asyncio.sleep(0, x)


async def awaits_first(inp: AsyncIterator[int]) -> AsyncIterator[int]:
    async for x in inp:
        await asyncio.sleep(0)
        yield x


async def twice(inp: AsyncIterator[int]) -> AsyncIterator[int]:
    async for x in inp:
        yield x
        yield x


async def setup_first(inp: AsyncIterator[int]) -> AsyncIterator[int]:
    n = 1
    async for x in inp:
        yield x + n


async def yields_at_end(inp: AsyncIterator[int]) -> AsyncIterator[int]:
    async for x in inp:
        yield x
    yield -1


async def loop_else(inp: AsyncIterator[int]) -> AsyncIterator[int]:
    async for x in inp:
        yield x
    else:
        pass


async def swallows(inp: AsyncIterator[int]) -> AsyncIterator[int]:
    try:
        async for x in inp:
            yield 1 // x
    except ZeroDivisionError:
        pass


async def returns_in_finally(inp: AsyncIterator[int]) -> AsyncIterator[int]:
    try:
        async for x in inp:
            yield 1 // x
    finally:
        return  # noqa: B012  (the point: it swallows the failure)


async def yields_in_finally(inp: AsyncIterator[int]) -> AsyncIterator[int]:
    try:
        async for x in inp:
            yield x
    finally:
        yield 0


async def filter_else(inp: AsyncIterator[int]) -> AsyncIterator[int]:
    async for x in inp:
        if x:
            yield x
        else:
            yield -x


async def walrus(inp: AsyncIterator[int]) -> AsyncIterator[int]:
    async for x in inp:
        yield (y := x) + y


async def async_comprehension(inp: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for x in inp:
        yield [y async for y in x]


async def other_input(inp: AsyncIterator[int], more: Any = None) -> AsyncIterator[int]:
    async for x in more:
        yield x


async def attribute_target(inp: AsyncIterator[int]) -> AsyncIterator[int]:
    async for double.x in inp:  # type: ignore[attr-defined]
        yield 0


def plain_function(inp: Any) -> Any:
    return inp
