"""What a workflow does when things fail: retries, error handling, checkpoints.

Plain settings (msgspec structs), read from workflow files and checked when
decoded; `flowstream.core.workflow` re-exports them. The executor applies
them (`runtime.local.failures`, `runtime.checkpointing`).
"""

from __future__ import annotations

import math
from typing import Literal, TypeAlias

import msgspec

from .backoff import Backoff
from .resources import FilePath

__all__ = [
    "Checkpoint",
    "ContinueOnError",
    "ErrorHandling",
    "RetryPolicy",
    "RetryWorkflow",
    "StopWorkflow",
]


class RetryPolicy(Backoff, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How often to try a failing node call again, and how long to wait.

    The wait before attempt *n+1* is ``delay_ms * backoff_multiplier**(n-1)``,
    capped at ``max_delay_ms`` (the fields of `Backoff`, checked there).

    Attributes:
        max_attempts: Attempts in all, >= 1 (1 never retries).
    """

    max_attempts: int = 3

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            msg = f"max_attempts must be >= 1, got {self.max_attempts}"
            raise ValueError(msg)
        super().__post_init__()


class _Policy(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    forbid_unknown_fields=True,
    tag_field="mode",
):
    pass


class StopWorkflow(_Policy, frozen=True, tag="stop_workflow"):
    """A failure fails the run: the other nodes are cancelled (the default)."""


class ContinueOnError(_Policy, frozen=True, tag="continue_on_error"):
    """A failing item goes to the node's ``error`` port and the run goes on."""


class RetryWorkflow(_Policy, frozen=True, tag="retry_workflow"):
    """A failure restarts the whole run, up to ``max_attempts`` runs in all."""

    max_attempts: int = 3

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            msg = f"max_attempts must be >= 1, got {self.max_attempts}"
            raise ValueError(msg)


ErrorHandling: TypeAlias = StopWorkflow | ContinueOnError | RetryWorkflow


class Checkpoint(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    forbid_unknown_fields=True,
    omit_defaults=True,
):
    """Where a run keeps its checkpoints (a SQLite file) and how often.

    Attributes:
        path: The SQLite store.
        interval_ms: Milliseconds between stream epochs (and between commits
            of completed one-shot nodes in DAG mode).
        max_restarts: How many runs in a row may fail on the same record at
            the same node before it counts as a poison record.
        poison: What a restart does with a poison record: ``stop`` refuses to
            run, naming it; ``dead_letter`` sends it to the node's dead
            letters (with the reason) when it fails again, and goes on.
    """

    path: FilePath
    interval_ms: float = 1000.0
    max_restarts: int = 3
    poison: Literal["stop", "dead_letter"] = "stop"

    def __post_init__(self) -> None:
        if not 0 <= self.interval_ms < math.inf:
            msg = f"interval_ms must be a finite number >= 0, got {self.interval_ms}"
            raise ValueError(msg)
        if self.max_restarts < 1:
            msg = f"max_restarts must be >= 1, got {self.max_restarts}"
            raise ValueError(msg)
