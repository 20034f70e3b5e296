"""Direct calls: the DAG scheduler for one-shot nodes (no tasks, no channels)."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, Any

from ...core.node import OUT_PORT
from .failures import FAILED

if TYPE_CHECKING:
    from .executor import WorkflowExecutor

__all__ = ["run_direct"]


async def run_direct(ex: WorkflowExecutor) -> None:
    """Call one-shot nodes in dependency order, on a small pool of workers.

    A node with several values on its ports is called once per zipped set,
    in order. At most ``max_parallel`` nodes run at once: one per worker.
    A call that never suspends costs a plain await (no task, no loop
    round trip); a call that suspends holds only its own worker, so
    everything a coroutine ties to its task (timeouts, cancel scopes)
    stays in one task from its start to its end.
    """
    direct = [n for n in ex._nodes.values() if n.direct]
    ready = deque(n for n in direct if not n.waiting)
    wake = asyncio.Event()
    remaining = len(direct)

    async def worker() -> None:
        nonlocal remaining
        while remaining:
            if not ready:
                wake.clear()
                await wake.wait()
                continue
            n = ready.popleft()
            ex._node_started(n)
            ports = n.port_values
            if ports is None:
                calls: Any = [()] if not n.gnode.inputs else []
            else:
                n.rt.items_in += sum(len(ports[p]) for p in n.gnode.inputs)
                calls = zip(*(ports[p] for p in n.gnode.inputs), strict=False)
            results: list[Any] = []
            restored = ex._restored.get(n.id)
            if restored is not None:
                # Done before a crash: hand on what it emitted, do not call.
                results = restored.get(OUT_PORT, [])
                for port, items in restored.items():
                    if port != OUT_PORT:
                        for item in items:
                            n.rt.emit(port, item)
            else:
                for args in calls:
                    if ex._budget is not None:
                        ex._budget.check()
                    value = await ex._failures.call(n, args)
                    if value is not FAILED:
                        results.append(value)
                if ex._completions is not None:
                    ex._completions.record(
                        ex._run_key, n.id, {OUT_PORT: results, **n.rt.pending}
                    )
                    await ex._completions.maybe_commit()
            remaining -= 1
            if n.sends or n.collect is not None:
                await ex._deliver(n, OUT_PORT, results)
            if n.rt.pending:
                await ex._flush_side(n)
            for target, port, carries in n.direct_targets:
                if carries:
                    values = target.port_values
                    if values is None:
                        values = target.port_values = {}
                    values.setdefault(port, []).extend(results)
                target.waiting -= 1
                if not target.waiting:
                    ready.append(target)
            for sends in n.sends.values():
                for s in sends:
                    s.close()
            ex._node_completed(n)
            if ready or not remaining:
                wake.set()

    workers = max(1, min(ex.options.max_parallel, len(direct)))
    async with asyncio.TaskGroup() as pool:
        for _ in range(workers):
            pool.create_task(worker())
