"""Node types written in Python and used from workflow files.

A workflow names them by reference, ``type: "examples.my_nodes:running_mean"``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flowstream import node

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


@node("example.running_mean")
async def running_mean(inp: AsyncIterator[float]) -> AsyncIterator[float]:
    """Emit the mean of everything seen so far."""
    total, count = 0.0, 0
    async for x in inp:
        total, count = total + x, count + 1
        yield total / count
