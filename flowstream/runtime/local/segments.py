"""Driving a segment: its head's batches through its fused chain, onwards.

A segment (`fusion.Segment`) is one task: its head node's batches — pulled
from a source, read off its input channels, or computed by calls — pass
through the fused chain (batch kernels in one loop, user generators composed
item by item, `stages`) and leave by the tail's channels (`WorkflowExecutor
._deliver`). A source's loop is also where it takes its checkpoint barriers
(`runtime.checkpointing.barriers`) and where a stop ends it between batches.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter, deque
from time import perf_counter
from typing import TYPE_CHECKING, Any

from ...core.node import OUT_PORT
from ...errors import EndOfStream, WouldBlock
from ..channel import Control
from ..checkpointing.coordinator import Barrier
from ..feeds import AligningFeed, BatchFeed, ChannelFeed
from ..lifting import lifted_kernel
from ..stepping import rebatch
from . import epochs, stages
from .composed import composable, composed_stage
from .failures import Abort

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from ..channel import ReceiveChannel
    from ..checkpointing.barriers import SourceBarriers
    from ..context import NodeRuntime
    from .executor import WorkflowExecutor
    from .fusion import NodeRun, Segment

__all__ = ["run_segment"]

YIELD_EVERY = 0.01
"""A segment that never has to wait gives the loop a turn at least this often (s)."""

MAX_TAKES = 64
"""Take stamps a probed timed head keeps: past them its probe uses its latest take."""


async def run_segment(ex: WorkflowExecutor, seg: Segment) -> None:
    """Run one segment to its end: the body of its task."""
    for n in seg.nodes:
        ex._node_started(n)
    head = seg.head
    kernels: list[tuple[NodeRun, Callable[[list[Any]], list[Any]]]] = []
    head_kernel = None
    if not seg.is_source and len(head.gnode.inputs) == 1:
        head_kernel = _kernel(ex, head)
    stream: AsyncIterator[list[Any]]
    if head_kernel is not None:
        # A kernel node that heads its segment (unfused, a fan-out branch,
        # after a fan-in) still runs per batch, straight off its channel.
        hook = epochs.barrier_hook(ex, seg) if ex._coord is not None else None
        stream = _port_batches(ex, head, head.gnode.inputs[0], hook)
        kernels.append((head, head_kernel))
    elif seg.is_source:
        stream = stages.count_out(ex, head, _source_batches(ex, seg))
    else:
        stream = stages.count_out(ex, head, _head_batches(ex, head, seg))
    counted = head_kernel is not None  # _port_batches counted the head's input
    composed: list[NodeRun] = []
    for n in seg.chain:
        kernel = _kernel(ex, n)
        if kernel is None and composable(ex, n):
            if kernels:
                stream = stages.kernel_stage(ex, stream, kernels, counted)
                kernels, counted = [], False
            composed.append(n)  # user generators compose item by item
            continue
        if composed:
            stream = composed_stage(ex, composed, stream)
            composed = []
        if kernel is not None:
            kernels.append((n, kernel))
            continue
        if kernels:
            stream = stages.kernel_stage(ex, stream, kernels, counted)
            kernels, counted = [], False
        stream = stages.count_out(ex, n, stages.generator_stage(ex, n, stream))
    if composed:
        stream = composed_stage(ex, composed, stream)
    if kernels:
        stream = stages.kernel_stage(ex, stream, kernels, counted)
    tail = seg.tail
    nodes = seg.nodes
    probe = ex.options.batch_probe
    ids = tuple(n.id for n in nodes)
    every = countdown = max(1, ex.options.probe_every)
    head_rt = head.rt
    if probe is not None and head.spec.timed:
        # It holds items across takes (time.delay in a burst): measure each
        # batch from the take of its first item, not from the latest take.
        head_rt.takes, head_rt.max_takes = deque(), MAX_TAKES
    emitted = head_rt.items_out  # the head's items delivered so far
    budget = ex._budget
    rested = perf_counter()
    try:
        async with contextlib.aclosing(stream):  # type: ignore[type-var]
            async for batch in stream:
                seg.delivering = True
                await ex._deliver(tail, OUT_PORT, batch, counted=True)
                for n in nodes:
                    if n.rt.pending:
                        await ex._flush_side(n)
                seg.delivering = False
                if perf_counter() - rested > YIELD_EVERY:
                    # Batches waiting in its input and room downstream: the
                    # segment would run on without a wait, holding the loop
                    # from every other task (on Ray, from the sends that feed
                    # the other processes; stops, statistics, timers).
                    await asyncio.sleep(0)
                    rested = perf_counter()
                if budget is not None:
                    budget.check()
                if probe is not None:
                    taken = head_rt.take_of(emitted)
                    emitted = head_rt.items_out
                    countdown -= 1
                    if not countdown:
                        countdown = every
                        probe(ids, len(batch), taken, perf_counter())
    except asyncio.CancelledError:
        _stray_cancel(seg)
        raise
    ex._segments_left -= 1
    if not ex._segments_left:
        ex._segments_done.set()
    for n in nodes:
        await ex._flush_side(n)
        for sends in n.sends.values():
            for s in sends:
                s.close()
        ex._node_completed(n)


def _stray_cancel(seg: Segment) -> None:
    """Name a cancellation nobody asked for instead of ending quietly.

    A stop or a failure cancels the task and keeps it cancelling. A deadline
    of the node's own code (``asyncio.timeout`` around an await) cancels the
    task too, and its own exit takes the request back — but a generator step
    is held suspended while the items before it are delivered
    (`stepping.rebatch`), so a deadline falling due then cancels the delivery
    instead. The task group would drop the cancelled segment silently and the
    run would hang; it fails, naming the nodes, instead.
    """
    task = asyncio.current_task()
    if task is None or task.cancelling():
        return
    names = ", ".join(repr(n.id) for n in seg.nodes)
    msg = (
        f"node {seg.head.id!r} was cancelled while nothing stopped the run: a "
        f"deadline (asyncio.timeout) in the code of {names} fell due while its "
        "earlier output was being delivered. Wait on inputs with "
        "flowstream's next_item(inp, timeout); for another call, run it as a "
        "task and wait with asyncio.wait(..., timeout=...), which cancels "
        "nothing but the call"
    )
    raise Abort(msg, seg.head.id) from None


def _kernel(
    ex: WorkflowExecutor, n: NodeRun
) -> Callable[[list[Any]], list[Any]] | None:
    factory = n.spec.kernel
    if factory is None:
        # A user generator that is a plain map or filter runs as a kernel.
        factory = lifted_kernel(n.spec)
    if factory is None or n.spec.wants_ctx:
        return None
    try:
        return factory(n.gnode.config)
    except Exception as exc:  # a kernel that cannot be built (a wasm module)
        text = f"node {n.id!r} ({n.spec.type_id}) failed to start: {exc}"
        raise Abort(text, n.id) from exc


# --- heads ---------------------------------------------------------------------


async def _source_batches(
    ex: WorkflowExecutor, seg: Segment
) -> AsyncIterator[list[Any]]:
    """A source's batches, until it ends or a stop ends it between batches."""
    batches = _head_batches(ex, seg.head, seg)
    stops_itself = seg.head.spec.stops_itself
    loop = asyncio.get_running_loop()
    rested = loop.time()
    async with contextlib.aclosing(batches):  # type: ignore[type-var]
        while stops_itself or not ex._stopping:
            if loop.time() - rested > YIELD_EVERY:
                # A source that never waits (a range, a file read whole)
                # would starve the loop: stops, signals, checkpoints and
                # servers get a turn at least every YIELD_EVERY seconds.
                await asyncio.sleep(0)
                rested = loop.time()
            barriers = seg.barriers
            if barriers is not None and barriers.pending:
                await _source_gate(ex, seg, barriers)
            if ex._stopping and not stops_itself:
                # Stopped during the awaits above, while no pull was open
                # for `stop` to interrupt: the pull would wait on an idle
                # input until the drain timed out.
                return
            try:
                async with asyncio.timeout(None) as seg.pulling:
                    batch: list[Any] | Barrier = await anext(batches)
            except StopAsyncIteration:
                due = barriers.take_due() if barriers is not None else None
                if due is not None:  # mark the epoch before the end
                    await epochs.segment_barrier(ex, seg, due)
                if ex._coord is not None:
                    # No new epochs once a source ended; the final
                    # checkpoint after the drain covers the rest.
                    ex._coord.active = False
                return
            except TimeoutError:
                if ex._stopping:
                    return  # end-of-stream now lets everything downstream drain
                raise
            finally:
                seg.pulling = None
            if isinstance(batch, Barrier):
                # A barrier that came in-band from another process (the
                # receiving end of a Ray edge yields it, in its place among
                # the batches): due now, marked at the loop's top.
                if barriers is not None:
                    barriers.request(batch.epoch)
                continue
            seg.head.rt.taken_at = perf_counter()
            if barriers is not None and barriers.gate is not None:
                # Marked while it was pulled: this batch came after the
                # snapshot, so it waits for the commit. (A barrier that
                # is only due goes after this batch, at the loop's top:
                # the source's state already counts the batch.)
                await _source_gate(ex, seg, barriers)
            yield batch


