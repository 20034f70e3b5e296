"""OpenTelemetry spans from a run's events; a no-op when not configured.

A run is one span (``flowstream.run``) from `WorkflowStarted` to
`WorkflowCompleted`, with the workflow, mode, run id and status as
attributes. Each node execution is a child span (``flowstream.node``) from
its `NodeStarted` to its `NodeCompleted` (or final `NodeFailed`), with the
node id and type and its item counts. Spans take their times from the
events, so they cost nothing on the run's hot path.

Only the OpenTelemetry API is used: an application (or
``opentelemetry-instrument``) that installs an SDK tracer provider gets the
spans; without one, `tracer_for_runs` returns None and nothing is attached.
"""

from __future__ import annotations

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

__all__ = ["RunTracer", "tracer_for_runs"]


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
    """Turns one run's events into spans.

    Args:
        tracer: An OpenTelemetry ``Tracer``.
        bus: The run's event bus; the tracer listens until `close`.
    """

    def __init__(self, tracer: Any, bus: EventBus) -> None:
        from opentelemetry import trace

        self._trace = trace
        self._tracer = tracer
        self._run: Any = None
        self._context: Any = None
        self._nodes: dict[str, Any] = {}
        self._detach: Callable[[], None] = bus.add_listener(self._on_event)

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
            if event.status != "completed":
                status = self._trace.Status(
                    self._trace.StatusCode.ERROR, event.error or ""
                )
                self._run.set_status(status)
            self._run.end(end_time=_ns(event.timestamp))
            self._run = None
