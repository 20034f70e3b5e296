"""The epoch coordinator of one run, and the barrier that marks an epoch.

`Coordinator` is the one place a stream run's epoch is triggered and its
commit decided (in the `CheckpointStore`); `Barrier` is the in-band control
message that carries an epoch through the channels.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from ..channel import Control

if TYPE_CHECKING:
    from .store import CheckpointStore

__all__ = ["Barrier", "Coordinator"]


class Barrier(Control):
    """In-band marker of checkpoint epoch ``epoch``.

    Like every control message it does not count against a channel's capacity
    and keeps its place among the batches.
    """

    __slots__ = ("epoch",)

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def __repr__(self) -> str:
        return f"Barrier({self.epoch})"


class Coordinator:
    """Runs stream-mode checkpoints for one run (aligned barriers, paused sources).

    Every ``interval`` the sources inject a `Barrier` for the next epoch
    between two batches and then hold further batches back. Each segment
    passes the barrier once it has processed everything before it on all of
    its inputs, snapshots its nodes' state and forwards the barrier. When
    every segment has reported, one SQLite transaction records all states
    (source offsets included) and the epoch is committed; only then do the
    sources go on. Holding the sources makes alignment exact at fan-in points
    (no item from after a barrier can overtake another producer's barrier).

    Args:
        store: The open checkpoint store.
        run_key: The run's key in it.
        interval: Seconds between epochs.
        segments: How many segments must report each epoch.
        first_epoch: The number of the next epoch (after a restore).
    """

    def __init__(
        self,
        store: CheckpointStore,
        run_key: str,
        interval: float,
        segments: int,
        first_epoch: int = 1,
    ) -> None:
        self.store = store
        self.run_key = run_key
        self.interval = interval
        self.segments = segments
        self.epoch = first_epoch - 1  # the last epoch triggered
        self.committed = first_epoch - 1
        self.states: dict[str, bytes] = {}
        # Stored beside the node states in every epoch: the run's parallel
        # layout (`rescale.layout_states`), so a restore at another
        # parallelism knows where the state came from.
        self.layout: dict[str, bytes] = {}
        self.reported = 0
        self.triggered_at: float | None = None  # time.time() of the last trigger
        self.all_reported = asyncio.Event()
        self.released = asyncio.Event()
        self.released.set()
        self.active = True  # False once a source has ended: no new epochs

    @property
    def in_progress(self) -> bool:
        """An epoch was triggered and is not committed yet."""
        return self.epoch > self.committed

    def trigger(self) -> int:
        """Start the next epoch; the caller tells the sources."""
        self.epoch += 1
        self.triggered_at = time.time()
        self.states = {}
        self.reported = 0
        self.all_reported.clear()
        self.released.clear()
        return self.epoch

    def report(self, states: dict[str, bytes]) -> None:
        """A segment passed the current barrier with these node states."""
        self.states.update(states)
        self.reported += 1
        if self.reported >= self.segments:
            self.all_reported.set()

    async def commit(self, *, finish: str | None = None) -> None:
        """Record the epoch's states in one transaction, then release sources.

        ``finish``: the run's final status, for its last epoch
        (`CheckpointStore.commit_epoch`).
        """
        states = {**self.states, **self.layout} if self.layout else self.states
        await self.store.commit_epoch(
            self.run_key, self.epoch, states, self.triggered_at, finish=finish
        )
        self.committed = self.epoch
        self.released.set()
