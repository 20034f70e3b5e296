"""The execution events a run reports, and their JSON form.

Every state change of a run is one ``ExecutionEvent``: a frozen ``msgspec.Struct``
from a tagged union, so a decoder reads any event without knowing its kind first.
On the wire an event is a JSON object whose ``"event"`` field names its class::

    {"event": "NodeStarted", "run_id": "r1", "timestamp": 1700000000.5,
     "node_id": "fetch", "node_type": "http.request"}

Fields equal to their default are left out of the JSON (``attempt`` of a first
attempt, for instance) and come back as the default when decoded. Timestamps are
unix seconds as returned by ``time.time()``. Floats must be finite: JSON has no
NaN or infinity, so msgspec writes them as ``null``, which does not decode back.

This module holds types only and never touches an event loop; the ``EventBus``
that carries events lives in ``flowstream.runtime.events``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeAlias

import msgspec

from flowstream.errors import DecodeError, EncodeError

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "EVENT_TYPES",
    "ExecutionEvent",
    "NodeCompleted",
    "NodeEvent",
    "NodeFailed",
    "NodeStarted",
    "NodeStats",
    "RouteTaken",
    "RunRestarted",
    "WorkflowCompleted",
    "WorkflowStarted",
    "decode_event",
    "encode_event",
    "summed_stats",
]


class NodeStats(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What one node did during a run; not an event, but carried by one.

    Attributes:
        items_in: Items the node received on all its input ports.
        items_out: Items the node emitted on all its output ports.
        errors: Failures the node reported (each counted once).
        dead_letters: Bad items the node sent to its ``error`` port.
        duration_s: Wall-clock seconds from the node's start to its end.
        rate_in: Items per second received: over the last few seconds while
            the node runs, the average over its run once it ended; None when
            that span is under a second (too short to mean anything). Read
            from the counters when the stats are taken
            (`flowstream.runtime.rates`), never counted per item.
        rate_out: Items per second emitted, likewise.
        watermark_ms: An event-time node's watermark (epoch milliseconds):
            no item still to come is expected before it. None for other
            nodes, and before the first item. Read when the stats are
            taken, never per item.
        instance_of: For one instance of a node with ``parallelism`` > 1,
            the declared node's id; None otherwise.
        instance: That instance's index, from 0.
        bytes_read: How far a source that reads bytes (a file) has read:
            its position in the input, which a resumed run starts at the
            checkpointed offset. None: the node reports no position.
        bytes_total: How many bytes that input holds, for a percentage and
            an ETA; None when it has no end (a file followed as it grows)
            or the node does not say.
    """

    items_in: int = 0
    items_out: int = 0
    errors: int = 0
    dead_letters: int = 0
    duration_s: float = 0.0
    rate_in: float | None = None
    rate_out: float | None = None
    watermark_ms: int | None = None
    instance_of: str | None = None
    instance: int | None = None
    bytes_read: int | None = None
    bytes_total: int | None = None


def summed_stats(members: Sequence[NodeStats]) -> NodeStats:
    """A parallel node's counters: its instances' ``members`` together.

    Counts and rates add up (an unknown rate is left out; all unknown:
    None), the duration is the longest, the watermark the lowest, and a split
    source's parts add up to the whole input (a total only if every part
    has one).
    """

    def known_sum(values: list[Any]) -> Any:
        known = [v for v in values if v is not None]
        return sum(known) if known else None

    marks = [m.watermark_ms for m in members if m.watermark_ms is not None]
    totals = [m.bytes_total for m in members]
    return NodeStats(
        items_in=sum(m.items_in for m in members),
        items_out=sum(m.items_out for m in members),
        errors=sum(m.errors for m in members),
        dead_letters=sum(m.dead_letters for m in members),
        duration_s=max((m.duration_s for m in members), default=0.0),
        rate_in=known_sum([m.rate_in for m in members]),
        rate_out=known_sum([m.rate_out for m in members]),
        watermark_ms=min(marks) if marks else None,
        bytes_read=known_sum([m.bytes_read for m in members]),
        bytes_total=(
            None
            if not totals or None in totals
            else sum(t for t in totals if t is not None)
        ),
    )


