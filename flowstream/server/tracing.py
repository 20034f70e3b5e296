"""OpenTelemetry spans from a run's events and sampled batches.

A run is one span (``flowstream.run``) from `WorkflowStarted` to
`WorkflowCompleted`, with the workflow, mode, run id and status as
attributes. Each node execution is a child span (``flowstream.node``) from
its `NodeStarted` to its `NodeCompleted` (or final `NodeFailed`), with the
node id and type and its item counts. These take their times from the
events, so they cost nothing on the run's hot path.

In stream mode, where node executions last as long as the run, the run's
owner also installs `RunTracer.batch_probe` as the run's
`RunOptions.batch_probe`: each sampled batch (one in every ``probe_every``,
16 by default, of each task) becomes a ``flowstream.batch`` span, a child of
the run's, from the task's head taking the input batch to the output
delivered downstream. At most ``max_batch_spans_per_s`` of them are made in
each second of a run (the rest are counted on the run's span), so a fast
stream cannot flood the exporter. The spans are made on the event loop, in
the run's hot loop: use a batching span processor, never one that exports
inline.

Only the OpenTelemetry API is used: an application (or
``opentelemetry-instrument``) that installs an SDK tracer provider gets the
spans; without one, `tracer_for_runs` returns None, nothing is attached and
no probe is installed.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from ..core.events import (
    NodeCompleted,
    NodeFailed,
    NodeStarted,
    WorkflowCompleted,
    WorkflowStarted,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..core.events import ExecutionEvent
    from ..runtime.events import EventBus

__all__ = ["BATCH_SPANS_PER_S", "RunTracer", "tracer_for_runs"]

logger = logging.getLogger("flowstream.server")

BATCH_SPANS_PER_S = 20


def tracer_for_runs() -> Any | None:
    """The OpenTelemetry tracer for runs, or None when tracing is off.

    Off means: ``opentelemetry-api`` is not installed, or no tracer provider
    was installed (the API's default provider records nothing).
    """
    try:
        from opentelemetry import trace
    except ImportError:
        return None
    provider = trace.get_tracer_provider()
    if isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
        return None
    return trace.get_tracer("flowstream")


def _ns(timestamp: float) -> int:
    return int(timestamp * 1e9)


class RunTracer:
    """Turns one run's events, and its sampled batches, into spans.

    Args:
        tracer: An OpenTelemetry ``Tracer``.
        bus: The run's event bus; the tracer listens until `close`.
        max_batch_spans_per_s: The most ``flowstream.batch`` spans made in
            one second of the run (counted from when the tracer was made).

    Attributes:
        batch_spans: ``flowstream.batch`` spans made so far.
        batch_spans_dropped: Sampled batches given no span (over the cap).
    """

    def __init__(
        self,
        tracer: Any,
        bus: EventBus,
        *,
        max_batch_spans_per_s: int = BATCH_SPANS_PER_S,
    ) -> None:
        from opentelemetry import trace

        self._trace = trace
        self._tracer = tracer
        self._run: Any = None
        self._context: Any = None
        self._nodes: dict[str, Any] = {}
        self._run_id = ""
        # Batch times are perf_counter readings; spans want epoch nanoseconds.
        # One reading of both clocks, taken together, maps the one to the other.
        self._epoch_ns = time.time_ns()
        self._perf = time.perf_counter()
        self._cap = max_batch_spans_per_s
        self._second = -1  # the second of the run that _in_second counts
        self._in_second = 0
        self.batch_spans = 0
        self.batch_spans_dropped = 0
        self._detach: Callable[[], None] = bus.add_listener(self._on_event)

    def batch_probe(
        self, node_ids: tuple[str, ...], items: int, taken: float, delivered: float
    ) -> None:
        """Make a ``flowstream.batch`` span for a sampled batch, within the cap.

        A `RunOptions.batch_probe`: called on the event loop for one batch in
        every ``probe_every`` of each task, with the task's nodes (head
        first), the items it delivered, and `time.perf_counter` readings of
        when the head took the input and when the output was delivered.
        Batches before the run's span starts, or after it ends, are ignored.
        """
        if self._run is None or not taken:
            return
        second = int(delivered - self._perf)
        if second != self._second:
            self._second = second
            self._in_second = 0
        if self._in_second >= self._cap:
            self.batch_spans_dropped += 1
            return
        self._in_second += 1
        self.batch_spans += 1
        try:
            span = self._tracer.start_span(
                "flowstream.batch",
                context=self._context,
                start_time=self._perf_ns(taken),
                attributes={
                    "flowstream.run_id": self._run_id,
                    "flowstream.node_id": node_ids[0],
                    "flowstream.nodes": node_ids,
                    "flowstream.items": items,
                },
            )
            span.end(end_time=self._perf_ns(delivered))
        except Exception:
            # The run must not fail for its traces: stop making batch spans.
            logger.exception("cannot make a batch span; batch spans stop")
            self._cap = 0

    def _perf_ns(self, reading: float) -> int:
        return self._epoch_ns + int((reading - self._perf) * 1e9)

    def close(self) -> None:
        """Stop listening; spans still open end now."""
        self._detach()
        for span in self._nodes.values():
            span.end()
        self._nodes.clear()
        if self._run is not None:
            self._run.end()
            self._run = None

    def _on_event(self, event: ExecutionEvent) -> None:
        if isinstance(event, WorkflowStarted):
            self._run = self._tracer.start_span(
                "flowstream.run",
                start_time=_ns(event.timestamp),
                attributes={
                    "flowstream.run_id": event.run_id,
                    "flowstream.workflow": event.workflow,
                    "flowstream.mode": event.mode,
                    "flowstream.nodes": event.nodes,
                },
            )
            self._context = self._trace.set_span_in_context(self._run)
            self._run_id = event.run_id
        elif isinstance(event, NodeStarted):
            self._nodes[event.node_id] = self._tracer.start_span(
                "flowstream.node",
                context=self._context,
                start_time=_ns(event.timestamp),
                attributes={
                    "flowstream.run_id": event.run_id,
                    "flowstream.node_id": event.node_id,
                    "flowstream.node_type": event.node_type,
                    "flowstream.attempt": event.attempt,
                },
            )
        elif isinstance(event, NodeCompleted):
            span = self._nodes.pop(event.node_id, None)
            if span is not None:
                stats = event.stats
                span.set_attribute("flowstream.items_in", stats.items_in)
                span.set_attribute("flowstream.items_out", stats.items_out)
                span.set_attribute("flowstream.errors", stats.errors)
                span.set_attribute("flowstream.dead_letters", stats.dead_letters)
                span.end(end_time=_ns(event.timestamp))
        elif isinstance(event, NodeFailed):
            span = self._nodes.get(event.node_id)
            if span is not None:
                span.add_event(
                    "failure",
                    attributes={
                        "error": event.error,
                        "error_type": event.error_type,
                        "attempt": event.attempt,
                        "will_retry": event.will_retry,
                    },
                    timestamp=_ns(event.timestamp),
                )
        elif isinstance(event, WorkflowCompleted) and self._run is not None:
            for span in self._nodes.values():
                span.end(end_time=_ns(event.timestamp))
            self._nodes.clear()
            self._run.set_attribute("flowstream.status", event.status)
            if self.batch_spans or self.batch_spans_dropped:
                self._run.set_attribute("flowstream.batch_spans", self.batch_spans)
                self._run.set_attribute(
                    "flowstream.batch_spans_dropped", self.batch_spans_dropped
                )
            if event.status != "completed":
                status = self._trace.Status(
                    self._trace.StatusCode.ERROR, event.error or ""
                )
                self._run.set_status(status)
            self._run.end(end_time=_ns(event.timestamp))
            self._run = None
