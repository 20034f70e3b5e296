"""Consecutive user generators of a segment, composed as ``g3(g2(g1(items)))``.

A composed chain hands items from one user ``@node`` generator to the next
with no batch between them: one native ``async for`` over the last generator
(`_collect`), driven with ``send`` by `composed_stage`, which fetches the
chain's input batches and hands on what it made.

Every node's counts stay exact. The chain's input and output are counted per
batch. Between two generators the count is *derived* where a neighbour is a
plain per-item map (`runtime.shapes`: it yields one item per item it takes,
so what it made is what it took, less one if it failed on an item), and
counted on the edge (a C call per item, `_Edge`) only where neither is.
"""

from __future__ import annotations

import itertools
import operator
import sys
from typing import TYPE_CHECKING, Any

from ...core.workflow import StopWorkflow
from ..shapes import item_shape
from ..stepping import (
    BATCH_FULL,
    DONE,
    NEED_BATCH,
    Until,
    abandon,
    advance,
    batch_full,
    need_batch,
)
from .stages import MAX_BATCH

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from ..context import NodeRuntime
    from .executor import WorkflowExecutor
    from .fusion import NodeRun

__all__ = ["composable", "composed_stage"]


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
    ``__next__`` of ``map(gen.asend, repeat(None, N))`` (``asend(None)`` is
    ``__anext__()``): no Python frame of ours per item. ``n`` (the requests
    passed on) is read off how much of the ``repeat`` is left.
    """

    __slots__ = ("_left", "gen", "it")

    def __init__(self, gen: Any) -> None:
        self.gen = gen
        self._left = itertools.repeat(None, _UNBOUNDED)
        step = map(gen.asend, self._left)
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

    __slots__ = ("ended", "fetched", "items")

    def __init__(self) -> None:
        self.items: Any = iter(())
        self.fetched = 0  # items of every batch put in so far
        self.ended = False

    def put(self, batch: list[Any]) -> None:
        self.items = iter(batch)
        self.fetched += len(batch)

    @property
    def handed(self) -> int:
        """Items the feed handed to the chain's first node so far."""
        return self.fetched - operator.length_hint(self.items)


async def _feed(box: _Box) -> Any:
    """The items of a composed chain's input, a batch at a time.

    Between batches it signals `NEED_BATCH` to `composed_stage` (which is
    driving the chain), which puts the next batch in ``box``.
    """
    while True:
        await need_batch()
        if box.ended:
            return
        for item in box.items:
            yield item


async def _collect(gen: Any, buf: list[Any]) -> None:
    """Run the chain's last generator natively, collecting what it yields."""
    append = buf.append
    async for value in gen:
        append(value)
        if len(buf) >= MAX_BATCH:
            await batch_full()


async def _collect_all(gen: Any, buf: list[Any]) -> None:
    """`_collect` for a chain that makes no more items than it takes.

    Its output between two input batches is at most one input batch: it
    needs no bound of its own (`composed_stage` splits it into batches of
    at most ``MAX_BATCH``).
    """
    append = buf.append
    async for value in gen:
        append(value)


def _plan(maps: list[bool]) -> list[str]:
    """How each edge of a chain is known: ``bwd``, ``fwd`` or ``count``.

    Edge ``k`` joins node ``k`` to node ``k + 1``. It is derived backwards
    when every node after it is a map (what node ``k + 1`` took is what it
    yielded, known at the chain's end), forwards when node ``k`` is a map
    (it yielded what it took), else counted on the edge.
    """
    last = len(maps) - 1
    plan = [""] * last
    k = last - 1
    while k >= 0 and maps[k + 1]:
        plan[k] = "bwd"
        k -= 1
    for k in range(last):
        if not plan[k]:
            plan[k] = "fwd" if maps[k] else "count"
    return plan


