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
import itertools
import operator
import sys
from collections import deque
from typing import TYPE_CHECKING, Any

from ...core.node import ItemFailed
from ...core.workflow import StopWorkflow
from ..feeds import NO_ITEM, BatchFeed, ChannelFeed, ItemFeed
from ..merging import merge_batches
from ..stepping import (
    BATCH_FULL,
    DONE,
    NEED_BATCH,
    Resume,
    Until,
    abandon,
    advance,
    batch_full,
    need_batch,
    rebatch,
)
from .failures import FAILED, Abort
from .fusion import kernel_steps

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from ..channel import Control, ReceiveChannel
    from ..context import NodeRuntime
    from .executor import WorkflowExecutor
    from .fusion import NodeRun

__all__ = [
    "MAX_BATCH",
    "batched_call_stage",
    "call_stage",
    "composable",
    "composed_stage",
    "concurrent_call_stage",
    "count_in",
    "count_out",
    "generator_stage",
    "kernel_items",
    "kernel_stage",
    "kernels_one_by_one",
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


async def kernels_one_by_one(
    ex: WorkflowExecutor,
    parts: list[tuple[NodeRun, Callable[[list[Any]], list[Any]]]],
    batch: list[Any],
) -> list[Any]:
    """Run composed kernels one node at a time (a composed pass failed)."""
    for i, (n, kernel) in enumerate(parts):
        if i:
            n.rt.items_in += len(batch)
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


def composable(ex: WorkflowExecutor, n: NodeRun) -> bool:
    """Whether a fused node may join a composed chain of user generators.

    A composed chain hands items from one user generator to the next with no
    batch in between (`composed_stage`). It cannot replay an item into one
    node of the chain, so it takes only nodes whose failures end the run
    (no retry, ``stop_workflow``), and only in runs without a checkpoint
    store, where poison records need each node's own failing item.
    """
    spec = n.spec
    return (
        spec.shape == "stream"
        and not spec.batched
        and len(n.gnode.inputs) == 1
        and n.retry is None
        and isinstance(n.handling, StopWorkflow)
        and ex._store is None
    )


_UNBOUNDED = sys.maxsize


class _EdgeIter:
    """Base of the per-edge iterator classes `_Edge` makes."""

    __slots__ = ()

    def __aiter__(self) -> _EdgeIter:
        return self


class _Edge:
    """The input of a composed chain's node: its upstream generator, counted.

    The downstream node reads ``it``, whose ``__anext__`` is the C
    ``__next__`` of ``starmap(gen.__anext__, repeat((), N))``: no Python
    frame of ours per item. ``n`` (the requests passed on) is read off how
    much of the ``repeat`` is left, at batch boundaries and at the end.
    """

    __slots__ = ("_left", "gen", "it")

    def __init__(self, gen: Any) -> None:
        self.gen = gen
        self._left = itertools.repeat((), _UNBOUNDED)
        step = itertools.starmap(gen.__anext__, self._left)
        # A class per edge: the slot ``__anext__`` must be the C method
        # itself (a method-wrapper is not bound again when looked up).
        cls = type("_EdgeIter", (_EdgeIter,), {"__anext__": step.__next__})
        self.it: Any = cls()

    @property
    def n(self) -> int:
        """Requests the downstream node made (items, plus one at the end)."""
        return _UNBOUNDED - operator.length_hint(self._left)


class _AnyPending:
    """True when any node of a chain has side outputs waiting (for `rebatch`)."""

    __slots__ = ("_rts",)

    def __init__(self, rts: list[NodeRuntime]) -> None:
        self._rts = rts

    def __bool__(self) -> bool:
        return any(rt.pending for rt in self._rts)


class _Box:
    """The batch a composed chain's feed hands out, put in by its driver."""

    __slots__ = ("batch", "ended")

    def __init__(self) -> None:
        self.batch: list[Any] = []
        self.ended = False


async def _feed(box: _Box) -> Any:
    """The items of a composed chain's input, a batch at a time.

    Between batches it signals `NEED_BATCH` to `composed_stage` (which is
    driving the chain), which puts the next batch in ``box``.
    """
    while True:
        await need_batch()
        if box.ended:
            return
        for item in box.batch:
            yield item


async def _collect(gen: Any, buf: list[Any]) -> None:
    """Run the chain's last generator natively, collecting what it yields."""
    append = buf.append
    async for value in gen:
        append(value)
        if len(buf) >= MAX_BATCH:
            await batch_full()


async def composed_stage(
    ex: WorkflowExecutor, nodes: list[NodeRun], upstream: AsyncIterator[list[Any]]
) -> AsyncIterator[list[Any]]:
    """Consecutive user generators composed as ``g3(g2(g1(items)))``.

    Items pass from one generator to the next directly, in one native
    ``async for`` over the last generator (`_collect`), driven here with
    ``send``: a step ends when the chain's feed needs the next input batch
    (then what the chain yielded leaves as one batch), when ``MAX_BATCH``
    results are ready, or when a generator would wait (then what is ready
    leaves first, and the wait goes to the loop). The first node's input and
    the last node's output are counted per batch; the nodes in between at
    every batch that leaves (`_Edge`), so all counts are exact at the end.

    A failure is attributed from the traceback to the innermost node of the
    chain it passed through, and ends the run as that node's failure (see
    `composable`).
    """
    box = _Box()
    feed = _feed(box)
    # Frames are kept (not only their ids) so that an id stays theirs.
    kept = [feed.ag_frame]
    inp: Any = feed
    frames: dict[int, NodeRun] = {}
    edges: list[tuple[NodeRun, _Edge]] = []
    for k, n in enumerate(nodes):
        gen = n.call_target()(inp)
        kept.append(gen.ag_frame)
        frames[id(gen.ag_frame)] = n
        if k + 1 < len(nodes):
            edge = _Edge(gen)
            edges.append((n, edge))
            inp = edge.it
        else:
            inp = gen
    first, last = nodes[0].rt, nodes[-1].rt
    pending = _AnyPending([n.rt for n in nodes])
    buf: list[Any] = []
    driven: Any = _collect(inp, buf)  # a coroutine, driven by send
    started = False  # the collector ran (else it is closed, not unwound)
    fetching = False  # awaiting the upstream's next batch
    try:
        try:
            signal = advance(driven)
            started = True
            while signal is not DONE:
                if signal is BATCH_FULL or signal is NEED_BATCH or buf or pending:
                    for k, (n, edge) in enumerate(edges):
                        n.rt.items_out = nodes[k + 1].rt.items_in = edge.n
                    out = buf.copy()
                    buf.clear()
                    last.items_out += len(out)
                    if out or pending:
                        yield out
                if signal is NEED_BATCH:
                    fetching = True
                    try:
                        batch = await anext(upstream)
                    except StopAsyncIteration:
                        box.ended = True
                    else:
                        first.items_in += len(batch)
                        box.batch = batch
                    fetching = False
                    signal = advance(driven)
                elif signal is BATCH_FULL:
                    signal = advance(driven)
                else:  # a generator waits on a future: let the loop run
                    signal = await Until(driven, signal)
            if buf:
                last.items_out += len(buf)
                yield buf.copy()
        except Exception as exc:
            if fetching:
                raise  # from upstream of the chain: not a node of ours
            culprit = _culprit(exc, frames, id(kept[0]))
            if culprit is None:
                raise
            await ex._failures.on_failure(culprit, exc, _current_item(feed), 1)
            raise  # on_failure raised for stop_workflow; not reached
    finally:
        if started and driven.cr_frame is not None:
            # Closed early while the chain is suspended: unwind all of it,
            # so every generator in it runs its own cleanup.
            await abandon(driven)
        driven.close()
        for k, (n, edge) in enumerate(edges):
            # The request that found the upstream generator finished (or
            # that it failed on) was no item.
            made = edge.n
            if edge.gen.ag_frame is None and made:
                made -= 1
            n.rt.items_out = nodes[k + 1].rt.items_in = made
        # Closing the last generator does not close the ones it reads from:
        # each runs its own cleanup, downstream first.
        if inp.ag_frame is not None and not inp.ag_running:
            await inp.aclose()
        for _, edge in reversed(edges):
            if edge.gen.ag_frame is not None and not edge.gen.ag_running:
                await edge.gen.aclose()
        if feed.ag_frame is not None and not feed.ag_running:
            await feed.aclose()
        close = getattr(upstream, "aclose", None)
        if close is not None:
            await close()
        del kept


def _culprit(
    exc: BaseException, frames: dict[int, NodeRun], feed_frame: int
) -> NodeRun | None:
    """The innermost chain node the exception's traceback passes through.

    None when it came from upstream of the chain (through the feed).
    """
    found = None
    tb = exc.__traceback__
    while tb is not None:
        key = id(tb.tb_frame)
        if key == feed_frame:
            return None
        found = frames.get(key, found)
        tb = tb.tb_next
    return found


def _current_item(feed: Any) -> Any:
    """The item the chain's feed handed out last (its frame's ``item``)."""
    frame = feed.ag_frame
    return None if frame is None else frame.f_locals.get("item")


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
