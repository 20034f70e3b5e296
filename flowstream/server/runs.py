"""`RunManager`: runs in the server's own task group, with stop and cancel.

Each run gets its own `EventBus` and a `LiveRun` (`flowstream.server.live_run`)
while it goes on. Listeners attached before it starts keep a bounded record
of its events (`EventHistory`: the first ``history_head`` and the latest
``history_tail``), follow it for the metrics and the UI
(`RunWatch`), and trace it when OpenTelemetry is configured. A sampler task
next to the run reads its counters every ``sample_interval``. The run's
sampled batches (`RunOptions.batch_probe`) feed the batch latency histogram
and, in stream mode with tracing on, ``flowstream.batch`` spans.

Runs are tasks of the task group that `RunManager.running` opens, and the
server's lifespan holds that open: no run outlives the server. When the
server shuts down, every run is stopped (drained, then cancelled after
``drain_timeout``) and recorded before the group exits.

Stream runs with checkpoints (a workflow ``checkpoint``) outlive a server
restart: at shutdown they are stopped but stay marked ``running`` in the
store, and when the server starts again every run still marked active (a
shutdown, or a crash of the previous process) resumes from its last
committed checkpoint under the same run id, its ``restarts`` counted (in the
API, the UI and ``flowstream_run_restarts_total``). A run that cannot resume
(no checkpoints, or not valid on this server any more) ends ``interrupted``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeAlias

import msgspec

from ..core.events import (
    NodeStats,
    RunRestarted,
    WorkflowCompleted,
)
from ..core.workflow import ContinueOnError, Workflow
from ..errors import Problem, WorkflowValidationError
from ..runtime.backends import create_executor
from ..runtime.checkpointing import resume_epoch
from ..runtime.events import EventBus
from ..runtime.netpolicy import enforce
from ..runtime.options import RunOptions
from .live_run import (
    EventHistory,
    LiveRun,
    both_probes,
    publish_recent,
    run_outcome,
)
from .logs import current_run
from .observe import NodeSeries, RecentOutputs, node_statuses
from .policy import check_workflow
from .problems import ApiError
from .schemas import RunDetail, RunSummary, from_iso, iso
from .tracing import RunTracer, tracer_for_runs

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from ..runtime.registry import NodeRegistry
    from ..runtime.result import RunResult
    from ..runtime.validation import Graph
    from .config import ServerConfig
    from .metrics import Metrics
    from .schemas import RunRequest, SeriesPoint
    from .store import Store, Unfinished

    BatchProbe: TypeAlias = Callable[[tuple[str, ...], int, float, float], None]

__all__ = ["RunManager"]

logger = logging.getLogger("flowstream.server")


class RunManager:
    """Starts, tracks, stops and records the server's runs.

    Args:
        config: Limits and timings.
        store: Where run records go.
        registry: Node types.
        metrics: Where runs are counted.
    """

    def __init__(
        self,
        config: ServerConfig,
        store: Store,
        registry: NodeRegistry,
        metrics: Metrics,
    ) -> None:
        self.config = config
        self.store = store
        self.registry = registry
        self.metrics = metrics
        self._net_policy = config.net_policy
        self._live: dict[str, LiveRun] = {}
        self._group: asyncio.TaskGroup | None = None

    @property
    def active(self) -> int:
        """How many runs have not finished."""
        return len(self._live)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[RunManager]:
        """Own the task group runs execute in; stop them all on the way out.

        Runs the previous process left active resume first (or end
        ``interrupted``); at the way out, runs that can resume are stopped
        but left active in the store for the next start.
        """
        unfinished = self.store.take_unfinished()
        async with asyncio.TaskGroup() as group:
            self._group = group
            try:
                for run in unfinished:
                    await self._resume(run)
                yield self
            finally:
                self._group = None
                for live in list(self._live.values()):
                    live.suspended = _resumable(live.workflow, live.summary.mode)
                    self._stop(live)
                # Leaving the group waits for every run: each drains, and the
                # executor's drain deadline cancels what does not.

    async def _resume(self, run: Unfinished) -> None:
        if not _resumable(run.workflow, run.mode):
            self.store.interrupt_run(
                run.run_id,
                "the server stopped before the run ended, and it has no "
                "checkpoints to resume from",
            )
            logger.warning(
                "run %s of %r was interrupted by a server restart",
                run.run_id,
                run.workflow.name,
                extra={"run_id": run.run_id},
            )
            return
        try:
            graph = check_workflow(run.workflow, self.registry, self.config)
        except WorkflowValidationError as exc:
            self.store.interrupt_run(
                run.run_id, f"cannot resume after a server restart: {exc}"
            )
            return
        restarts = self.store.resume_run(run.run_id)
        summary = self.store.get_run(run.run_id)
        if summary is None:  # deleted meanwhile: nothing to resume
            return
        checkpoint = graph.workflow.checkpoint
        assert checkpoint is not None  # _resumable
        epoch = await resume_epoch(checkpoint.path, graph.workflow)
        live = self._launch(
            run.workflow,
            graph,
            run.mode,
            RunSummary(
                run_id=run.run_id,
                workflow=run.workflow.name,
                mode=run.mode,
                status="running",
                started_at=summary.started_at,
                restarts=restarts,
            ),
        )
        # Before the run's task starts: the event comes before its
        # WorkflowStarted, and the run's watch counts it in the metrics.
        live.bus.emit(
            RunRestarted,
            live.run_id,
            attempt=restarts,
            reason="server restart",
            checkpointed=True,
            from_epoch=epoch,
        )
        logger.info(
            "run %s of %r resumed from its checkpoints (restart %d)",
            live.run_id,
            run.workflow.name,
            restarts,
            extra={"run_id": live.run_id, "workflow": run.workflow.name},
        )

    # --- starting --------------------------------------------------------------

    def start(self, workflow: Workflow, request: RunRequest) -> LiveRun:
        """Validate and start a run of a stored workflow.

        Raises:
            WorkflowValidationError: The workflow (with the request's inputs)
                is not valid on this server.
            ApiError: Too many runs (429), or the server is shutting down.
        """
        if self._group is None:
            raise ApiError(503, "the server is shutting down", title="Unavailable")
        if len(self._live) >= self.config.max_runs:
            msg = (
                f"{len(self._live)} runs are active, the most this server allows; "
                "stop one or wait"
            )
            raise ApiError(429, msg, headers={"Retry-After": "1"})
        workflow = _with_inputs(workflow, request.inputs)
        graph = check_workflow(workflow, self.registry, self.config)
        live = self._launch(workflow, graph, request.mode or workflow.mode, None)
        logger.info(
            "run %s of %r started (%s mode)",
            live.run_id,
            workflow.name,
            live.summary.mode,
            extra={"run_id": live.run_id, "workflow": workflow.name},
        )
        return live

    def _launch(
        self,
        workflow: Workflow,
        graph: Graph,
        mode: str,
        resumed: RunSummary | None,
    ) -> LiveRun:
        # A new run (resumed None: recorded now) or one resumed under its id.
        if self._group is None:
            raise ApiError(503, "the server is shutting down", title="Unavailable")
        bus = EventBus()
        tracer = tracer_for_runs()
        run_tracer = RunTracer(tracer, bus) if tracer is not None else None
        probe: BatchProbe = self.metrics.batch_probe(workflow.name)
        if run_tracer is not None and mode == "stream":
            # DAG runs have a span per node execution; a stream's last as
            # long as the run, so its sampled batches get spans instead.
            probe = both_probes(probe, run_tracer.batch_probe)
        recent = RecentOutputs()
        options = RunOptions(
            mode=mode,
            drain_timeout=self.config.drain_timeout,
            batch_probe=probe,
            output_probe=recent.take,
        )
        executor = create_executor(graph, bus, options)
        now = time.time()
        if resumed is None:
            summary = RunSummary(
                run_id=executor.run_id,
                workflow=workflow.name,
                mode=mode,
                status="running",
                started_at=iso(now),
            )
            self.store.insert_run(summary, workflow)
        else:
            summary = resumed
            # The same run goes on: its events carry its id.
            executor.run_id = summary.run_id
        # Listeners attach before the run's task exists: no event is missed.
        history = EventHistory(self.config.history_head, self.config.history_tail)
        bus.add_listener(history.record)
        watch = self.metrics.watch(workflow.name, summary.run_id, bus)
        default = workflow.error_handling
        watch.continues_on_error = {
            node_id
            for node_id, g in graph.nodes.items()
            if isinstance(g.decl.error_handling or default, ContinueOnError)
        }
        live = LiveRun(
            summary=summary,
            graph=graph,
            workflow=workflow,
            executor=executor,
            bus=bus,
            history=history,
            watch=watch,
            series=NodeSeries(self.config.sample_interval),
            recent=recent,
            tracer=run_tracer,
        )
        if resumed is not None:
            live.started = min(now, from_iso(resumed.started_at))
        self._live[summary.run_id] = live
        self._group.create_task(self._drive(live), name=f"run-{summary.run_id}")
        return live

    async def _drive(self, live: LiveRun) -> None:
        token = current_run.set(live.run_id)
        result: RunResult | None = None
        failure: str | None = None
        try:
            if not live.cancel_requested:
                async with asyncio.TaskGroup() as group:
                    group.create_task(self._sample(live))
                    try:
                        # The run's tasks inherit the policy: every socket
                        # they open is checked (`runtime.netpolicy`).
                        with enforce(self._net_policy):
                            result = await live.executor.run()
                    finally:
                        live.done.set()
        except Exception as exc:
            # The executor reports node failures in its result; reaching here
            # is a bug, and it must not take the server's other runs down.
            logger.exception("run %s crashed", live.run_id)
            failure = f"internal error: {type(exc).__name__}: {exc}"
        finally:
            live.done.set()
            current_run.reset(token)
            self._finish(live, result, failure)

    async def _sample(self, live: LiveRun) -> None:
        seen = 0
        published: dict[tuple[str, str], int] = {}
        while not live.done.is_set():
            try:
                live.watch.sample(live.executor)
                watch = live.watch
                live.series.add(
                    node_statuses(live.graph, watch.stats, watch.states, watch.fills)
                )
                if live.recent.version != seen:
                    seen = live.recent.version
                    publish_recent(live, published)
            except Exception:
                # A bug in the readings must not take the run down with it.
                logger.exception(
                    "cannot sample run %s; live counters stop", live.run_id
                )
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.sample_interval):
                    await live.done.wait()

    def _finish(
        self, live: LiveRun, result: RunResult | None, failure: str | None
    ) -> None:
        now = time.time()
        summary = live.summary
        if result is not None:
            summary.status = result.status
            summary.error = result.error
            # A resumed run lasts from its first start.
            summary.duration_s = (
                now - live.started if summary.restarts else result.duration_s
            )
        else:
            summary.status = "failed" if failure else "cancelled"
            summary.error = failure or "the run was cancelled before it finished"
            summary.duration_s = now - live.started
            # The executor had no chance to say so: end the event feed properly.
            live.bus.publish(
                WorkflowCompleted(
                    run_id=summary.run_id,
                    timestamp=now,
                    status=summary.status,
                    duration_s=summary.duration_s,
                    error=summary.error,
                )
            )
        live.watch.finish(result, summary.status)
        if live.tracer is not None:
            live.tracer.close()
        live.bus.close()
        self._live.pop(summary.run_id, None)
        if live.suspended and summary.status == "completed":
            # Stopped by the shutdown: left active, to resume at the next start.
            logger.info(
                "run %s stopped with the server; it resumes when the server "
                "starts again",
                summary.run_id,
                extra={"run_id": summary.run_id},
            )
            return
        summary.ended_at = iso(now)
        outcome = run_outcome(live, result, self.config.max_output_items)
        try:
            self.store.finish_run(summary, outcome, live.history.snapshot())
        except Exception:
            logger.exception("cannot record the end of run %s", summary.run_id)
        logger.info(
            "run %s %s in %.3fs",
            summary.run_id,
            summary.status,
            summary.duration_s,
            extra={"run_id": summary.run_id, "status": summary.status},
        )

    # --- reading ---------------------------------------------------------------

    def live(self, run_id: str) -> LiveRun | None:
        """The run, if it has not finished."""
        return self._live.get(run_id)

    def detail(self, run_id: str) -> RunDetail:
        """A run's state now, live or recorded.

        Raises:
            ApiError: No such run (404).
        """
        live = self._live.get(run_id)
        if live is None:
            detail = self.store.get_run(run_id)
            if detail is None:
                raise ApiError(404, f"no run {run_id!r}")
            return detail
        stats: dict[str, NodeStats] = live.executor.statistics()
        watch = live.watch
        return RunDetail(
            **msgspec.structs.asdict(live.summary),
            nodes=node_statuses(live.graph, stats, watch.states, watch.fills),
            graph=live.workflow,
            events_dropped=live.bus.statistics().dropped,
            recent_outputs=live.recent.snapshot(),
        )

    def series(self, run_id: str) -> dict[str, list[SeriesPoint]]:
        """Each node's retained samples of a live run (empty once it ended).

        Raises:
            ApiError: No such run (404).
        """
        live = self._live.get(run_id)
        if live is None:
            if self.store.get_run(run_id) is None:
                raise ApiError(404, f"no run {run_id!r}")
            return {}
        return live.series.snapshot()

    # --- control ---------------------------------------------------------------

    def stop(self, run_id: str) -> RunSummary:
        """Stop a run gracefully: sources end, in-flight items drain.

        Stopping a run that is already stopping changes nothing.

        Raises:
            ApiError: No such run (404), or it has finished (409).
        """
        live = self._active(run_id)
        self._stop(live)
        return live.summary

    def cancel(self, run_id: str) -> RunSummary:
        """Cancel a run now; it ends as ``cancelled``.

        Raises:
            ApiError: No such run (404), or it has finished (409).
        """
        live = self._active(run_id)
        live.cancel_requested = True
        live.executor.cancel()
        return live.summary

    def _stop(self, live: LiveRun) -> None:
        if live.summary.status != "running":
            return
        live.summary.status = "stopping"
        self.store.set_status(live.run_id, "stopping")
        live.executor.stop()

    def _active(self, run_id: str) -> LiveRun:
        live = self._live.get(run_id)
        if live is not None:
            return live
        if self.store.get_run(run_id) is None:
            raise ApiError(404, f"no run {run_id!r}")
        raise ApiError(409, f"run {run_id!r} has already finished")


def _resumable(workflow: Workflow, mode: str) -> bool:
    # Only a stream run with checkpoints can pick up where it stopped; a DAG
    # run started again would redo work and report a second, different end.
    return mode == "stream" and workflow.checkpoint is not None


def _with_inputs(workflow: Workflow, inputs: dict[str, list[Any]]) -> Workflow:
    """The workflow with each named ``source.values`` node given new values.

    Raises:
        WorkflowValidationError: An input names no ``source.values`` node.
    """
    if not inputs:
        return workflow
    problems = []
    nodes = {n.id: n for n in workflow.nodes}
    for node_id in inputs:
        decl = nodes.get(node_id)
        if decl is None or decl.type != "source.values":
            what = "no node" if decl is None else f"a {decl.type} node"
            problems.append(
                Problem(
                    f"inputs name a source.values node; {node_id!r} is {what}",
                    node=node_id,
                    field="inputs",
                )
            )
    if problems:
        raise WorkflowValidationError(problems)
    return msgspec.structs.replace(
        workflow,
        nodes=[
            msgspec.structs.replace(n, config={**n.config, "values": inputs[n.id]})
            if n.id in inputs
            else n
            for n in workflow.nodes
        ],
    )
