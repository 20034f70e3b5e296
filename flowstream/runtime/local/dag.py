"""DAG runs over a plan's flat schedule: a topological loop of plain calls.

For a graph whose every node is a one-shot call (`runtime.plan.DagSchedule`),
a run is a loop over node indices: gather each node's arguments from its
producers' results, call it, hand its results on. Nothing is made per node
unless the node needs it: a plain function node (no ``ctx``, not a class)
gets no `NodeRuntime`, no `NodeRun` and no instance; counters live in flat
lists; a node's `NodeRun` is made on first need (a failure to handle, a
``ctx`` to give it).

A call that completes without suspending costs a plain call (a coroutine is
driven by ``send(None)``). A call that suspends keeps its worker, the task
that started it (so the timeouts and cancel scopes it enters stay in one
task), and one more worker task is started to go on with the nodes that are
ready, up to ``max_parallel`` workers: tasks exist only where calls really
wait.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from ...core.events import NodeCompleted, NodeStarted, NodeStats
from ...core.node import OUT_PORT
from ..rates import MIN_SPAN_S, average
from ..stepping import Resume
from .failures import FAILED

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..plan import DagSchedule
    from .executor import WorkflowExecutor
    from .fusion import NodeRun

__all__ = ["ScheduleRun"]


class ScheduleRun:
    """One run of a `DagSchedule` for an executor (see the module docstring)."""

    def __init__(self, ex: WorkflowExecutor, schedule: DagSchedule) -> None:
        self.ex = ex
        self.schedule = schedule
        size = len(schedule.ids)
        self.results: list[list[Any] | None] = [None] * size
        # The value of each node that gave exactly one (most do), and which
        # did not (and so which consumers must gather lists).
        self.one: list[Any] = [None] * size
        self.slow_out = [False] * size
        self.slow = [False] * size
        self.general = [False] * size  # took the long way (see stats)
        self.items_in = [0] * size
        self.started = [0.0] * size
        self.ended = [0.0] * size
        self.waiting = list(schedule.indegree)
        self.ready = deque(schedule.roots)
        self.left = size
        self.workers = 0
        self.wake = asyncio.Event()
        self.group: asyncio.TaskGroup | None = None

    async def run(self) -> None:
        """Call every node once its inputs are ready; return when all are done."""
        if not self.left:
            return
        async with asyncio.TaskGroup() as group:
            self.group = group
            self.workers = 1
            await self._worker()
        self.group = None

    def _node_run(self, i: int) -> NodeRun:
        return self.ex._node_run(self.schedule.ids[i])

    async def _worker(self) -> None:
        sched = self.schedule
        ports, calls, results = sched.ports, sched.calls, self.results
        singles, targets, collected = sched.singles, sched.targets, sched.collected
        one, slow, waiting = self.one, self.slow, self.waiting
        ready = self.ready
        started, ended = self.started, self.ended
        clock = time.perf_counter
        get_one = one.__getitem__
        active = self.ex.bus.active
        budget = self.ex._budget
        while self.left:
            if not ready:
                self.wake.clear()
                await self.wake.wait()
                continue
            if budget is not None:
                budget.check()
            i = ready.popleft()
            started[i] = clock()
            if active:
                self._publish_started(i)
            fn, is_async = calls[i]
            srcs = singles[i]
            if fn is not None and srcs is not None and not slow[i]:
                # The common case: every input port has one producer, which
                # gave one value. One call, no lists.
                value = await self._call(i, fn, is_async, tuple(map(get_one, srcs)))
                if value is FAILED:
                    results[i] = out = []
                    self._not_one(i)
                else:
                    one[i] = value
                    out = [value]
            else:
                results[i] = out = await self._general(i, fn, is_async, ports[i])
            self.left -= 1
            if collected[i]:
                self._collect(i, out)
            if fn is None:
                n = self.ex._nodes[sched.ids[i]]
                if n.rt.pending:
                    self._flush_side(i, n)
            for t in targets[i]:
                w = waiting[t] - 1
                waiting[t] = w
                if not w:
                    ready.append(t)
            ended[i] = clock()
            if active:
                self._publish_completed(i)
            if self.workers > 1 and (ready or not self.left):
                self.wake.set()

    async def _general(
        self,
        i: int,
        fn: Any,
        is_async: bool,
        ports: tuple[tuple[int, ...], ...],
    ) -> list[Any]:
        """Any number of values per port: one call per zipped set, in order."""
        lists = [self._port_values(p) for p in ports]
        argsets: Any
        if not lists:
            argsets = ((),)
        else:
            self.items_in[i] = sum(len(v) for v in lists)
            argsets = zip(*lists, strict=False)
        out: list[Any] = []
        for args in argsets:
            if fn is None:
                value = await self._call_node(i, args)
            else:
                value = await self._call(i, fn, is_async, args)
            if value is not FAILED:
                out.append(value)
        if len(out) == 1:
            self.one[i] = out[0]
        else:
            self._not_one(i)
        self.general[i] = True
        return out

    def _port_values(self, producers: tuple[int, ...]) -> list[Any]:
        """A port's values: its producers' results, in connection order."""
        out: list[Any] = []
        for p in producers:
            if self.slow_out[p]:
                out.extend(self.results[p] or ())
            else:
                out.append(self.one[p])
        return out

    def _not_one(self, i: int) -> None:
        """Node ``i`` gave other than one value: its consumers take the long way."""
        self.slow_out[i] = True
        for t in self.schedule.targets[i]:
            self.slow[t] = True

    async def _call(
        self, i: int, fn: Callable[..., Any], is_async: bool, args: tuple[Any, ...]
    ) -> Any:
        """Call node ``i``'s plain function; a coroutine waits only if it must.

        Returns its value, or `FAILED` when its policies gave the item up.
        """
        try:
            value = fn(*args)
            if is_async:
                try:
                    signal = value.send(None)
                except StopIteration as stop:
                    return stop.value
                self._more_workers()
                return await Resume(value, signal)
        except Exception as exc:
            return await self._after_failure(i, args, exc)
        return value

    def _more_workers(self) -> None:
        """A call is about to wait: let another worker go on meanwhile."""
        if (
            self.ready
            and self.group is not None
            and self.workers < self.ex.options.max_parallel
        ):
            self.workers += 1
            self.group.create_task(self._worker())

    async def _call_node(self, i: int, args: tuple[Any, ...]) -> Any:
        """A node that needs its `NodeRun` (a class, a ``ctx``) for the call."""
        n = self._node_run(i)
        self._more_workers()  # its call may wait; we cannot know beforehand
        return await self.ex._failures.call(n, args)

    async def _after_failure(
        self, i: int, args: tuple[Any, ...], exc: Exception
    ) -> Any:
        """A plain call raised: apply the node's policies from attempt 1 on."""
        n = self._node_run(i)
        return await self.ex._failures.call(n, args, failed=exc)

    def _collect(self, i: int, out: list[Any]) -> None:
        """Keep what the node emitted on its ports with no connection."""
        ports = self.schedule.collected[i]
        if ports == _ONLY_OUT:  # a terminal node, the usual case
            self.ex._outputs[self.schedule.ids[i]] = {OUT_PORT: out}
            return
        kept = self.ex._outputs.setdefault(self.schedule.ids[i], {})
        for port in ports:
            kept.setdefault(port, [])
        if OUT_PORT in kept:
            kept[OUT_PORT].extend(out)

    def _flush_side(self, i: int, n: NodeRun) -> None:
        """Side outputs (``ctx.emit``, dead letters) of a node with a ``ctx``.

        Only ports with no connection keep them: a direct call's consumers
        take only its ``out``.
        """
        pending, n.rt.pending = n.rt.pending, {}
        kept = self.ex._outputs.get(self.schedule.ids[i])
        for port, items in pending.items():
            n.rt.items_out += len(items)
            if kept is not None and port in kept:
                kept[port].extend(items)

    # --- counters and events ----------------------------------------------------

    def stats(self, i: int) -> NodeStats:
        """Node ``i``'s counters now."""
        start, end = self.started[i], self.ended[i]
        if not end:
            return NodeStats(duration_s=time.perf_counter() - start if start else 0.0)
        n = self.ex._nodes.get(self.schedule.ids[i])
        if self.general[i]:
            items_in = self.items_in[i]
        else:
            items_in = len(self.schedule.ports[i])
        out = self.results[i]
        items_out = len(out or ()) if self.slow_out[i] else 1
        if n is None:
            return _ended(items_in, items_out, end - start)
        items_out += n.rt.items_out
        return NodeStats(
            items_in=items_in,
            items_out=items_out,
            errors=n.rt.errors,
            dead_letters=n.rt.dead_letter_count,
            duration_s=end - start,
            rate_in=average(items_in, end - start),
            rate_out=average(items_out, end - start),
        )

    def all_stats(self) -> dict[str, NodeStats]:
        """Every node's counters, by id."""
        stats = {}
        nodes = self.ex._nodes
        ports, ended, started = self.schedule.ports, self.ended, self.started
        general, slow_out = self.general, self.slow_out
        for i, gid in enumerate(self.schedule.ids):
            end = ended[i]
            if end and not (general[i] or slow_out[i] or gid in nodes):
                stats[gid] = _ended(len(ports[i]), 1, end - started[i])
            else:
                stats[gid] = self.stats(i)
        return stats

    def _publish_started(self, i: int) -> None:
        ex = self.ex
        ex.bus.emit(
            NodeStarted,
            ex.run_id,
            node_id=self.schedule.ids[i],
            node_type=ex.graph.nodes[self.schedule.ids[i]].spec.type_id,
        )

    def _publish_completed(self, i: int) -> None:
        ex = self.ex
        ex.bus.emit(
            NodeCompleted,
            ex.run_id,
            node_id=self.schedule.ids[i],
            node_type=ex.graph.nodes[self.schedule.ids[i]].spec.type_id,
            stats=self.stats(i),
        )


_ONLY_OUT = (OUT_PORT,)


def _ended(items_in: int, items_out: int, duration_s: float) -> NodeStats:
    # A finished one-shot node: its rates are averages over its run, and a
    # call shorter than a second (nearly all) has none to compute.
    if duration_s < MIN_SPAN_S:
        return NodeStats(items_in=items_in, items_out=items_out, duration_s=duration_s)
    return NodeStats(
        items_in=items_in,
        items_out=items_out,
        duration_s=duration_s,
        rate_in=average(items_in, duration_s),
        rate_out=average(items_out, duration_s),
    )
