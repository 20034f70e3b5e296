"""Request and response bodies of the API, as msgspec structs.

Litestar encodes and decodes these with msgspec and derives the OpenAPI
document from them, so the document cannot drift from what is sent.

Times are ISO 8601 strings in UTC with milliseconds
(``2026-12-03T17:40:00.123Z``, `iso`); durations are seconds.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal, TypeAlias

import msgspec

from ..core.workflow import Workflow
from ..errors import Problem
from ..runtime.result import DeadLetter

__all__ = [
    "CheckpointState",
    "EpochInfo",
    "Health",
    "InstanceStatus",
    "NodeState",
    "NodeStatus",
    "NodeType",
    "ProblemDocument",
    "RecentOutput",
    "RunCreated",
    "RunDetail",
    "RunRequest",
    "RunStatus",
    "RunSummary",
    "SeriesPoint",
    "WorkflowSummary",
    "from_iso",
    "iso",
]


def iso(ts: float) -> str:
    """Unix seconds as ISO 8601 in UTC with milliseconds (``...T17:40:00.123Z``)."""
    moment = dt.datetime.fromtimestamp(ts, dt.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def from_iso(text: str) -> float:
    """The unix seconds of a time `iso` wrote."""
    return dt.datetime.fromisoformat(text).timestamp()


RunStatus: TypeAlias = Literal[
    "running", "stopping", "completed", "failed", "cancelled", "interrupted"
]
"""A run's status; the last four are final (``interrupted``: the server
stopped under it and it could not resume, having no checkpoints)."""

NodeState: TypeAlias = Literal["pending", "running", "completed", "failed", "cancelled"]
"""A node's state within a run, from its events."""

FINAL_STATUSES: frozenset[str] = frozenset(
    {"completed", "failed", "cancelled", "interrupted"}
)


class ProblemDocument(msgspec.Struct, kw_only=True):
    """An error, as an RFC 9457 problem document (``application/problem+json``).

    Attributes:
        type: A URI naming the kind of problem; ``about:blank`` means the
            status code says it all.
        title: A short summary of the kind of problem.
        status: The HTTP status code.
        detail: What went wrong with this request.
        instance: The request path.
        problems: For an invalid workflow, every problem found, each naming
            its node and field (what ``flowstream validate`` prints).
    """

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    problems: list[Problem] | None = None


class SandboxLimits(msgspec.Struct, kw_only=True):
    """What an uploaded sandboxed node may ask for on this server.

    Attributes:
        time_limit_ms: The ceiling on ``limits.time_limit_ms`` (per call).
        memory_pages: The ceiling on ``limits.memory_pages`` (64 KiB each).
        wasi: The WASI grants an upload may have (never ``files``).
        module: How an upload gives its module: inline, ``base64:...``.
    """

    time_limit_ms: float
    memory_pages: int
    wasi: list[str]
    module: str = "inline (base64:...)"


class NodeType(msgspec.Struct, kw_only=True):
    """A registered node type, from ``GET /api/nodes``.

    Attributes:
        type: The type id used in workflows (``transform.map``).
        description: The first line of its documentation.
        inputs: Its input ports (for types whose ports follow their config,
            the ports of its default config).
        outputs: Its output ports; ``error`` carries dead letters.
        dynamic_ports: Whether the config names the ports (``control.route``).
        needs_end_of_input: It emits only at end of input (not after an
            unbounded source).
        config_schema: The JSON Schema of its config; None if it takes none.
        allowed: Whether workflows uploaded to this server may use it.
        limits: For a sandboxed type (``wasm.*``), the ceilings this server
            holds uploads to; None for the others.
    """

    type: str
    description: str
    inputs: list[str]
    outputs: list[str]
    dynamic_ports: bool
    needs_end_of_input: bool
    config_schema: dict[str, Any] | None
    allowed: bool
    limits: SandboxLimits | None = None


class WorkflowSummary(msgspec.Struct, kw_only=True):
    """A stored workflow, as listed by ``GET /api/workflows``."""

    name: str
    mode: str
    description: str
    nodes: int
    connections: int
    created_at: str
    updated_at: str


class RunRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The optional body of ``POST /api/workflows/{name}/runs``.

    Attributes:
        mode: ``dag`` or ``stream``; None runs the workflow in its own mode.
        inputs: Values for ``source.values`` nodes, by node id: each list
            replaces that node's configured ``values`` for this run.
    """

    mode: Literal["dag", "stream"] | None = None
    inputs: dict[str, list[Any]] = msgspec.field(default_factory=dict)


class RunCreated(msgspec.Struct, kw_only=True):
    """The answer to starting a run (201)."""

    run_id: str
    workflow: str
    mode: str
    status: RunStatus


class InstanceStatus(msgspec.Struct, kw_only=True):
    """One instance of a node with ``parallelism`` > 1, in its `NodeStatus`.

    Attributes:
        instance: Its index, from 0.
        node_id: Its id in the run's stats and events (``count[1]``).
        state: From its events.
        items_in: Items it received.
        items_out: Items it emitted.
        errors: Failures it counted.
        dead_letters: Items it gave up on.
        rate_in: Its recent items per second in (see `NodeStatus`).
        rate_out: Its recent items per second out.
        channel_fill: How full its fullest input channel is (0 to 1).
        watermark_ms: Its event-time watermark, epoch ms.
        watermark_lag_s: How far its watermark is behind the clock.
    """

    instance: int
    node_id: str
    state: NodeState = "pending"
    items_in: int = 0
    items_out: int = 0
    errors: int = 0
    dead_letters: int = 0
    rate_in: float | None = None
    rate_out: float | None = None
    channel_fill: float | None = None
    watermark_ms: int | None = None
    watermark_lag_s: float | None = None


class NodeStatus(msgspec.Struct, kw_only=True):
    """One node of a run: its state and counters.

    Attributes:
        type: Its node type id.
        role: ``source`` (no inputs), ``sink`` (no outputs but ``error``:
            what it takes in is what it wrote) or ``transform``.
        state: From its events: pending until it starts.
        items_in: Items received on all input ports (for a sink: written).
        items_out: Items emitted on all output ports.
        errors: Failures counted (each retry too).
        dead_letters: Items given up on, with the reason.
        rate_in: Items per second received: over the last few seconds while
            the node runs, the average over its run once it ended; None when
            the span is under a second (`flowstream.runtime.rates`).
        rate_out: Items per second emitted, likewise.
        channel_fill: How full its fullest input channel is (0 to 1); None
            when it has no input channel (a source, or fused into its
            upstream's task).
        parallelism: How many instances it runs (``parallelism``); the
            counters above are their sums, the rates their sums, the fill
            the fullest, the watermark the lowest.
        watermark: An event-time node's watermark (windows, joins), ISO
            8601: no item still to come is expected before it. None for
            other nodes and before the first item.
        watermark_ms: The same, in epoch milliseconds.
        watermark_lag_s: How far the watermark is behind the clock, in
            seconds, when the status was read (event-time lag).
        instances: For a node with several instances, one row each.
    """

    type: str
    role: Literal["source", "transform", "sink"] = "transform"
    state: NodeState = "pending"
    items_in: int = 0
    items_out: int = 0
    errors: int = 0
    dead_letters: int = 0
    rate_in: float | None = None
    rate_out: float | None = None
    channel_fill: float | None = None
    parallelism: int = 1
    watermark: str | None = None
    watermark_ms: int | None = None
    watermark_lag_s: float | None = None
    instances: list[InstanceStatus] | None = None


class SeriesPoint(msgspec.Struct, kw_only=True):
    """One sample of a node, in ``GET /api/runs/{run_id}/series``.

    Attributes:
        t: When it was taken, unix seconds (ms precision).
        rate_in: Items per second in (recent).
        rate_out: Items per second out (recent).
        channel_fill: Its fullest input channel (0 to 1), if it has one.
        errors: Errors and dead letters so far.
        watermark_lag_s: Event-time lag, for event-time nodes.
    """

    t: float
    rate_in: float | None = None
    rate_out: float | None = None
    channel_fill: float | None = None
    errors: int = 0
    watermark_lag_s: float | None = None


class RecentOutput(msgspec.Struct, kw_only=True):
    """The latest records of one output port of a running run.

    Attributes:
        seen: Records the port emitted so far.
        records: The latest of them, oldest first (at most 50 and 64 KiB;
            a record over 4 KiB of JSON is cut, as a string).
    """

    seen: int
    records: list[Any]


class RunSummary(msgspec.Struct, kw_only=True):
    """A run, as listed by ``GET /api/runs``.

    Attributes:
        run_id: The run's id (that of its first attempt).
        workflow: The workflow's name.
        mode: ``dag`` or ``stream``.
        status: Where the run is.
        started_at: When it started (ISO 8601, UTC, milliseconds).
        ended_at: When it ended; None while it runs.
        duration_s: Wall time of a finished run, in seconds.
        error: Why it failed, was cancelled or interrupted.
        restarts: How many times the server resumed it from its checkpoints
            after a server restart.
    """

    run_id: str
    workflow: str
    mode: str
    status: RunStatus
    started_at: str
    ended_at: str | None = None
    duration_s: float | None = None
    error: str | None = None
    restarts: int = 0


class RunDetail(RunSummary, kw_only=True):
    """A run with its nodes, from ``GET /api/runs/{run_id}``.

    Attributes:
        nodes: Every node's state and counters, by node id.
        graph: The workflow as it was when the run started.
        outputs: A finished run's outputs, ``{node: {port: [values]}}``
            (DAG mode: every terminal port; stream mode: ``sink.collect``).
        dead_letters: A finished run's dead letters.
        truncated: Outputs or dead letters were cut to the server's limit.
        events_dropped: Events lost by slow subscribers of this run.
        recent_outputs: While the run runs: the latest records of each of
            its outputs, ``{node: {port: RecentOutput}}`` (``outputs`` comes
            when it ends).
    """

    nodes: dict[str, NodeStatus] = msgspec.field(default_factory=dict)
    graph: Workflow | None = None
    outputs: dict[str, dict[str, list[Any]]] | None = None
    dead_letters: list[DeadLetter] | None = None
    truncated: bool = False
    events_dropped: int = 0
    recent_outputs: dict[str, dict[str, RecentOutput]] | None = None


class EpochInfo(msgspec.Struct, kw_only=True):
    """One committed epoch of a stream run, in a `CheckpointState`.

    Attributes:
        epoch: Its number.
        started_at: When its barrier was triggered.
        committed_at: When its transaction committed.
        duration_ms: Milliseconds from the barrier to the commit.
        size_bytes: Bytes of its snapshot (every node's encoded state).
    """

    epoch: int
    started_at: str
    committed_at: str
    duration_ms: float
    size_bytes: int


class CheckpointState(msgspec.Struct, kw_only=True):
    """A workflow's run in its checkpoint store, from ``.../checkpoints``.

    Attributes:
        run_key: The store's id of the run (a hash of the workflow).
        status: ``running``, ``completed`` or ``failed``, as the store says.
        started_at: When the store first saw the run.
        last_commit_at: When it last committed (an epoch, or DAG outputs).
        attempts: Runs of it so far; each after the first was restored.
        restores: ``attempts - 1``: how often it resumed from the store.
        epoch: Stream mode: the last committed epoch; None before the first.
        nodes_done: DAG mode: one-shot nodes whose outputs are recorded.
        positions: Each node's small state values in that epoch (source
            offsets, sinks' committed positions).
        epochs: The latest committed epochs (up to 20), newest first.
        last_restore_at: When the run last resumed from the store; None if
            it never did.
    """

    run_key: str
    status: str
    started_at: str
    last_commit_at: str
    attempts: int
    restores: int
    epoch: int | None = None
    nodes_done: int = 0
    positions: dict[str, dict[str, Any]] = msgspec.field(default_factory=dict)
    epochs: list[EpochInfo] = msgspec.field(default_factory=list)
    last_restore_at: str | None = None


class Health(msgspec.Struct, kw_only=True):
    """``GET /api/health``: the server is up."""

    status: Literal["ok"]
    version: str
    active_runs: int
    auth_required_for_reads: bool
