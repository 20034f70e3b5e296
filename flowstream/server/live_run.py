"""A run in flight: `LiveRun`, what the server keeps of it, and how it is recorded.

While a run goes on the server keeps its events as JSON (`EventHistory`: the
first and the latest ones, for the run's record and for a WebSocket that
joins late), follows it for the metrics and the UI, and brings its newest
outputs to the events feed (`publish_recent`). When it ends, `run_outcome`
says what the store keeps of it. `flowstream.server.runs.RunManager` starts,
stops and finishes the runs.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeAlias

from ..core.events import NodeEvent, encode_event
from ..errors import EncodeError
from .observe import node_statuses
from .store import RunOutcome

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..core.events import ExecutionEvent
    from ..core.workflow import Workflow
    from ..runtime.events import EventBus
    from ..runtime.protocol import Executor
    from ..runtime.result import RunResult
    from ..runtime.validation import Graph
    from .metrics import RunWatch
    from .observe import NodeSeries, RecentOutputs
    from .schemas import RunSummary
    from .tracing import RunTracer

    BatchProbe: TypeAlias = Callable[[tuple[str, ...], int, float, float], None]

__all__ = [
    "RECENT_OUTPUTS",
    "EventHistory",
    "LiveRun",
    "both_probes",
    "publish_recent",
    "run_outcome",
]

RECENT_OUTPUTS = "recent_outputs"
"""The `NodeEvent` that brings a stream run's newest outputs to the events
feed, once per sample that saw new ones: ``data`` is ``{"port": p, "seen":
n, "records": [...]}`` (`RecentOutput`)."""


class EventHistory:
    """A run's events as JSON: the first ``head`` and the latest ``tail``.

    Attributes:
        skipped: Events dropped between the two (and events with no JSON
            form, which are never kept).
    """

    def __init__(self, head: int, tail: int) -> None:
        self._head_size = head
        self._head: list[bytes] = []
        self._tail: deque[bytes] = deque(maxlen=tail)
        self.skipped = 0

    def record(self, event: ExecutionEvent) -> None:
        """Keep one event (a bus listener); recent outputs are not kept."""
        if type(event) is NodeEvent and event.name == RECENT_OUTPUTS:
            return  # the live feed's; the run's record has its outputs
        try:
            raw = encode_event(event)
        except EncodeError:
            self.skipped += 1
            return
        if len(self._head) < self._head_size:
            self._head.append(raw)
            return
        if len(self._tail) == self._tail.maxlen:
            self.skipped += 1
        self._tail.append(raw)

    def snapshot(self) -> list[bytes]:
        """The kept events, in order."""
        return [*self._head, *self._tail]


@dataclass(eq=False)
class LiveRun:
    """A run that has not finished yet."""

    summary: RunSummary
    graph: Graph
    workflow: Workflow
    """As submitted: the graph's has its paths resolved in the data directory."""
    executor: Executor
    bus: EventBus
    history: EventHistory
    watch: RunWatch
    series: NodeSeries
    recent: RecentOutputs
    tracer: RunTracer | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    cancel_requested: bool = False
    started: float = field(default_factory=time.time)
    """When the run first started, in unix seconds (before any resume)."""
    suspended: bool = False
    """Stopped by a server shutdown, to resume at the next start."""

    @property
    def run_id(self) -> str:
        """The run's id."""
        return self.summary.run_id


def run_outcome(live: LiveRun, result: RunResult | None, limit: int) -> RunOutcome:
    """What the store keeps of a finished run: node states, outputs, dead letters.

    At most ``limit`` items per output port and of dead letters (``truncated``
    says when some were left out).
    """
    stats = result.stats if result is not None else live.watch.stats
    watch = live.watch
    outcome = RunOutcome(
        nodes=node_statuses(live.graph, stats, watch.states, watch.fills),
        events_dropped=live.watch.events_dropped,
    )
    if result is None:
        return outcome
    outputs: dict[str, dict[str, list[Any]]] = {}
    for node_id, ports in result.outputs.items():
        outputs[node_id] = {}
        for port, values in ports.items():
            outcome.truncated |= len(values) > limit
            outputs[node_id][port] = values[:limit]
    outcome.outputs = outputs
    outcome.truncated |= len(result.dead_letters) > limit
    outcome.dead_letters = result.dead_letters[:limit]
    return outcome


def publish_recent(live: LiveRun, published: dict[tuple[str, str], int]) -> None:
    """Put a run's new recent outputs on its events feed (`RECENT_OUTPUTS`).

    ``published`` holds how many records of each port were published so
    far; only those after them go out (at most what the ring keeps).
    """
    for node_id, ports in live.recent.snapshot().items():
        for port, recent in ports.items():
            before = published.get((node_id, port), 0)
            new = recent.seen - before
            if new <= 0:
                continue
            published[(node_id, port)] = recent.seen
            live.bus.emit(
                NodeEvent,
                live.run_id,
                node_id=node_id,
                name=RECENT_OUTPUTS,
                data={
                    "port": port,
                    "seen": recent.seen,
                    "records": recent.records[-new:],
                },
            )


def both_probes(first: BatchProbe, second: BatchProbe) -> BatchProbe:
    """One batch probe that calls two."""

    def probe(
        node_ids: tuple[str, ...], items: int, taken: float, delivered: float
    ) -> None:
        first(node_ids, items, taken, delivered)
        second(node_ids, items, taken, delivered)

    return probe
