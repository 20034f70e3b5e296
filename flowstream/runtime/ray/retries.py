"""``retry_workflow`` with checkpoints on Ray: a failed attempt resumes from its epoch.

Without a store, a run that fails under ``error_handling: retry_workflow``
starts again from scratch (`RayExecutor._attempts`). With one, the next
attempt starts, in new actors, from the last epoch committed (stream mode:
sources at their offsets, keyed state and the exactly-once sinks as they
were then), or in DAG mode without calling the nodes that completed. Each
attempt is a run of its own, as on the local backend (a run id, its start
and end events), and between two of them a `RunRestarted` says from where
the next one goes on.

Attempts are counted apart from the rollbacks after an actor died (bounded
by ``checkpoint.max_restarts``): a node that fails is a failure of the
workflow, a process that dies is not.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...core.events import RunRestarted
from ...core.workflow import RetryWorkflow

if TYPE_CHECKING:
    from ...core.workflow import Workflow
    from ..events import EventBus
    from ..result import RunResult

__all__ = ["announce_retry", "may_retry"]


def may_retry(workflow: Workflow, result: RunResult, retries: int) -> bool:
    """Whether a failed attempt is run again (``retries`` were already)."""
    policy = workflow.error_handling
    return (
        result.status == "failed"
        and isinstance(policy, RetryWorkflow)
        and retries + 1 < policy.max_attempts
    )


def announce_retry(
    bus: EventBus,
    workflow: Workflow,
    result: RunResult,
    retry: int,
    from_epoch: int | None,
) -> None:
    """Publish the `RunRestarted` between a failed attempt and retry ``retry``.

    Args:
        bus: The run's bus.
        workflow: The workflow (its ``retry_workflow`` policy).
        result: The failed attempt's result (its run id and error).
        retry: Which retry this is, from 1.
        from_epoch: The last committed epoch the retry resumes from (None
            in DAG mode).
    """
    policy = workflow.error_handling
    assert isinstance(policy, RetryWorkflow)
    bus.emit(
        RunRestarted,
        result.run_id,
        attempt=retry,
        reason=result.error or "the run failed",
        delay_s=0.0,
        max_attempts=policy.max_attempts - 1,
        checkpointed=True,
        from_epoch=from_epoch,
    )