async def _source_gate(
    ex: WorkflowExecutor, seg: Segment, barriers: SourceBarriers
) -> None:
    """Between batches: mark a due epoch, and hold on while it commits."""
    epoch = barriers.take_due()
    if epoch is not None:
        await epochs.segment_barrier(ex, seg, epoch)
    if ex._coord is not None:
        await barriers.hold(ex._coord)


async def _head_batches(
    ex: WorkflowExecutor, n: NodeRun, seg: Segment
) -> AsyncIterator[list[Any]]:
    spec = n.spec
    if not n.gnode.inputs:
        if spec.shape == "call":
            yield [await ex._failures.call(n, ())]
            return
        gen = n.call_target()()
        items = gen if spec.batched else rebatch(gen, stages.MAX_BATCH, n.rt)
        async with contextlib.aclosing(items):
            try:
                async for batch in items:
                    yield batch
            except Abort:
                raise
            except Exception as exc:
                # The source's own code failed (not on a record): name it
                # here, or the node it is fused with would be blamed.
                ex._failures.source_failed(n, exc)
        return
    on_control = epochs.barrier_hook(ex, seg) if ex._coord is not None else None
    if spec.shape == "call" and len(n.gnode.inputs) == 1:
        # One input: calls a batch at a time (or N at once), no feeds.
        (port,) = n.gnode.inputs
        calls = (
            stages.concurrent_call_stage(ex, n, n.inputs[port], on_control)
            if n.gnode.decl.concurrency > 1
            else stages.batched_call_stage(
                ex, n, _port_batches(ex, n, port, on_control)
            )
        )
        async with contextlib.aclosing(calls):  # type: ignore[type-var]
            async for batch in calls:
                yield batch
        return
    feeds: list[Any]
    zipped = spec.shape == "call" and len(n.gnode.inputs) > 1
    if on_control is not None and (spec.aligned or zipped):
        # Barriers are aligned where the node merges its inputs.
        producers = Counter(c.to_port for c in n.gnode.inbound)

        async def aligned(epoch: int) -> None:
            await epochs.segment_barrier(ex, seg, epoch)

        feeds = [
            AligningFeed(
                _port_batches(ex, n, p, controls=True),
                producers[p],
                on_control,
                aligned,
            )
            for p in n.gnode.inputs
        ]
    else:
        feeds = [
            BatchFeed(_port_batches(ex, n, p, on_control))
            if spec.batched
            else ChannelFeed(n.inputs[p], n.rt, on_control)
            for p in n.gnode.inputs
        ]
    if zipped and on_control is not None:
        stage = stages.zipped_call_stage
    elif spec.shape == "call":
        stage = stages.call_stage
    else:
        stage = stages.run_generator
    staged = stage(ex, n, feeds)
    async with contextlib.aclosing(staged):  # type: ignore[type-var]
        async for batch in staged:
            yield batch


