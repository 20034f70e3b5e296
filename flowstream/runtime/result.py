"""What a run gives back: `RunResult` and its `DeadLetter`s."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from ..core.events import NodeStats

__all__ = ["DeadLetter", "RunResult", "RunStatus"]

RunStatus = Literal["completed", "failed", "cancelled"]


class DeadLetter(msgspec.Struct, frozen=True, kw_only=True):
    """An item a node could not process, with the reason.

    Attributes:
        node_id: The node that gave up on the item.
        reason: The error text (or the node's own reason).
        item: The input that failed (for multi-input calls, a dict by port).
        error_type: The exception's class name, if an exception was raised.
        instance: For a node with ``parallelism`` > 1, which of its
            instances (from 0); ``node_id`` is the declared node's.
        instances: How many instances that node runs.
    """

    node_id: str
    reason: str
    item: Any = None
    error_type: str | None = None
    instance: int | None = None
    instances: int | None = None

    @property
    def where(self) -> str:
        """The node that gave up on it, as ``node 'count'`` or with its instance.

        A node with ``parallelism`` > 1 reads ``node 'count' (instance 1 of 2)``.
        """
        if self.instance is None:
            return f"node {self.node_id!r}"
        return f"node {self.node_id!r} (instance {self.instance} of {self.instances})"


class RunResult(msgspec.Struct, kw_only=True):
    """The outcome of a run.

    Attributes:
        run_id: The run's id (also on every event).
        status: ``completed``, ``failed`` or ``cancelled``.
        outputs: For every port with no outgoing connection, the values it
            emitted: ``{node_id: {port: [values]}}`` (terminal nodes, and in
            stream mode only ``sink.collect`` nodes).
        dead_letters: Items that went to an unconnected ``error`` port (up to
            ``max_dead_letters``).
        dead_letters_not_kept: Dead letters past that cap: counted in the
            nodes' stats and published as ``dead_letter`` events, not kept.
        outputs_dropped: Per ``sink.collect`` node that reached its
            ``max_items``: how many of its oldest items its outputs let go
            (absent: none).
        stats: Per-node counters.
        error: What failed the run, naming the node.
        duration_s: Wall time of the run.
        attempts: How many times the workflow ran (``retry_workflow``).
        skipped: Set when nothing ran, saying why: the checkpoint store
            holds a completed run of this workflow (rerun with ``fresh`` to
            start over). The status is then ``completed``.
    """

    run_id: str
    status: RunStatus
    outputs: dict[str, dict[str, list[Any]]] = msgspec.field(default_factory=dict)
    dead_letters: list[DeadLetter] = msgspec.field(default_factory=list)
    dead_letters_not_kept: int = 0
    outputs_dropped: dict[str, int] = msgspec.field(default_factory=dict)
    stats: dict[str, NodeStats] = msgspec.field(default_factory=dict)
    error: str | None = None
    duration_s: float = 0.0
    attempts: int = 1
    skipped: str | None = None

    @property
    def ok(self) -> bool:
        """The run completed."""
        return self.status == "completed"

    def output(self, node_id: str, port: str = "out") -> list[Any]:
        """Return what a node emitted on a port (empty if nothing).

        Raises:
            KeyError: The node has no collected outputs at all.
        """
        return self.outputs[node_id].get(port, [])
