"""Prometheus metrics of runs, fed by events and run statistics, not by nodes.

A `RunWatch` follows one run: a listener on the run's `EventBus` tracks node
states and runs by status, and `RunWatch.sample` reads the executor's
counters and channel statistics every sampling interval (and once more at the
end), adding what changed since the previous reading. Nodes never see any of
this. The one thing on the hot path is `BatchLatency`, the run's
`RunOptions.batch_probe`: the executor calls it for one batch in every
``probe_every`` (16) of each task, and it observes a histogram.

Metric families (labels in braces):

- ``flowstream_node_items_in_total`` / ``_items_out_total`` /
  ``_errors_total`` / ``_dead_letters_total`` {workflow, node}
- ``flowstream_node_duration_seconds`` {workflow, node}: histogram of node
  executions, from start to completion (one per node and run attempt).
- ``flowstream_batch_latency_seconds`` {workflow, node}: histogram of sampled
  batch latencies of a task, from its head node taking an input batch to the
  task delivering the output downstream (processing, plus any wait on a full
  downstream channel). A fused chain is one task and is reported under its
  head node only: one latency belongs to the whole chain, so repeating it
  under every node would count each batch several times.
- ``flowstream_batch_task_info`` {workflow, node, nodes}: which nodes the
  latency of head ``node`` covers (``nodes``: the chain's ids, head first,
  comma-separated), as of the latest run.
- ``flowstream_channel_fill_ratio`` / ``flowstream_channel_buffered_batches``
  {workflow, run_id, node, port}: backpressure now; removed when the run ends.
- ``flowstream_node_items_per_second`` {workflow, run_id, node, direction}:
  each node's recent rate ``in`` and ``out`` (over the last few seconds, from
  `flowstream.runtime.rates`: the same numbers as the API and the UI);
  removed when the run ends. For totals and long-range rates, use
  ``rate()`` over the ``_total`` counters.
- ``flowstream_node_watermark_ms`` / ``flowstream_node_watermark_lag_seconds``
  {workflow, run_id, node}: an event-time node's watermark (epoch ms) and how
  far it is behind the clock, at the latest sample; only for nodes that
  have one (windows and joins on event time); removed when the run ends.
- ``flowstream_run_restarts_total`` {workflow}: runs started again, one per
  `RunRestarted` event: by ``flowstream run --restart on-failure`` after a
  failure, or by the server resuming a run after a server restart.
- ``flowstream_runs`` {status}: runs of this process by status (running now,
  or finished as completed / failed / cancelled).
- ``flowstream_events_dropped_total`` {workflow}: events that slow
  subscribers lost (`EventBus` drops the oldest instead of waiting).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    start_http_server,
)

from ..core.events import (
    NodeCompleted,
    NodeFailed,
    NodeStarted,
    NodeStats,
    RunRestarted,
    WorkflowCompleted,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

    from ..core.events import ExecutionEvent
    from ..runtime.channel import ChannelStatistics
    from ..runtime.events import EventBus
    from ..runtime.protocol import Executor
    from ..runtime.result import RunResult
    from .schemas import NodeState

__all__ = [
    "BatchLatency",
    "Metrics",
    "RunMetricsEndpoint",
    "RunWatch",
    "channel_statistics",
]

logger = logging.getLogger("flowstream.server")

_LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
_DURATION_BUCKETS = (0.001, 0.01, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0, 300.0, 3600.0)


class Metrics:
    """The metric families, in their own registry (one per server or CLI run).

    Args:
        registry: Where to register them; a new registry if None (so that
            several servers in one process, as in tests, never collide).
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        node = ("workflow", "node")
        r = self.registry
        self.items_in = Counter(
            "flowstream_node_items_in", "Items received by a node.", node, registry=r
        )
        self.items_out = Counter(
            "flowstream_node_items_out", "Items emitted by a node.", node, registry=r
        )
        self.errors = Counter(
            "flowstream_node_errors", "Failures counted by a node.", node, registry=r
        )
        self.dead_letters = Counter(
            "flowstream_node_dead_letters",
            "Items a node gave up on (dead letters).",
            node,
            registry=r,
        )
        self.node_duration = Histogram(
            "flowstream_node_duration_seconds",
            "Node executions, from start to completion.",
            node,
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self.batch_latency = Histogram(
            "flowstream_batch_latency_seconds",
            "Sampled batch latency of a task, from its head node taking an "
            "input batch to the output delivered downstream; a fused chain "
            "is reported under its head.",
            node,
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_task = Info(
            "flowstream_batch_task",
            "The nodes a head node's batch latency covers (a fused chain).",
            node,
            registry=r,
        )
        channel = ("workflow", "run_id", "node", "port")
        self.channel_fill = Gauge(
            "flowstream_channel_fill_ratio",
            "Buffered batches / capacity of a node's input channel.",
            channel,
            registry=r,
        )
        self.channel_buffered = Gauge(
            "flowstream_channel_buffered_batches",
            "Batches buffered in a node's input channel.",
            channel,
            registry=r,
        )
        self.runs = Gauge(
            "flowstream_runs",
            "Runs of this process by status: running now, or finished.",
            ("status",),
            registry=r,
        )
        for status in ("running", "completed", "failed", "cancelled"):
            self.runs.labels(status)  # every status shows, at 0 at first
        self.rates = Gauge(
            "flowstream_node_items_per_second",
            "A node's items per second over the last few seconds.",
            ("workflow", "run_id", "node", "direction"),
            registry=r,
        )
        run_node = ("workflow", "run_id", "node")
        self.watermark = Gauge(
            "flowstream_node_watermark_ms",
            "An event-time node's watermark, in epoch milliseconds.",
            run_node,
            registry=r,
        )
        self.watermark_lag = Gauge(
            "flowstream_node_watermark_lag_seconds",
            "How far an event-time node's watermark is behind the clock.",
            run_node,
            registry=r,
        )
        self.restarts = Counter(
            "flowstream_run_restarts",
            "Runs started again (after a failure, or a server restart).",
            ("workflow",),
            registry=r,
        )
        self.events_dropped = Counter(
            "flowstream_events_dropped",
            "Events dropped because a subscriber fell behind.",
            ("workflow",),
            registry=r,
        )

    def watch(self, workflow: str, run_id: str, bus: EventBus) -> RunWatch:
        """Start following a run; call before it starts so no event is missed."""
        return RunWatch(self, workflow, run_id, bus)

    def batch_probe(self, workflow: str) -> BatchLatency:
        """A `RunOptions.batch_probe` for one run of ``workflow``."""
        return BatchLatency(self, workflow)


class BatchLatency:
    """Observes sampled batch latencies into ``flowstream_batch_latency_seconds``.

    The executor calls it synchronously on the event loop for one batch in
    every ``probe_every`` of each task (`RunOptions.batch_probe`), so it does
    no I/O and takes no lock of its own: after a task's first batch it is a
    dict lookup and a histogram observe. Make one per run.

    Args:
        metrics: Where the histogram is.
        workflow: The run's workflow name (a label).
    """

    __slots__ = ("_metrics", "_series", "_workflow")

    def __init__(self, metrics: Metrics, workflow: str) -> None:
        self._metrics = metrics
        self._workflow = workflow
        # A task's node ids -> its head's histogram series.
        self._series: dict[tuple[str, ...], Any] = {}

    def __call__(
        self, node_ids: tuple[str, ...], items: int, taken: float, delivered: float
    ) -> None:
        """Observe one batch: ``delivered - taken`` seconds, under the head."""
        series = self._series.get(node_ids)
        if series is None:
            series = self._new_series(node_ids)
        if taken:  # 0.0: the head has taken no input yet (nothing to measure)
            series.observe(delivered - taken)

    def _new_series(self, node_ids: tuple[str, ...]) -> Any:
        m = self._metrics
        labels = (self._workflow, node_ids[0])
        m.batch_task.labels(*labels).info({"nodes": ",".join(node_ids)})
        series = m.batch_latency.labels(*labels)
        self._series[node_ids] = series
        return series


def channel_statistics(
    executor: Executor,
) -> dict[tuple[str, str], ChannelStatistics]:
    """Every input channel of a running executor: ``(node, port) -> stats``."""
    return executor.channel_statistics()


class RunWatch:
    """Follows one run for the metrics and the UI's channel fill.

    Attributes:
        states: Each node's state from the run's events.
        fills: Each node's fullest input channel (0 to 1), while running.
        stats: Each node's counters at the last reading.
        events_dropped: Events the run's bus dropped so far.
    """

    def __init__(self, metrics: Metrics, workflow: str, run_id: str, bus: EventBus):
        self.metrics = metrics
        self.workflow = workflow
        self.run_id = run_id
        self.bus = bus
        self.states: dict[str, NodeState] = {}
        self.fills: dict[str, float] = {}
        self.stats: dict[str, NodeStats] = {}
        self.events_dropped = 0
        self.continues_on_error: set[str] = set()
        self._channels: set[tuple[str, str]] = set()
        self._rated: set[str] = set()
        self._marked: set[str] = set()
        self._finished = False
        metrics.runs.labels("running").inc()
        self._detach: Callable[[], None] = bus.add_listener(self._on_event)

    # --- events ----------------------------------------------------------------

    def _on_event(self, event: ExecutionEvent) -> None:
        if isinstance(event, NodeStarted):
            self.states[event.node_id] = "running"
        elif isinstance(event, NodeCompleted):
            self.states[event.node_id] = "completed"
            self.metrics.node_duration.labels(self.workflow, event.node_id).observe(
                event.stats.duration_s
            )
        elif isinstance(event, NodeFailed):
            # A node that sends failing items to its error port carries on.
            if not event.will_retry and event.node_id not in self.continues_on_error:
                self.states[event.node_id] = "failed"
        elif isinstance(event, WorkflowCompleted) and event.status != "completed":
            for node_id, state in self.states.items():
                if state == "running":
                    self.states[node_id] = "cancelled"
        elif isinstance(event, RunRestarted):
            self.metrics.restarts.labels(self.workflow).inc()

    # --- readings --------------------------------------------------------------

    def sample(self, executor: Executor) -> None:
        """Read the run's counters and channels now and update the metrics."""
        m = self.metrics
        for node_id, stats in executor.statistics().items():
            self._add(node_id, self.stats.get(node_id), stats)
            self._rated.add(node_id)
            node = (self.workflow, self.run_id, node_id)
            # No rate yet (under a second of data) reads as 0 to Prometheus.
            m.rates.labels(*node, "in").set(stats.rate_in or 0.0)
            m.rates.labels(*node, "out").set(stats.rate_out or 0.0)
            if stats.watermark_ms is not None:
                self._marked.add(node_id)
                m.watermark.labels(*node).set(stats.watermark_ms)
                m.watermark_lag.labels(*node).set(
                    time.time() - stats.watermark_ms / 1000
                )
        fills: dict[str, float] = {}
        for (node_id, port), ch in channel_statistics(executor).items():
            labels = (self.workflow, self.run_id, node_id, port)
            self._channels.add((node_id, port))
            fill = _fill(ch)
            m.channel_fill.labels(*labels).set(fill)
            m.channel_buffered.labels(*labels).set(ch.buffered)
            fills[node_id] = max(fill, fills.get(node_id, 0.0))
        self.fills = fills
        self._count_dropped()

    def finish(self, result: RunResult | None, status: str) -> None:
        """Take the final counters, count the run as finished, drop its gauges."""
        if self._finished:
            return
        self._finished = True
        if result is not None:
            for node_id, stats in result.stats.items():
                self._add(node_id, self.stats.get(node_id), stats)
        self._count_dropped()
        self.fills = {}
        m = self.metrics
        for node_id in self._rated:
            for direction in ("in", "out"):
                m.rates.remove(self.workflow, self.run_id, node_id, direction)
        self._rated.clear()
        for node_id in self._marked:
            m.watermark.remove(self.workflow, self.run_id, node_id)
            m.watermark_lag.remove(self.workflow, self.run_id, node_id)
        self._marked.clear()
        m.runs.labels("running").dec()
        m.runs.labels(status).inc()
        for node_id, port in self._channels:
            labels = (self.workflow, self.run_id, node_id, port)
            m.channel_fill.remove(*labels)
            m.channel_buffered.remove(*labels)
        self._channels.clear()
        self._detach()

    def _add(self, node_id: str, before: NodeStats | None, now: NodeStats) -> None:
        # A retried workflow starts its counters again: count the new attempt
        # from zero rather than going backwards.
        if before is None or now.items_in < before.items_in:
            before = NodeStats()
        self.stats[node_id] = now
        m = self.metrics
        labels = (self.workflow, node_id)
        delta_in = now.items_in - before.items_in
        delta_out = now.items_out - before.items_out
        # Each series is made on the first reading, so a node shows at 0.
        m.items_in.labels(*labels).inc(max(delta_in, 0))
        m.items_out.labels(*labels).inc(max(delta_out, 0))
        m.errors.labels(*labels).inc(max(now.errors - before.errors, 0))
        m.dead_letters.labels(*labels).inc(
            max(now.dead_letters - before.dead_letters, 0)
        )

    def _count_dropped(self) -> None:
        dropped = self.bus.statistics().dropped
        counter = self.metrics.events_dropped.labels(self.workflow)
        if dropped > self.events_dropped:
            counter.inc(dropped - self.events_dropped)
            self.events_dropped = dropped


def _fill(ch: ChannelStatistics) -> float:
    if ch.capacity > 0:
        return min(1.0, ch.buffered / ch.capacity)
    # An unbuffered channel is "full" while a sender waits on it.
    return 1.0 if ch.tasks_waiting_send else 0.0


class RunMetricsEndpoint:
    """The metrics of one command-line run, served on 127.0.0.1 while it runs.

    ``flowstream run --metrics-port N`` uses it: the run's executor is made
    with `batch_probe` as its `RunOptions.batch_probe`, `attach` is given the
    executor before the run starts, `run` serves the metrics (prometheus
    client's HTTP server, in its own thread) and samples the run until it
    ends, then stops serving.

    Args:
        workflow: The workflow's name (a label of every node series).
        port: The port to serve on.
        interval: Seconds between two readings of the run's counters.

    Attributes:
        batch_probe: The run's batch latency probe.
    """

    def __init__(self, workflow: str, port: int, interval: float = 0.5) -> None:
        self.workflow = workflow
        self.port = port
        self.interval = interval
        self.metrics = Metrics()
        self.batch_probe = self.metrics.batch_probe(workflow)
        self.watch: RunWatch | None = None
        self._executor: Executor | None = None

    def attach(self, executor: Executor) -> None:
        """Follow this executor's run (call before it starts).

        A run restarted (``--restart on-failure``) gives a new executor: the
        attempt before it failed, and its watch is finished and detached, so
        one watch at a time follows the shared bus.
        """
        if self.watch is not None and self._executor is not None:
            self.watch.sample(self._executor)  # its final counters
            self.watch.finish(None, "failed")
        self._executor = executor
        self.watch = self.metrics.watch(self.workflow, executor.run_id, executor.bus)

    async def run(self, run: Coroutine[Any, Any, RunResult]) -> RunResult:
        """Await the run while serving and sampling its metrics.

        Raises:
            OSError: The port cannot be bound.
        """
        server, thread = start_http_server(
            self.port, addr="127.0.0.1", registry=self.metrics.registry
        )
        try:
            async with asyncio.TaskGroup() as group:
                task = group.create_task(run)
                group.create_task(self._sample(task))
            result = task.result()
            if self.watch is not None:
                self.watch.finish(result, result.status)
            return result
        finally:
            server.shutdown()
            server.server_close()
            thread.join(5.0)

    async def _sample(self, task: asyncio.Task[RunResult]) -> None:
        while not task.done():
            if self.watch is not None and self._executor is not None:
                try:
                    self.watch.sample(self._executor)
                except Exception:
                    # A bug in the readings must not take the run down.
                    logger.exception("cannot sample the run; metrics stop")
                    return
            await asyncio.wait({task}, timeout=self.interval)
