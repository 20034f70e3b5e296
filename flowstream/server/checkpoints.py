"""What a workflow's checkpoint store holds, for the API and the UI.

A workflow with ``checkpoint: {path: ...}`` keeps its checkpoints in a
SQLite file inside the server's data directory. `checkpoint_states` reads
that file (never creating it) and describes each run the store knows of
that workflow: its last committed epoch and when it was committed, how many
attempts it took (each one after the first restored from the store) and when
it last restored, the small per-node positions of that epoch (source
offsets, sink commits), and its latest epochs with their duration (barrier
to commit) and size (bytes of the snapshot).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

from ..runtime.checkpointing.store import CheckpointStore
from .datadir import DataDir
from .schemas import CheckpointState, EpochInfo, iso

if TYPE_CHECKING:
    from ..core.workflow import Workflow
    from .config import ServerConfig

__all__ = ["checkpoint_states"]


async def checkpoint_states(
    workflow: Workflow, config: ServerConfig
) -> list[CheckpointState]:
    """The checkpointed runs of ``workflow``, the latest commit first.

    Args:
        workflow: The workflow as submitted (its path relative to the data
            directory).
        config: The server's settings (where the data directory is).

    Returns:
        One entry per run the store holds of this workflow; empty when the
        workflow has no checkpoints or none were written yet.

    Raises:
        ValueError: The checkpoint path leaves the data directory.
    """
    if workflow.checkpoint is None:
        return []
    path = Path(DataDir.of(config).resolve(workflow.checkpoint.path))
    if not await asyncio.to_thread(path.is_file):
        return []
    async with CheckpointStore(path) as store:
        records = await store.runs()
    return [
        CheckpointState(
            run_key=r.run_key,
            status=r.status,
            started_at=iso(r.started),
            last_commit_at=iso(r.updated),
            attempts=r.attempts,
            restores=max(r.attempts - 1, 0),
            epoch=r.epoch,
            nodes_done=r.nodes_done,
            positions=r.positions,
            epochs=[
                EpochInfo(
                    epoch=e.epoch,
                    started_at=iso(e.started),
                    committed_at=iso(e.committed),
                    duration_ms=round(e.duration_s * 1000, 3),
                    size_bytes=e.size,
                )
                for e in r.epochs
            ],
            last_restore_at=None if r.restored is None else iso(r.restored),
        )
        for r in records
        if r.workflow == workflow.name
    ]