async def _port_batches(
    ex: WorkflowExecutor,
    n: NodeRun,
    port: str,
    on_control: Callable[[Control], Awaitable[None]] | None = None,
    *,
    controls: bool = False,
) -> AsyncIterator[Any]:
    """The port's batches; its control messages too, with ``controls``.

    For a node that coalesces (`NodeSpec.coalesce`, as the node now sets
    it: `NodeRuntime.coalesce`), the batches waiting behind one are taken
    along in one batch, up to the limit; a control message among them
    waits until that batch is handed out.
    """
    recv = n.inputs[port]
    rt = n.rt
    with recv:  # a consumer that stops early releases its producers
        async for msg in recv:
            if type(msg) is list:
                rt.took(len(msg))
                limit = rt.coalesce
                if len(msg) >= limit:
                    yield msg
                    continue
                msg, after = _coalesced(recv, rt, msg, limit)
                yield msg
                if after is None:
                    continue
                if isinstance(after, Exception):
                    raise after
                msg = after  # the control message behind the batches taken
            if isinstance(msg, Control):
                if controls:
                    yield msg
                elif on_control is not None:
                    await on_control(msg)
            else:
                msg_type = type(msg).__name__
                text = f"unexpected {msg_type} on a channel"
                raise TypeError(text)


def _coalesced(
    recv: ReceiveChannel[Any], rt: NodeRuntime, first: list[Any], limit: int
) -> tuple[list[Any], Control | Exception | None]:
    """``first`` and the batches waiting behind it, up to ``limit`` items.

    Also what stopped the taking, if it must be handled after the batch: a
    control message, or the error the channel ended with. A new list is
    made (a fan-out hands the same list to several consumers).
    """
    merged: list[Any] | None = None
    size = len(first)
    while size < limit:
        try:
            msg = recv.receive_nowait()
        except (WouldBlock, EndOfStream):
            break
        except Exception as exc:  # the producer's failure, after its batches
            return merged or first, exc
        if isinstance(msg, Control):
            return merged or first, msg
        rt.took(len(msg))
        if merged is None:
            merged = [*first, *msg]
        else:
            merged += msg
        size += len(msg)
    return merged or first, None
