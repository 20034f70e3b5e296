"""Checkpoints: the store, the epoch coordinator, poison records, fault points.

What an executor needs to take consistent checkpoints, in one place:

* `CheckpointStore` (``store``): one SQLite file per workflow run key: the
  runs, their committed epochs with every node's state, DAG completions (so a
  killed DAG run resumes without redoing finished one-shot nodes) and the
  records that failed runs (poison records, `PoisonRecord`);
* `Coordinator` (``coordinator``): the one place an epoch is triggered and the
  commit decided: every segment reports its snapshot for the epoch; once all
  have, the epoch is committed in one transaction and the sinks' commit hooks
  run;
* `Barrier`: the in-band control message a source emits to mark an epoch;
* ``faults``: ``FLOWSTREAM_FAULT=point[@epoch]`` kills the process at one of
  the protocol's points (`POINTS`), for crash tests.

The local executor drives barriers through its segments in
`flowstream.runtime.local.epochs`; a distributed executor implements the same
protocol: barriers in-band, snapshots handed to the one coordinator, commit
decided there. docs/reliability.md has the contract.
"""

from __future__ import annotations

from .coordinator import Barrier as Barrier, Coordinator as Coordinator
from .faults import POINTS as POINTS, fault_point as fault_point
from .records import (
    AlreadyCompleted as AlreadyCompleted,
    CheckpointError as CheckpointError,
    EpochRecord as EpochRecord,
    PoisonRecord as PoisonRecord,
    RunRecord as RunRecord,
    record_fingerprint as record_fingerprint,
    workflow_key as workflow_key,
)
from .store import CheckpointStore as CheckpointStore, resume_epoch as resume_epoch

__all__ = [
    "POINTS",
    "AlreadyCompleted",
    "Barrier",
    "CheckpointError",
    "CheckpointStore",
    "Coordinator",
    "EpochRecord",
    "PoisonRecord",
    "RunRecord",
    "fault_point",
    "record_fingerprint",
    "resume_epoch",
    "workflow_key",
]
