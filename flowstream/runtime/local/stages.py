"""The stages a segment's batches flow through: kernels, generators, calls.

A segment's task pulls batches through a chain of async generators: its
head (a source, a channel, or a node reading its ports), then for each fused
node either a kernel stage (consecutive batch kernels in one loop per batch)
or a generator stage (a user node's generator, restarted after an item's
failure). The functions take the executor whose run they belong to.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import operator
from collections import deque
from typing import TYPE_CHECKING, Any

from ...core.kernels import ItemKernel, drained, stopped_early
from ...core.node import ItemFailed
from ..feeds import NO_ITEM, BatchFeed, ChannelFeed, ItemFeed
from ..merging import merge_batches
from ..stepping import (
    Resume,
    rebatch,
)
from .failures import FAILED, Abort
from .fusion import kernel_steps

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

    from ..channel import Control, ReceiveChannel
    from .executor import WorkflowExecutor
    from .fusion import KernelStep, NodeRun

__all__ = [
    "MAX_BATCH",
    "batched_call_stage",
    "call_stage",
    "concurrent_call_stage",
    "count_in",
    "count_out",
    "generator_stage",
    "kernel_items",
    "kernel_stage",
    "kernels_one_by_one",
    "resume_items",
    "run_generator",
    "zipped_call_stage",
]

MAX_BATCH = 1024
"""Most items a generator stage collects into one batch."""
_QUEUED = "\x00queued"  # a checkpointed multi-input call's waiting inputs


async def kernel_stage(
    ex: WorkflowExecutor,
    upstream: AsyncIterator[list[Any]],
    kernels: list[tuple[NodeRun, Callable[[list[Any]], list[Any]]]],
    counted: bool = False,
) -> AsyncIterator[list[Any]]:
    """Apply consecutive batch kernels to each batch, in one loop.

    Runs of map/filter kernels (with at most one filter, so every node's
    count is still known) are composed into one iterator chain per batch.
    ``counted`` says the first node's input was already counted.
    """
    steps = kernel_steps(kernels)
    first = kernels[0][0].rt
    async with contextlib.aclosing(upstream):  # type: ignore[type-var]
        async for batch in upstream:
            if not counted:
                first.items_in += len(batch)
            for step in steps:
                size = len(batch)
                over = step.over
                if over is not None:
                    # Item kernels: a failing item is redone alone, the
                    # items before it are done (see `resume_items`).
                    items = iter(batch)
                    out: list[Any] = []
                    try:
                        out.extend(over(items))
                        if not drained(items):  # a StopIteration, not the end
                            raise stopped_early(over)
                    except Exception as exc:
                        out = await resume_items(ex, step, batch, items, out, exc)
                    else:
                        step.count(size, len(out))
                    batch = out
                    if not batch:
                        break
                    if step.next is not None:
                        step.next.items_in += len(batch)
                    continue
                try:
                    out = step.run(batch)
                except Exception:
                    # Redo this batch kernel by kernel, item by item where
                    # one fails, so only the failing items are set aside.
                    out = await kernels_one_by_one(ex, step.parts, batch)
                else:
                    step.count(size, len(out))
                batch = out
                if not batch:
                    break
                if step.next is not None:
                    step.next.items_in += len(batch)
            yield batch


async def resume_items(
    ex: WorkflowExecutor,
    step: KernelStep,
    batch: list[Any],
    items: Iterator[Any],
    done: list[Any],
    exc: Exception,
) -> list[Any]:
    """A step of item kernels failed on an item of ``batch``: go on from it.

    ``items`` is the iterator over ``batch`` the step was reading, ``done``
    what the items before the failing one gave (``list.extend`` keeps what
    it appended before the failure) and ``exc`` the failure. The failing
    item is the last one taken: it alone goes to the failing node's
    policies (`failed_item`), and the step goes on with the items after it.
    The items before a failing one are not evaluated again.
    """
    over = step.over
    assert over is not None
    out: list[Any] = []
    rest = batch
    while True:
        failed = len(rest) - operator.length_hint(items) - 1
        if failed < 0:  # failed before taking an item: redo all one by one
            return out + await kernels_one_by_one(ex, step.parts, rest)
        step.count(failed, len(done))
        out += done
        out += await failed_item(ex, step.parts, rest[failed], exc)
        rest = rest[failed + 1 :]
        items = iter(rest)
        done = []
        try:
            done.extend(over(items))
            if not drained(items):
                raise stopped_early(over)
        except Exception as again:
            exc = again
            continue
        step.count(len(rest), len(done))
        return out + done


async def failed_item(
    ex: WorkflowExecutor,
    parts: list[tuple[NodeRun, Callable[[list[Any]], list[Any]]]],
    item: Any,
    exc: Exception,
) -> list[Any]:
    """What the kernels ``parts`` give for ``item``, on which one raised ``exc``.

    When the traceback names the failing kernel (a lifted generator's
    function, `runtime.lifting`, once in ``parts``) and its input, that
    failure is the node's first attempt, as it is for a generator: the
    kernels before it are not run again, its policies decide (a retry is
    attempt 2), and the kernels after it take what it gives. Otherwise the
    item is redone alone, kernel by kernel, each under its policies.
    """
    found = _failing_kernel(exc, parts)
    if found is None:
        return await kernels_one_by_one(ex, parts, [item], alone=True)
    j, value = found
    for k, (n, _) in enumerate(parts[:j]):  # they passed the item on
        if k:
            n.rt.items_in += 1
        n.rt.items_out += 1
    n, kernel = parts[j]
    if j:
        n.rt.items_in += 1
    result = FAILED
    if await ex._failures.on_failure(n, exc, value, 1):
        call = functools.partial(kernel, [value])
        result = await ex._failures.attempt(n, call, value, first=2)
    out = [] if result is FAILED else result
    n.rt.items_out += len(out)
    return await kernels_one_by_one(ex, parts[j + 1 :], out, counted=False)


def _failing_kernel(
    exc: Exception, parts: list[tuple[NodeRun, Callable[[list[Any]], list[Any]]]]
) -> tuple[int, Any] | None:
    """Which of ``parts`` raised ``exc``, and on what; None if not known.

    The frame after the catching one is the kernel function's own (``map``
    and ``filter`` add none). Only a lifted function is trusted to still
    hold its input in its first local (its body assigns nothing).
    """
    tb = exc.__traceback__
    if tb is None or tb.tb_next is None:
        return None
    frame = tb.tb_next.tb_frame
    code = frame.f_code
    found = [
        j
        for j, (_, k) in enumerate(parts)
        if isinstance(k, ItemKernel) and k.lifted and k.fn.__code__ is code
    ]
    if len(found) != 1:
        return None
    return found[0], frame.f_locals[code.co_varnames[0]]


async def kernels_one_by_one(
    ex: WorkflowExecutor,
    parts: list[tuple[NodeRun, Callable[[list[Any]], list[Any]]]],
    batch: list[Any],
    *,
    alone: bool = False,
    counted: bool = True,
) -> list[Any]:
    """Run composed kernels one node at a time (a composed pass failed).

    ``alone``: the batch is one item known to fail somewhere, so each kernel
    takes it under its policies straight away. ``counted``: the first
    node's input is already counted.
    """
    for i, (n, kernel) in enumerate(parts):
        if i or not counted:
            n.rt.items_in += len(batch)
        if alone:
            batch = await kernel_items(ex, n, kernel, batch)
        else:
            try:
                batch = kernel(batch)
            except Exception:
                batch = await kernel_items(ex, n, kernel, batch)
        n.rt.items_out += len(batch)
    return batch


async def kernel_items(
    ex: WorkflowExecutor,
    n: NodeRun,
    kernel: Callable[[list[Any]], list[Any]],
    batch: list[Any],
) -> list[Any]:
    """A kernel failed on a batch: redo it item by item to isolate failures."""
    out: list[Any] = []
    for item in batch:
        result = await ex._failures.attempt(n, functools.partial(kernel, [item]), item)
        if result is not FAILED:
            out.extend(result)
    return out


async def generator_stage(
    ex: WorkflowExecutor, n: NodeRun, upstream: AsyncIterator[list[Any]]
) -> AsyncIterator[list[Any]]:
    """A fused node that is not a kernel, fed by the batches before it."""
    counted = count_in(ex, n, upstream)
    if n.spec.shape == "call" and len(n.gnode.inputs) == 1:
        async for batch in batched_call_stage(ex, n, counted):
            yield batch
        return
    feed = BatchFeed(counted) if n.spec.batched else ItemFeed(counted)
    stage = call_stage if n.spec.shape == "call" else run_generator
    async for batch in stage(ex, n, [feed]):
        yield batch


async def count_out(
    ex: WorkflowExecutor, n: NodeRun, upstream: AsyncIterator[list[Any]]
) -> AsyncIterator[list[Any]]:
    """Pass batches on, counting them as ``n``'s output."""
    rt = n.rt
    async with contextlib.aclosing(upstream):  # type: ignore[type-var]
        async for batch in upstream:
            rt.items_out += len(batch)
            yield batch


