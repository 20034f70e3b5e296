"""A run against a checkpoint store: what the last run left, and its end.

Before a checkpointed run starts, the store says whether the workflow
completed before (then nothing runs: `skipped`), which one-shot nodes a
killed DAG run finished, the last committed epoch of a stream run and its
node states (moved to the workflow's parallelism if it changed:
`checkpointing.rescale`), and which records failed runs before (poison
records: refuse to run, or send them to the dead letters, as
``checkpoint.poison`` says).
After the run, a failure on a record is counted and the run's status
recorded.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ...core.events import WorkflowCompleted
from ..checkpointing.poison import count_failure, poison_for, refusal
from ..checkpointing.records import AlreadyCompleted, workflow_key
from ..checkpointing.rescale import RescaleError, announce_moves, restore
from ..checkpointing.store import CheckpointStore
from ..result import RunResult

if TYPE_CHECKING:
    from pathlib import Path

    from ...core.workflow import Checkpoint
    from .executor import WorkflowExecutor

__all__ = ["reload_epoch", "run_checkpointed", "skipped"]

_log = logging.getLogger("flowstream.checkpoint")


async def run_checkpointed(
    ex: WorkflowExecutor, path: str | Path, interval: float, policy: Checkpoint
) -> RunResult:
    """Run ``ex`` against the store at ``path`` (``interval`` ms between epochs)."""
    async with CheckpointStore(path, interval) as store:
        key = workflow_key(ex.graph.workflow)
        try:
            # Stream mode: the run's row goes with its first epoch (epoch 0
            # for a new run), one durable transaction instead of two.
            ex._restored = await store.begin(
                key,
                ex.graph.workflow.name,
                fresh=ex.options.fresh,
                defer=ex.mode == "stream",
            )
        except AlreadyCompleted as done:
            return skipped(ex, str(done))
        ex._epoch, stored = await store.latest_epoch(key)
        try:
            restored = restore(ex.graph, stored, ex._epoch)
        except RescaleError as exc:
            result = _failed(ex, str(exc))
            await store.finish(key, "failed")
            return result
        ex._restored_states = restored.states
        ex._layout = restored.layout
        if ex.graph.parallel is not None:
            # A one-shot node's recorded outputs hold for the items its
            # instance got, which depends on how many there were: an
            # instance's outputs are computed again.
            ex._restored = {
                nid: outputs
                for nid, outputs in ex._restored.items()
                if nid in ex.graph.nodes
                and ex.graph.nodes[nid].instance_of in (None, nid)
            }
        announce_moves(ex.bus, ex.run_id, restored.moved)
        ex._store = ex._completions = store
        ex._run_key = key
        ex._interval = interval / 1000.0
        refused, ex._poison = await poison_for(store, key, ex.graph, policy)
        if refused is not None:
            result = _failed(ex, refusal(refused))
        else:
            result = await ex._run_attempts()
            abort = ex._abort
            if result.status == "failed" and abort is not None and abort.node_id:
                failed_on = (abort.node_id, abort.item)
                result.error = await count_failure(
                    store, key, ex.graph, policy, failed_on, result.error or ""
                )
        if result.status == "completed" and ex._stopping:
            status = "stopped"  # drained on request: a restart resumes it
        else:
            status = result.status
        await store.finish(key, status)
        return result


async def reload_epoch(ex: WorkflowExecutor) -> None:
    """Before a ``retry_workflow`` attempt: resume from the last committed epoch.

    As a restart against the store would: the sources at that epoch's
    offsets, the state and the exactly-once sinks as they were then (not as
    the run began, which would write again what the epochs since committed).
    """
    if ex._store is None or ex.mode != "stream":
        return
    ex._epoch, stored = await ex._store.latest_epoch(ex._run_key)
    ex._restored_states = restore(ex.graph, stored, ex._epoch).states


def skipped(ex: WorkflowExecutor, why: str) -> RunResult:
    """The result of a run the store says completed before: nothing ran."""
    ex.bus.emit(WorkflowCompleted, ex.run_id, status="completed", duration_s=0.0)
    return RunResult(run_id=ex.run_id, status="completed", skipped=why)


def _failed(ex: WorkflowExecutor, error: str) -> RunResult:
    """The result of a run refused before it started."""
    ex.bus.emit(
        WorkflowCompleted, ex.run_id, status="failed", duration_s=0.0, error=error
    )
    return RunResult(
        run_id=ex.run_id,
        status="failed",
        outputs={},
        dead_letters=[],
        stats={},
        error=error,
        duration_s=0.0,
    )