# The shared config lives on a field-less base so that each event lists all of
# its fields itself, in wire order: msgspec would put inherited keyword-only
# fields after the subclass's own, burying run_id at the end of every object.
class _Event(
    msgspec.Struct,
    tag_field="event",
    tag=True,
    frozen=True,
    kw_only=True,
    omit_defaults=True,
):
    pass


class WorkflowStarted(_Event, frozen=True, kw_only=True):
    """A run has begun: its nodes are wired and every connector reported ready.

    Attributes:
        run_id: The run this event belongs to.
        timestamp: When it happened, in unix seconds.
        workflow: The workflow's name.
        mode: How the graph runs: ``"dag"``, ``"stream"`` or ``"routed"``.
        nodes: How many nodes the run has.
    """

    run_id: str
    timestamp: float
    workflow: str
    mode: str
    nodes: int


class NodeStarted(_Event, frozen=True, kw_only=True):
    """A node began an attempt.

    Attributes:
        run_id: The run this event belongs to.
        timestamp: When it happened, in unix seconds.
        node_id: The node, as named in the workflow.
        node_type: Its registered type id (``transform.map``).
        attempt: 1 for the first attempt, counting up on each retry.
        instance_of: For one instance of a node with ``parallelism`` > 1,
            the declared node's id (``node_id`` is the instance's,
            ``count[1]``); None otherwise.
        instance: That instance's index, from 0.
    """

    run_id: str
    timestamp: float
    node_id: str
    node_type: str
    attempt: int = 1
    instance_of: str | None = None
    instance: int | None = None


class NodeCompleted(_Event, frozen=True, kw_only=True):
    """A node finished: its inputs ended and its outputs are closed.

    Attributes:
        run_id: The run this event belongs to.
        timestamp: When it happened, in unix seconds.
        node_id: The node, as named in the workflow.
        node_type: Its registered type id.
        stats: What the node did.
        instance_of: For one instance of a node with ``parallelism`` > 1,
            the declared node's id (``node_id`` is the instance's,
            ``count[1]``); None otherwise.
        instance: That instance's index, from 0.
    """

    run_id: str
    timestamp: float
    node_id: str
    node_type: str
    stats: NodeStats
    instance_of: str | None = None
    instance: int | None = None


class NodeFailed(_Event, frozen=True, kw_only=True):
    """A node's attempt raised; ``will_retry`` says whether another comes.

    Attributes:
        run_id: The run this event belongs to.
        timestamp: When it happened, in unix seconds.
        node_id: The node, as named in the workflow.
        node_type: Its registered type id.
        error: The exception's message.
        error_type: The exception's class name.
        attempt: The attempt that failed, counting from 1.
        will_retry: True if the retry policy will start another attempt.
        instance_of: For one instance of a node with ``parallelism`` > 1,
            the declared node's id (``node_id`` is the instance's,
            ``count[1]``); None otherwise.
        instance: That instance's index, from 0.
    """

    run_id: str
    timestamp: float
    node_id: str
    node_type: str
    error: str
    error_type: str
    attempt: int = 1
    will_retry: bool = False
    instance_of: str | None = None
    instance: int | None = None


class RouteTaken(_Event, frozen=True, kw_only=True):
    """A routed flow chose its next step (see `flowstream.routed`).

    Attributes:
        run_id: The run this event belongs to.
        timestamp: When it happened, in unix seconds.
        from_node: The step that just finished (or failed).
        to_node: The step that runs next.
        action: Why: ``"simple"``, ``"parameterized"`` or ``"conditional"``
            (the step's `Action`), ``"default"`` (the step's only route) or
            ``"error"`` (its ``on_error`` route, after a failure).
        step: How many steps the run has taken, counting ``from_node``.
    """

    run_id: str
    timestamp: float
    from_node: str
    to_node: str
    action: str
    step: int = 0


class NodeEvent(_Event, frozen=True, kw_only=True):
    """A custom event that a node's own code emitted.

    Attributes:
        run_id: The run this event belongs to.
        timestamp: When it happened, in unix seconds.
        node_id: The node that emitted it.
        name: What the node called the event.
        data: Any plain value (None, bool, int, float, str, list, dict).
        instance_of: For one instance of a node with ``parallelism`` > 1,
            the declared node's id (``node_id`` is the instance's,
            ``count[1]``); None otherwise.
        instance: That instance's index, from 0.
    """

    run_id: str
    timestamp: float
    node_id: str
    name: str
    data: Any = None
    instance_of: str | None = None
    instance: int | None = None