class _Counts:
    """Sets the counts between a chain's nodes, counted or derived (`_plan`).

    A map that failed on an item (it ended while its upstream is still
    suspended at a yield) took one more than it yielded; an edge's counter
    includes the request that found its upstream ended, which was no item.
    """

    __slots__ = ("_box", "_edges", "_gens", "_nodes", "_plan")

    def __init__(
        self,
        nodes: list[NodeRun],
        plan: list[str],
        edges: dict[int, _Edge],
        gens: list[Any],
        box: _Box,
    ) -> None:
        self._nodes = nodes
        self._plan = plan
        self._edges = edges
        self._gens = gens  # the feed, then each node's generator
        self._box = box

    def _failed_on_item(self, k: int) -> int:
        gens = self._gens
        return int(gens[k + 1].ag_frame is None and gens[k].ag_frame is not None)

    def update(self, yielded: int) -> None:
        """Set every inner count, given what the last node has yielded."""
        plan, nodes = self._plan, self._nodes
        last = len(plan)
        made = [0] * last
        out = yielded
        for k in range(last - 1, -1, -1):
            if plan[k] != "bwd":
                break
            out = made[k] = out + self._failed_on_item(k + 1)
        took = self._box.handed
        for k in range(last):
            step = plan[k]
            if step == "count":
                n = self._edges[k].n
                if n and self._gens[k + 1].ag_frame is None:
                    n -= 1
                made[k] = n
            elif step == "fwd":
                made[k] = took - self._failed_on_item(k)
            took = made[k]
            nodes[k].rt.items_out = nodes[k + 1].rt.items_in = took


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
    every batch that leaves (`_Counts`), so all counts are exact at the end.

    A failure is attributed from the traceback to the innermost node of the
    chain it passed through, and ends the run as that node's failure (see
    `composable`).
    """
    shapes = [item_shape(n.instance.execute) for n in nodes]
    box = _Box()
    feed = _feed(box)
    # Frames are kept (not only their ids) so that an id stays theirs.
    kept = [feed.ag_frame]
    inp: Any = feed
    frames: dict[int, NodeRun] = {}
    gens: list[Any] = []
    plan = _plan([s == "map" for s in shapes])
    edges: dict[int, _Edge] = {}
    for k, n in enumerate(nodes):
        gen = n.call_target()(inp)
        gens.append(gen)
        kept.append(gen.ag_frame)
        frames[id(gen.ag_frame)] = n
        inp = gen
        if k < len(plan) and plan[k] == "count":
            edges[k] = _Edge(gen)
            inp = edges[k].it
    counts = _Counts(nodes, plan, edges, [feed, *gens], box)
    first, last = nodes[0].rt, nodes[-1].rt
    pending = _AnyPending([n.rt for n in nodes])
    buf: list[Any] = []
    made = 0  # what the last node yielded and was taken out of buf
    # A chain of maps and filters makes no more items than it takes.
    bounded = None in shapes
    driven: Any = (_collect if bounded else _collect_all)(inp, buf)
    started = False  # the collector ran (else it is closed, not unwound)
    fetching = False  # awaiting the upstream's next batch
    try:
        try:
            signal = advance(driven)
            started = True
            while signal is not DONE:
                if signal is BATCH_FULL or signal is NEED_BATCH or buf or pending:
                    out = buf.copy()
                    buf.clear()
                    made += len(out)
                    counts.update(made)
                    if out or pending:
                        for part in _parts(out):
                            last.items_out += len(part)
                            yield part
                if signal is NEED_BATCH:
                    fetching = True
                    try:
                        batch = await anext(upstream)
                    except StopAsyncIteration:
                        box.ended = True
                    else:
                        first.items_in += len(batch)
                        box.put(batch)
                    fetching = False
                    signal = advance(driven)
                elif signal is BATCH_FULL:
                    signal = advance(driven)
                else:  # a generator waits on a future: let the loop run
                    signal = await Until(driven, signal)
            if buf:
                out = buf.copy()
                buf.clear()
                made += len(out)
                for part in _parts(out):
                    last.items_out += len(part)
                    yield part
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
        # What the last node yielded but never handed on (it failed) is
        # still what it yielded: what it took, if it is a map.
        counts.update(made + len(buf))
        # Closing the last generator does not close the ones it reads from:
        # each runs its own cleanup, downstream first.
        for gen in reversed(gens):
            if gen.ag_frame is not None and not gen.ag_running:
                await gen.aclose()
        if feed.ag_frame is not None and not feed.ag_running:
            await feed.aclose()
        close = getattr(upstream, "aclose", None)
        if close is not None:
            await close()
        del kept


def _parts(out: list[Any]) -> list[list[Any]]:
    """``out`` in batches of at most ``MAX_BATCH`` (itself if it is one)."""
    if len(out) <= MAX_BATCH:
        return [out]
    return [out[i : i + MAX_BATCH] for i in range(0, len(out), MAX_BATCH)]


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
