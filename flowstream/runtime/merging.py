"""Reading several inputs at once: `merge_batches`, fair and barrier-aware."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from .feeds import Align, AligningFeed

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence

__all__ = ["merge_batches"]


_END: Any = object()


async def _next_batch(source: AsyncIterator[list[Any]]) -> Any:
    return await anext(source, _END)


async def merge_batches(
    sources: Sequence[AsyncIterator[list[Any]]],
    *,
    first: int | None = None,
    paused: Callable[[int], bool] | None = None,
) -> AsyncGenerator[tuple[int, list[Any] | None], None]:
    """Yield ``(index, batch)`` from several batch iterators as batches arrive.

    Yields ``(index, None)`` once when source ``index`` ends, and ends when
    all have. Order is kept within each source. Fair: when several sources
    have a batch ready they are served in turn (round robin), so a busy
    input never starves a quieter one; but source ``first``, when given, is
    served before the others whenever it has a batch ready.

    One task per source waits for its next batch (so each source is read at
    most one batch ahead); they are cancelled and awaited when this
    generator ends or is closed, so none outlives it. Close it with
    ``aclose()`` (or ``contextlib.aclosing``).

    ``paused(index)``, when given, is asked before each read of a source: a
    source it says is paused is not read until it says otherwise (a consumer
    that buffers per source uses it to keep its buffers bounded; at least
    one live source must stay unpaused). While a checkpoint barrier is being
    aligned, pauses are ignored: the sources still owing their barrier are
    read up to it (the items before a barrier are bounded: the sources are
    held).
    """
    # Not aiostream's merge: when several sources are ready it always takes
    # the first one, so a source that is never empty starves the others.
    # The waits are tasks of their own, not an asyncio.TaskGroup, because a
    # generator must not yield inside a TaskGroup (PEP 789); the finally
    # clause below gives them the same guarantee.
    count = len(sources)
    waits: dict[int, asyncio.Task[Any]] = {}
    live = list(range(count))
    # Checkpoint barriers: a source whose input passed barrier e hands out an
    # Align mark; it is not read again until every live source has (it has
    # nothing before the epoch commits anyway), and then the mark is aligned
    # here, between two yields: the node has handled all that came before.
    held: dict[int, Align] = {}
    for source in sources:
        if isinstance(source, AligningFeed):
            source.align = True
    turn = 0
    try:
        while live:
            if held and all(i in held for i in live):
                marks = list(held.values())
                held.clear()
                await marks[0].aligned()
                for mark in marks[1:]:
                    mark.done = True
            for i in live:
                if i in waits or i in held:
                    continue
                if paused is None or held or not paused(i):
                    waits[i] = asyncio.ensure_future(_next_batch(sources[i]))
                    if i == first:
                        # Let the new wait take a batch that is already there
                        # before the others are looked at.
                        await asyncio.sleep(0)
            ready = [i for i in live if i in waits and waits[i].done()]
            if not ready:
                if not waits:
                    msg = "merge_batches: every live source is paused"
                    raise RuntimeError(msg)
                await asyncio.wait(
                    [waits[i] for i in live if i in waits],
                    return_when=asyncio.FIRST_COMPLETED,
                )
                ready = [i for i in live if i in waits and waits[i].done()]
            if first is not None and first in ready:
                pick = first
            else:
                pick = min(ready, key=lambda i: (i - turn) % count)
                turn = pick + 1
            batch = waits.pop(pick).result()
            if batch is _END:
                live.remove(pick)
                yield pick, None
            elif type(batch) is Align:
                held[pick] = batch
            else:
                yield pick, batch
    finally:
        for task in waits.values():
            task.cancel()
        if waits:
            await asyncio.wait(waits.values())
            for task in waits.values():
                if not task.cancelled():
                    task.exception()  # retrieved: it is moot once we stop