class WorkflowCompleted(_Event, frozen=True, kw_only=True):
    """A run ended, for better or worse; always the run's last event.

    Attributes:
        run_id: The run this event belongs to.
        timestamp: When it happened, in unix seconds.
        status: ``"completed"``, ``"failed"`` or ``"cancelled"``.
        duration_s: Wall-clock seconds from start to end.
        error: Why the run failed or was cancelled; None if it completed.
    """

    run_id: str
    timestamp: float
    status: str
    duration_s: float
    error: str | None = None


class RunRestarted(_Event, frozen=True, kw_only=True):
    """A run that ended is started again.

    Published between the ``WorkflowCompleted`` of the attempt that ended
    and the ``WorkflowStarted`` of the next one: by ``flowstream run
    --restart on-failure`` after a failure (once its wait is decided; the
    next attempt gets a run id of its own), and by the server for a stream
    run it resumes after a server restart (under the same run id).

    Attributes:
        run_id: The run that ended and is started again.
        timestamp: When it happened, in unix seconds.
        attempt: Which restart this is, counting from 1.
        reason: Why: the error the run failed with, or ``"server restart"``.
        delay_s: Seconds waited before starting again.
        max_attempts: The restarts allowed in all; None for no limit.
        checkpointed: True if the run resumes from a checkpoint store (a
            stream run from ``from_epoch``, a DAG run skipping the nodes it
            had finished); False: it starts over.
        from_epoch: The last committed checkpoint epoch the run resumes
            from; None when it has none (no store, nothing committed yet,
            or a DAG run).
    """

    run_id: str
    timestamp: float
    attempt: int
    reason: str
    delay_s: float = 0.0
    max_attempts: int | None = None
    checkpointed: bool = False
    from_epoch: int | None = None


ExecutionEvent: TypeAlias = (
    WorkflowStarted
    | NodeStarted
    | NodeCompleted
    | NodeFailed
    | RouteTaken
    | NodeEvent
    | WorkflowCompleted
    | RunRestarted
)
"""Any one of the eight events; the union that ``decode_event`` accepts."""

EVENT_TYPES: tuple[type[ExecutionEvent], ...] = (
    WorkflowStarted,
    NodeStarted,
    NodeCompleted,
    NodeFailed,
    RouteTaken,
    NodeEvent,
    WorkflowCompleted,
    RunRestarted,
)
"""The eight event classes, in the order a run emits them (a restart comes
after the ``WorkflowCompleted`` of the attempt that ended)."""

# Reused instances: building an Encoder or Decoder per call costs more than
# encoding a small event (msgspec perf tips).
_encoder = msgspec.json.Encoder()
_decoder: msgspec.json.Decoder[ExecutionEvent] = msgspec.json.Decoder(ExecutionEvent)


def encode_event(event: ExecutionEvent) -> bytes:
    """Return an event as one compact JSON object, with no trailing newline.

    Args:
        event: The event to encode.

    Returns:
        UTF-8 JSON bytes; the ``"event"`` key holds the class name.

    Raises:
        EncodeError: ``NodeEvent.data`` holds a value JSON cannot represent
            (an arbitrary object, for instance).
    """
    try:
        return _encoder.encode(event)
    except (TypeError, msgspec.EncodeError) as exc:
        msg = f"cannot encode {type(event).__name__} event: {exc}"
        raise EncodeError(msg) from exc


def decode_event(data: bytes | str) -> ExecutionEvent:
    """Decode one JSON object into the event its ``"event"`` tag names.

    Args:
        data: One JSON document, as bytes or text.

    Returns:
        The event, with every field checked against its declared type.

    Raises:
        DecodeError: The data is not JSON, names no known event, or a field is
            missing or of the wrong type; the message keeps msgspec's path to
            the bad spot (``$.stats.items_in``).
    """
    try:
        return _decoder.decode(data)
    except msgspec.DecodeError as exc:
        msg = f"invalid event: {exc}"
        raise DecodeError(msg) from exc