async def count_in(
    ex: WorkflowExecutor, n: NodeRun, upstream: AsyncIterator[list[Any]]
) -> AsyncIterator[list[Any]]:
    """Pass batches on, counting them as ``n``'s input."""
    rt = n.rt
    async with contextlib.aclosing(upstream):  # type: ignore[type-var]
        async for batch in upstream:
            rt.items_in += len(batch)
            yield batch


async def batched_call_stage(
    ex: WorkflowExecutor, n: NodeRun, upstream: AsyncIterator[list[Any]]
) -> AsyncIterator[list[Any]]:
    """A one-shot node with one input, a batch at a time: a plain call per item.

    A coroutine function's call is driven by ``send(None)``: one that does
    not suspend costs a plain call; one that does first hands on the results
    ready so far (latency), then waits in this task. A call that raises goes
    through the node's policies (`Failures.call`, from attempt 1), and so
    does every call of a node with a ``timeout_ms``. Results leave once per
    input batch, not once per item.
    """
    target = n.call_target()
    is_async = n.spec.is_async
    failures = ex._failures
    limited = getattr(n.gnode.decl, "timeout_ms", None) is not None
    async with contextlib.aclosing(upstream):  # type: ignore[type-var]
        async for batch in upstream:
            out: list[Any] = []
            for item in batch:
                if limited:
                    value = await failures.call(n, (item,))
                else:
                    try:
                        value = target(item)
                        if is_async:
                            try:
                                signal = value.send(None)
                            except StopIteration as stop:
                                value = stop.value
                            else:
                                if out:
                                    yield out
                                    out = []
                                value = await Resume(value, signal)
                    except Exception as exc:
                        value = await failures.call(n, (item,), failed=exc)
                if value is not FAILED:
                    out.append(value)
            if out:
                yield out


