"""User generators for `test_lifting`: liftable maps and filters, and others.

Not a test module (pytest would rewrite it): `runtime.shapes` must find each
generator here as written, or none would be lifted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from flowstream import NodeContext, node

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

OFFSET = 100  # read as a global: tests change it between runs
SEEN: list[Any] = []  # what the side-effecting node saw


class Scale(msgspec.Struct, frozen=True, kw_only=True):
    factor: int = 3


@node("l.double")
async def double(inp: AsyncIterator[int]) -> AsyncIterator[int]:
    """A map."""
    async for x in inp:
        yield 2 * x


@node("l.offset")
async def offset(inp: AsyncIterator[int]) -> AsyncIterator[int]:
    """A map over a module global."""
    async for x in inp:
        yield x + OFFSET


@node("l.scale", config=Scale)
async def scale(inp: AsyncIterator[int], *, config: Scale) -> AsyncIterator[int]:
    """A map over its config."""
    async for x in inp:
        yield x * config.factor


@node("l.pair")
async def pair(inp: AsyncIterator[int]) -> AsyncIterator[tuple[int, int]]:
    """A map to pairs."""
    async for x in inp:
        yield (x, x % 5)


@node("l.mul")
async def mul(inp: AsyncIterator[tuple[int, int]]) -> AsyncIterator[int]:
    """A map with a tuple target: fails to unpack anything but a pair."""
    async for a, b in inp:
        yield a * b + 1


@node("l.inv")
async def inv(inp: AsyncIterator[int]) -> AsyncIterator[int]:
    """A map that fails on 7 (ZeroDivisionError)."""
    async for x in inp:
        yield 60 // (x - 7)


@node("l.odd")
async def odd(inp: AsyncIterator[int]) -> AsyncIterator[int]:
    """A filter that keeps its item."""
    async for x in inp:
        if x % 2:
            yield x


@node("l.big_tens")
async def big_tens(inp: AsyncIterator[int]) -> AsyncIterator[int]:
    """A filter that projects: it yields something else than its item."""
    async for x in inp:
        if x > 4:
            yield x * 10


@node("l.sift")
async def sift(inp: AsyncIterator[int]) -> AsyncIterator[int]:
    """A filter whose condition fails on 11."""
    async for x in inp:
        if 60 // (x - 11) % 3:
            yield x


@node("l.pick")
async def pick(inp: AsyncIterator[tuple[int, int]]) -> AsyncIterator[int]:
    """A projecting filter with a tuple target."""
    async for a, b in inp:
        if b != 0:
            yield a - b


@node("l.stop_at_5")
async def stop_at_5(inp: AsyncIterator[int]) -> AsyncIterator[int]:
    """A map whose expression raises StopIteration on 5."""
    async for x in inp:
        yield next(iter(())) if x == 5 else x


@node("l.key_of")
async def key_of(inp: AsyncIterator[dict[str, int]]) -> AsyncIterator[int]:
    """A map that fails with a KeyError on records without 'k'."""
    async for r in inp:
        yield r["k"]


@node("l.record")
async def record(inp: AsyncIterator[int]) -> AsyncIterator[dict[str, int]]:
    """A map to records, every fourth without its key."""
    async for x in inp:
        yield {"k": x} if x % 4 else {"j": x}


@node("l.comprehension")
async def comprehension(inp: AsyncIterator[int]) -> AsyncIterator[list[int]]:
    """A map whose comprehension reads the loop variable (evaluated at once)."""
    async for x in inp:
        yield [x * i for i in range(3)]


@node("l.noted")
async def noted(inp: AsyncIterator[int]) -> AsyncIterator[int]:
    """A map with a side effect (lift=False keeps it a generator)."""
    async for x in inp:
        yield SEEN.append(x) or x  # type: ignore[func-returns-value]


noted_generator = node("l.noted_kept", lift=False)(noted.fn)


CALLS: list[int] = []  # what flaky_check was called with, in order
FAILED_ONCE: set[int] = set()


def flaky_check(x: int) -> int:
    """``x``; fails the first time it sees a multiple of 5."""
    CALLS.append(x)
    if x % 5 == 0 and x not in FAILED_ONCE:
        FAILED_ONCE.add(x)
        msg = f"flaky on {x}"
        raise ValueError(msg)
    return x


@node("l.flaky")
async def flaky(inp: AsyncIterator[int]) -> AsyncIterator[int]:
    """A map that fails once on each multiple of 5 (a retry succeeds)."""
    async for x in inp:
        yield flaky_check(x)


def scaled(factor: int) -> tuple[Any, Any]:
    """A map over a closure cell, and a setter of that cell."""

    @node("l.closure")
    async def by_closure(inp: AsyncIterator[int]) -> AsyncIterator[int]:
        async for x in inp:
            yield x * factor

    def set_factor(value: int) -> None:
        nonlocal factor
        factor = value

    return by_closure, set_factor


closure, set_closure_factor = scaled(5)


# --- not lifted --------------------------------------------------------------


@node("l.running")
async def running(inp: AsyncIterator[int]) -> AsyncIterator[int]:
    """Keeps a running total: state in a local."""
    total = 0
    async for x in inp:
        total += x
        yield total


@node("l.guarded")
async def guarded(inp: AsyncIterator[int]) -> AsyncIterator[int]:
    """A map in a try/finally."""
    try:
        async for x in inp:
            yield x + 1
    finally:
        SEEN.append("closed")


@node("l.with_ctx")
async def with_ctx(inp: AsyncIterator[int], *, ctx: NodeContext) -> AsyncIterator[int]:
    """A map that takes ctx."""
    async for x in inp:
        yield x + ctx.instance


@node("l.thunk")
async def thunk(inp: AsyncIterator[int]) -> AsyncIterator[Any]:
    """Captures its loop variable in a lambda."""
    async for x in inp:
        yield lambda: x  # noqa: B023 (the point: late binding)


@node("l.frame")
async def frame(inp: AsyncIterator[int]) -> AsyncIterator[Any]:
    """Reads its frame."""
    async for x in inp:  # noqa: B007 (locals() sees it)
        yield sorted(locals())


@node("l.reads_input")
async def reads_input(inp: AsyncIterator[int]) -> AsyncIterator[Any]:
    """Reads its input iterator per item."""
    async for x in inp:
        yield (x, inp is None)


LIFTED = (
    double,
    offset,
    scale,
    pair,
    mul,
    inv,
    odd,
    big_tens,
    sift,
    pick,
    stop_at_5,
    key_of,
    record,
    comprehension,
    noted,
    closure,
    flaky,
)
NOT_LIFTED = (running, guarded, with_ctx, thunk, frame, reads_input, noted_generator)
NODES = LIFTED + NOT_LIFTED
