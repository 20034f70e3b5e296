"""Running one workflow from a command line: signals, progress, event recording."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from typing import TYPE_CHECKING, Any, TextIO

from .cli._display import grouped, is_rich
from .engine import FlowRuntime
from .runtime.events import EventBus, EventRecorder

if TYPE_CHECKING:
    from .cli._restart import RestartPolicy
    from .core.events import NodeStats
    from .runtime.protocol import Executor
    from .runtime.registry import NodeRegistry
    from .runtime.result import RunResult
    from .runtime.validation import Graph

__all__ = ["CliRun", "known_totals", "progress_of"]


class CliRun:
    """One run started from a terminal or a script.

    The first SIGINT/SIGTERM stops the run gracefully (drain), the second
    cancels it. With a ``restart`` policy a run that fails is started again
    (from its last checkpoint when it has a store) after the policy's wait;
    each restart is a `RunRestarted` event on the bus, said on ``stream``
    and counted in ``restarts``. With ``progress`` the per-node
    counts are redrawn on ``stream`` every ``interval`` seconds (rich bars
    with % and ETA where the total is known on a terminal, one plain line per
    interval otherwise).
    """

    def __init__(
        self,
        graph: Graph,
        registry: NodeRegistry,
        *,
        mode: str | None = None,
        fuse: bool = True,
        max_parallel: int = 64,
        drain_timeout: float = 10.0,
        events_path: str | None = None,
        progress: bool = False,
        interval: float = 0.5,
        stream: TextIO | None = None,
        checkpoint: str | None = None,
        fresh: bool = False,
        restart: RestartPolicy | None = None,
    ) -> None:
        self.graph = graph
        self.runtime = FlowRuntime(registry, EventBus())
        self.mode = mode or graph.workflow.mode
        # RunOptions fields; the command line may add some (a batch probe).
        self.options: dict[str, Any] = {
            "mode": self.mode,
            "fuse": fuse,
            "max_parallel": max_parallel,
            "drain_timeout": drain_timeout,
            "checkpoint": checkpoint,
            "fresh": fresh,
        }
        self.events_path = events_path
        self.progress = progress
        self.interval = interval
        self.stream = stream if stream is not None else sys.stderr
        self.stopped_by: str | None = None
        self.restart = restart
        self.restarts = 0  # restarts done (each one a RunRestarted event)
        self.gave_up: str | None = None  # why the policy stopped restarting
        self._executor: Executor | None = None
        self._stopped = asyncio.Event()

    async def run(self) -> RunResult:
        """Run to the end (or until stopped) and return the result."""
        loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        installed = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, self._on_signal, sig)
                installed.append(sig)
            except (NotImplementedError, RuntimeError):  # not the main thread
                pass
        recorder = EventRecorder(self.events_path) if self.events_path else None
        if recorder is not None:
            recorder.attach(self.runtime.bus)
        try:
            while True:
                result = await self._run_once()
                delay = self._restart_delay(result)
                if delay is None:
                    return result
                await self._announce_restart(result, delay)
                # A signal during the wait ends it, and the run with it.
                try:
                    async with asyncio.timeout(delay):
                        await self._stopped.wait()
                except TimeoutError:
                    pass
                if self._stopped.is_set():
                    return result
                self.options["fresh"] = False  # the restart resumes
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)
            if recorder is not None:
                recorder.close()

    async def _run_once(self) -> RunResult:
        executor = self.runtime.executor(self.graph, **self.options)
        self._executor = executor
        async with asyncio.TaskGroup() as tg:
            run = tg.create_task(executor.run())
            if self.progress:
                tg.create_task(self._show_progress(executor, run))
        return run.result()

    def _restart_delay(self, result: RunResult) -> float | None:
        """The wait before restarting a failed run; None: no restart."""
        policy = self.restart
        if policy is None or result.status != "failed" or self.stopped_by:
            return None
        delay = policy.next_delay(time.monotonic())
        if delay is None:
            self.gave_up = (
                f"gave up after {self.restarts} restart(s) ({policy.strategy} policy)"
            )
        return delay

    async def _announce_restart(self, result: RunResult, delay: float) -> None:
        from .cli._display import restart_line
        from .core.events import RunRestarted
        from .runtime.checkpointing import resume_epoch

        self.restarts += 1
        policy = self.restart
        assert policy is not None
        workflow = self.graph.workflow
        store = self.options["checkpoint"]
        if store is None and workflow.checkpoint is not None:
            store = workflow.checkpoint.path
        fields: dict[str, Any] = {
            "attempt": self.restarts,
            "reason": result.error or "the run failed",
            "delay_s": delay,
            "max_attempts": policy.max_restarts,
            "checkpointed": store is not None,
            "from_epoch": None
            if store is None
            else await resume_epoch(store, workflow),
        }
        self.runtime.bus.emit(RunRestarted, result.run_id, **fields)
        print(restart_line(**fields), file=self.stream)

    def _on_signal(self, sig: signal.Signals) -> None:
        if self.stopped_by is None:
            self.stopped_by = sig.name
            print(f"\n{sig.name}: draining (again to abort)", file=self.stream)
        self._stopped.set()
        if self._executor is not None:
            self._executor.stop()

    async def _show_progress(
        self, executor: Executor, run: asyncio.Task[RunResult]
    ) -> None:
        # The first frame comes after one interval: a run that ends sooner
        # (a 1 ms failure, say) never shows a frame of zeros.
        await asyncio.wait({run}, timeout=self.interval)
        if run.done():
            return
        totals = known_totals(self.graph)
        if is_rich(self.stream):
            await self._rich_progress(executor, run, totals)
            return
        start = time.perf_counter()
        while not run.done():
            # Piped: one plain line per interval, no escape codes.
            elapsed = time.perf_counter() - start + self.interval
            parts = []
            for node_id, st in grouped(executor.statistics()):
                done, total = progress_of(node_id, st, totals)
                pct = f" ({100 * done / total:.0f}%)" if total else ""
                parts.append(f"{node_id} in {st.items_in:,} out {st.items_out:,}{pct}")
            print(f"running {elapsed:.1f}s: " + " | ".join(parts), file=self.stream)
            self.stream.flush()
            await asyncio.wait({run}, timeout=self.interval)

    async def _rich_progress(
        self,
        executor: Executor,
        run: asyncio.Task[RunResult],
        totals: dict[str, int],
    ) -> None:
        from rich.progress import (
            BarColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        from .cli._display import console, recent_rate

        # Transient: the last frame is erased before the final table.
        progress = Progress(
            TextColumn("{task.description:<20}"),
            BarColumn(),
            TaskProgressColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[counts]}"),
            TimeElapsedColumn(),
            console=console(self.stream),
            transient=True,
            auto_refresh=False,
        )
        # One task per row: each declared node, then its instances.
        tasks: dict[str, Any] = {}
        with progress:
            while not run.done():
                for node_id, st in grouped(executor.statistics()):
                    task = tasks.get(node_id)
                    if task is None:
                        task = tasks[node_id] = progress.add_task(
                            node_id, total=totals.get(node_id), counts=""
                        )
                    rate = recent_rate(st)
                    shown = "-" if rate is None else f"{rate:,.0f}/s"
                    done, total = progress_of(node_id, st, totals)
                    progress.update(
                        task,
                        total=total,
                        completed=done,
                        counts=(
                            f"in {st.items_in:>10,} out {st.items_out:>10,} {shown}"
                        ),
                    )
                progress.refresh()
                await asyncio.wait({run}, timeout=self.interval)


def progress_of(
    node_id: str, st: NodeStats, totals: dict[str, int]
) -> tuple[int, int | None]:
    """How far a node is, of how much (None: no known end), for % and ETA.

    A node that reports its position in bytes (``file.source``: bytes read
    of the file's size; followed, no total) is measured in bytes; a source
    whose config gives its length (`known_totals`) in items emitted.
    """
    if st.bytes_read is not None:
        return st.bytes_read, st.bytes_total
    total = totals.get(node_id)
    return (st.items_out, total) if total is not None else (0, None)


def known_totals(graph: Graph) -> dict[str, int]:
    """Items each source will emit, where the config says (for % and ETA).

    ``source.range`` knows its length. File sources report their position
    and size in bytes as they read (`NodeStats.bytes_read`, `progress_of`).
    """
    totals: dict[str, int] = {}
    for node_id, gnode in graph.nodes.items():
        if gnode.decl.type == "source.range":
            cfg = gnode.config
            totals[node_id] = len(range(cfg.start, cfg.stop, cfg.step))
    return totals
