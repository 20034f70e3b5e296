"""The flowstream node types the benchmarks add, and a registry holding them."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from flowstream import default_registry
from flowstream.core.node import node

from . import funcs

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from flowstream.runtime.registry import NodeRegistry


@node("bench.sum", batched=True)
async def total(inp: AsyncIterator[list[int]]) -> AsyncIterator[list[int]]:
    """Sum every item (batch-aware: sees whole batches); emit the sum at the end."""
    s = 0
    async for batch in inp:
        s += sum(batch)
    yield [s]


@node("bench.slow_sink", batched=True)
async def slow_sink(inp: AsyncIterator[list[int]]) -> AsyncIterator[list[int]]:
    """A deliberately slow sink: a Python loop per batch, then a loop turn."""
    s = 0
    async for batch in inp:
        s += funcs.slow_work(batch)
        await asyncio.sleep(0)
    yield [s]


# One-shot DAG nodes: the very functions the floor calls, declared as nodes.
one = node("bench.one")(funcs.one)
add = node("bench.add")(funcs.add)
aadd = node("bench.aadd")(funcs.aadd)

BENCH_NODES = (total, slow_sink, one, add, aadd)


def registry() -> NodeRegistry:
    """The built-in node types plus the benchmark ones (no entry points)."""
    reg = default_registry(entry_points=False)
    for spec in BENCH_NODES:
        reg.register(spec)
    return reg
