"""Running one workflow from a command line: signals, progress, event recording."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from typing import TYPE_CHECKING, Any, TextIO

from .runtime.events import EventBus, EventRecorder
from .runtime.flow import FlowRuntime

if TYPE_CHECKING:
    from .runtime.protocol import Executor
    from .runtime.registry import NodeRegistry
    from .runtime.result import RunResult
    from .runtime.validation import Graph

__all__ = ["CliRun"]


class CliRun:
    """One run started from a terminal or a script.

    The first SIGINT/SIGTERM stops the run gracefully (drain), the second
    cancels it. With ``progress`` the per-node counts and rates are redrawn on
    ``stream`` every ``interval`` seconds.
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

    async def run(self) -> RunResult:
        """Run to the end (or until stopped) and return the result."""
        executor = self.runtime.executor(self.graph, **self.options)
        loop = asyncio.get_running_loop()
        installed = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, self._on_signal, executor, sig)
                installed.append(sig)
            except (NotImplementedError, RuntimeError):  # not the main thread
                pass
        recorder = EventRecorder(self.events_path) if self.events_path else None
        if recorder is not None:
            recorder.attach(self.runtime.bus)
        try:
            async with asyncio.TaskGroup() as tg:
                run = tg.create_task(executor.run())
                if self.progress:
                    tg.create_task(self._show_progress(executor, run))
            return run.result()
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)
            if recorder is not None:
                recorder.close()

    def _on_signal(self, executor: Executor, sig: signal.Signals) -> None:
        if self.stopped_by is None:
            self.stopped_by = sig.name
            print(f"\n{sig.name}: draining (again to abort)", file=self.stream)
        executor.stop()

    async def _show_progress(
        self, executor: Executor, run: asyncio.Task[RunResult]
    ) -> None:
        start = time.perf_counter()
        last_lines = 0
        while not run.done():
            stats = executor.statistics()
            elapsed = time.perf_counter() - start
            lines = [f"running {elapsed:6.1f}s"]
            for node_id, st in stats.items():
                rate = st.items_out / elapsed if elapsed > 0 else 0.0
                lines.append(
                    f"  {node_id:<20} in {st.items_in:>10,} out {st.items_out:>10,} "
                    f"{rate:>12,.0f}/s"
                )
            # Move up over the previous frame and redraw it in place.
            up = f"\x1b[{last_lines}F" if last_lines else ""
            self.stream.write(up + "\n".join(f"{ln}\x1b[K" for ln in lines) + "\n")
            self.stream.flush()
            last_lines = len(lines)
            await asyncio.wait({run}, timeout=self.interval)
