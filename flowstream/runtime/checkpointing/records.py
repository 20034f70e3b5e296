"""What the checkpoint store records, and how a run is known in it.

A run's key is its workflow's content (`workflow_key`), so the same workflow
against the same store resumes; the records (`RunRecord`, `EpochRecord`,
`PoisonRecord`) are what `CheckpointStore.runs` and ``flowstream
checkpoints`` read back; a failing item is known by `record_fingerprint`.
"""

from __future__ import annotations

import hashlib
import time
from typing import TYPE_CHECKING, Any

import msgspec

from ...errors import FlowstreamError

if TYPE_CHECKING:
    from ...core.workflow import Workflow

__all__ = [
    "EPOCH_LOG",
    "AlreadyCompleted",
    "CheckpointError",
    "EpochRecord",
    "PoisonRecord",
    "RunRecord",
    "record_fingerprint",
    "workflow_key",
]

EPOCH_LOG = 20
"""How many of a run's latest epochs the store keeps in its log."""


class CheckpointError(FlowstreamError):
    """The checkpoint store cannot be opened or is not a flowstream store."""


class AlreadyCompleted(CheckpointError):
    """The store says this workflow's run completed: there is nothing to do.

    Not a failure: rerunning a completed run would write its whole output
    to its sinks a second time. Start over deliberately with ``fresh``
    (``flowstream run --fresh``, ``RunOptions(fresh=True)``).

    Attributes:
        run_key: The run's key in the store.
        epoch: Stream mode: the run's last (final) epoch; None in DAG mode.
        finished: When it completed (seconds since the epoch).
    """

    def __init__(self, run_key: str, epoch: int | None, finished: float) -> None:
        self.run_key = run_key
        self.epoch = epoch
        self.finished = finished
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(finished))
        at = f" at epoch {epoch}" if epoch is not None else ""
        msg = (
            f"already completed{at} on {when}; nothing to do — use --fresh "
            "(RunOptions.fresh) to start over"
        )
        super().__init__(msg)


class EpochRecord(msgspec.Struct, frozen=True):
    """One committed epoch of a stream run (the store keeps the last 20)."""

    epoch: int
    started: float
    """When its barrier was triggered (seconds since the epoch)."""
    committed: float
    """When its transaction committed."""
    size: int
    """Bytes of its snapshot (every node's encoded state)."""

    @property
    def duration_s(self) -> float:
        """Seconds from the barrier to the commit."""
        return max(0.0, self.committed - self.started)


class RunRecord(msgspec.Struct, frozen=True):
    """One run in a checkpoint store, as `CheckpointStore.runs` lists it."""

    run_key: str
    workflow: str
    status: str
    started: float
    updated: float
    attempts: int
    nodes_done: int
    """DAG mode: one-shot nodes whose outputs are recorded."""
    epoch: int | None
    """Stream mode: the last committed epoch (None: none yet)."""
    positions: dict[str, dict[str, Any]] = msgspec.field(default_factory=dict)
    """Stream mode: each node's small state values in that epoch (source
    offsets, sequences, sinks' committed positions), by node id."""
    parallelism: dict[str, int] = msgspec.field(default_factory=dict)
    """Stream mode: the instances of each node running more than one, in
    that epoch."""
    rescaled: dict[str, dict[str, int]] = msgspec.field(default_factory=dict)
    """Stream mode: the nodes whose state was redistributed to another
    parallelism at a restore, with ``from``, ``to`` (instances), ``epoch``
    (the epoch restored) and ``keys`` (entries moved); the last move of each."""
    epochs: list[EpochRecord] = msgspec.field(default_factory=list)
    """Stream mode: the latest epochs (up to `EPOCH_LOG`), newest first."""
    restored: float | None = None
    """When the run last resumed from the store (None: never)."""


class PoisonRecord(msgspec.Struct, frozen=True):
    """A record that failed a run at a node, and how many runs it failed."""

    node_id: str
    fingerprint: str
    record: str
    """The record as JSON, cut to 500 characters."""
    reason: str
    count: int


def workflow_key(workflow: Workflow) -> str:
    """A stable identity for a workflow's content (nodes, config, edges).

    Where and how often it is checkpointed is not part of it: changing the
    interval or the poison policy resumes the same run. Neither is
    ``parallelism`` (the workflow's or a node's): a run restarted with other
    parallelisms resumes, its keyed state moved by key group
    (`flowstream.runtime.checkpointing.rescale`).
    """
    bare = msgspec.structs.replace(
        workflow,
        checkpoint=None,
        parallelism=1,
        nodes=[
            msgspec.structs.replace(n, parallelism=None)
            if n.parallelism is not None
            else n
            for n in workflow.nodes
        ],
    )
    # Decoded once, as a file would be: typed fields take their declared
    # types (a delay_ms of 50 becomes 50.0), so the same workflow built in
    # Python or read from a file has one key.
    # A live callable (`flowstream.core.live`) counts by its name.
    encoded = msgspec.json.encode(bare, enc_hook=str)
    canonical = msgspec.json.decode(encoded, type=type(bare))
    document = msgspec.json.encode(canonical, order="deterministic")
    return hashlib.sha256(document).hexdigest()[:16]


def record_fingerprint(item: Any) -> tuple[str, str]:
    """A stable fingerprint of a record, and a short JSON rendering of it."""
    try:
        blob = msgspec.msgpack.encode(item, order="deterministic")
        shown = msgspec.json.encode(item, order="deterministic").decode()
    except (TypeError, OverflowError, UnicodeDecodeError):
        shown = repr(item)
        blob = shown.encode()
    if len(shown) > 500:
        shown = shown[:497] + "..."
    return hashlib.sha256(blob).hexdigest()[:32], shown