async def call_stage(
    ex: WorkflowExecutor, n: NodeRun, feeds: list[Any]
) -> AsyncIterator[list[Any]]:
    """A one-shot function fed by streams: one call per item (zip across ports)."""
    try:
        while True:
            args = []
            for f in feeds:
                try:
                    args.append(await f.__anext__())
                except StopAsyncIteration:
                    return
            result = await ex._failures.call(n, tuple(args))
            if result is not FAILED:
                yield [result]
    finally:
        for f in feeds:
            await f.aclose()


async def zipped_call_stage(
    ex: WorkflowExecutor, n: NodeRun, feeds: list[Any]
) -> AsyncIterator[list[Any]]:
    """`_call_stage` for a one-shot node with several inputs, checkpointed.

    Reads every port as batches arrive (`merge_batches`, which aligns the
    barriers) into per-port queues kept in the node's state, so items a
    barrier finds waiting for their partners are in the snapshot; calls
    the node once per complete set, in order. A port whose queue is
    ``MAX_BATCH`` items ahead is not read (backpressure) until the others
    catch up. Ends when an input has ended and its queue is empty.
    """
    state = n.rt.state
    queues: list[list[Any]] = state.get(_QUEUED) or [[] for _ in feeds]
    state[_QUEUED] = queues
    ended: set[int] = set()

    def paused(i: int) -> bool:
        return len(queues[i]) >= MAX_BATCH

    merged = merge_batches(feeds, paused=paused)
    try:
        async with contextlib.aclosing(merged):
            while not any(i in ended and not queues[i] for i in range(len(feeds))):
                count = min(len(q) for q in queues)
                if count:
                    sets = list(zip(*(q[:count] for q in queues), strict=True))
                    for q in queues:
                        del q[:count]
                    out = []
                    for args in sets:
                        result = await ex._failures.call(n, args)
                        if result is not FAILED:
                            out.append(result)
                    yield out
                    continue
                try:
                    i, batch = await anext(merged)
                except StopAsyncIteration:
                    return
                if batch is None:
                    ended.add(i)
                else:
                    queues[i].extend(batch)
    finally:
        for f in feeds:
            await f.aclose()


async def run_generator(
    ex: WorkflowExecutor, n: NodeRun, feeds: list[Any]
) -> AsyncIterator[list[Any]]:
    """Drive a node's async generator; restart it after an item's failure."""
    spec = n.spec
    target = n.call_target()
    attempt = 0
    # Where the last failure was: how many items (batches) the feeds had
    # handed out, or (batch, index) for a batched node's `ItemFailed`.
    failed_at: Any = -1
    try:
        while True:
            gen = target(*feeds)
            out = gen if spec.batched else rebatch(gen, MAX_BATCH, n.rt)
            try:
                async with contextlib.aclosing(out):
                    async for batch in out:
                        yield batch
                return
            except Abort:
                # A node upstream in the same chain failed the run (it raised
                # through this generator's input): it is not this node's.
                raise
            except Exception as exc:
                if any(f.failed for f in feeds):
                    raise  # an upstream's failure, surfacing through this node
                if isinstance(exc, ItemFailed) and spec.batched and len(feeds) == 1:
                    # One item of a batch failed (the batched nodes' per-item
                    # hook): only it meets the policies; the node goes on
                    # from it (a retry) or past it.
                    (feed,) = feeds
                    at: Any = (feed.taken, feed.offset + exc.index)
                    attempt = attempt + 1 if at == failed_at else 1
                    failed_at = at
                    cause = exc.__cause__
                    why = cause if isinstance(cause, Exception) else exc
                    item = feed.last[exc.index]
                    again = await ex._failures.on_failure(n, why, item, attempt)
                    feed.replay_from(exc.index if again else exc.index + 1)
                    continue
                # A new failing item starts a fresh retry budget; the same
                # item failing again (after a replay) uses up its budget.
                at = sum(f.taken for f in feeds)
                attempt = attempt + 1 if at == failed_at else 1
                failed_at = at
                failed = [f.last for f in feeds]
                item = (
                    failed[0]
                    if len(failed) == 1
                    else dict(zip(n.gnode.inputs, failed, strict=True))
                )
                if await ex._failures.on_failure(n, exc, item, attempt):
                    for f in feeds:
                        f.replay()
    finally:
        for f in feeds:
            await f.aclose()


class _Held(Exception):
    """A control message reached a concurrent call stage's input."""


async def concurrent_call_stage(
    ex: WorkflowExecutor,
    n: NodeRun,
    recv: ReceiveChannel[Any],
    on_control: Callable[[Control], Awaitable[None]] | None,
) -> AsyncIterator[list[Any]]:
    """A one-shot async node with ``concurrency`` calls in flight at once.

    Each item's call (through the node's retry policy and error handling,
    so retries and dead letters stay per item) runs as a task of its own;
    at most ``concurrency`` run at once, and no more input is read while
    they do (backpressure). Results go out as soon as they are ready: in
    input order with ``ordered`` (a slow call holds back those after it),
    else as they finish. The input is read one item ahead, in a task, so a
    result never waits for the next item.

    A control message (a checkpoint barrier) is held back until every call
    started before it has finished and its result has been handed on; only
    then is it handled. So an epoch's snapshot never has calls in flight.
    """
    decl = n.gnode.decl
    limit, ordered = decl.concurrency, decl.ordered
    held: list[Control] = []

    async def hold(msg: Control) -> None:
        held.append(msg)
        raise _Held

    feed = ChannelFeed(recv, n.rt, hold if on_control is not None else None)
    calls: deque[asyncio.Future[Any]] = deque()
    reading: asyncio.Future[Any] | None = None
    ended = False
    try:
        while True:
            if not ended and not held and reading is None and len(calls) < limit:
                reading = asyncio.ensure_future(feed.__anext__())
            waits: list[asyncio.Future[Any]] = list(calls)
            if reading is not None:
                waits.append(reading)
            if not waits:
                if held and on_control is not None:
                    await on_control(held.pop(0))  # nothing in flight now
                    continue
                return
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            if reading is not None and reading.done():
                done: asyncio.Future[Any] = reading
                reading = None
                try:
                    item = done.result()
                except StopAsyncIteration:
                    ended = True
                except _Held:
                    pass  # handled once the calls before it are done
                else:
                    calls.append(asyncio.ensure_future(ex._failures.call(n, (item,))))
                    # The rest of the batch that item came in needs no wait.
                    while len(calls) < limit:
                        item = feed.next_ready()
                        if item is NO_ITEM:
                            break
                        calls.append(
                            asyncio.ensure_future(ex._failures.call(n, (item,)))
                        )
            batch: list[Any] = []
            if ordered:
                while calls and calls[0].done():
                    value = calls.popleft().result()
                    if value is not FAILED:
                        batch.append(value)
            else:
                for call in [c for c in calls if c.done()]:
                    calls.remove(call)
                    value = call.result()
                    if value is not FAILED:
                        batch.append(value)
            if batch:
                yield batch
    finally:
        # Closed early, failed or cancelled: nothing of ours outlives it.
        ours = [*calls] if reading is None else [reading, *calls]
        pending = [f for f in ours if not f.done()]
        for f in pending:
            f.cancel()
        if pending:
            await asyncio.wait(pending)
        for f in ours:
            if not f.cancelled():
                f.exception()  # retrieved: moot once we stop
        recv.close()
