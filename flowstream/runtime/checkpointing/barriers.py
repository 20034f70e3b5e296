"""Where an epoch's barriers start, how they are aligned, when it commits.

The barrier state of each segment belongs here, not to the executor:

* `SourceBarriers`, one per source: the one route by which an epoch starts.
  The coordinator asks for an epoch (`SourceBarriers.request`). The source
  takes it between two batches (`SourceBarriers.take_due`); a source that is
  at rest (waiting on its own input, holding nothing) is marked by the
  coordinator at once instead (`SourceBarriers.poll`), since its next batch
  may be far off. Either way the epoch moves from *due* to *gate* in one
  place, and the source holds further batches back until the epoch commits
  (`SourceBarriers.hold`).
* `Alignment`, one per consumer: counts an epoch's barriers over its
  producers and says when the last one came, the moment the consumer may
  snapshot and pass the barrier on.
* `run_epochs`: the coordinator's loop. Every interval it triggers an epoch,
  asks every source for it, and commits once every segment has reported.

An executor supplies what only it knows: whether a source is at rest, how to
mark a barrier now, and what to do after a commit. docs/reliability.md has
the contract.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from .coordinator import Coordinator

__all__ = ["Alignment", "SourceBarriers", "run_epochs"]

POLL_INTERVAL = 0.002  # seconds between looks at sources that owe an epoch


class Alignment:
    """Counts one consumer's barriers per epoch over its producers.

    Args:
        producers: How many producers send it each barrier.
    """

    __slots__ = ("_seen", "producers")

    def __init__(self, producers: int = 0) -> None:
        self.producers = producers
        self._seen: dict[int, int] = {}

    def arrived(self, epoch: int) -> bool:
        """A barrier of ``epoch`` came; True when it was the last producer's."""
        seen = self._seen.get(epoch, 0) + 1
        if seen >= self.producers:
            self._seen.pop(epoch, None)
            return True
        self._seen[epoch] = seen
        return False


class SourceBarriers:
    """A source's epochs: which one it owes, which one it waits to commit.

    Args:
        at_rest: Whether the source waits on its own input now, with nothing
            held anywhere in its segment: what it emitted is all downstream,
            so a barrier marked now is exact.
        mark_now: Snapshot the segment and emit the barrier, without awaiting.
    """

    __slots__ = ("_at_rest", "_mark_now", "due", "gate")

    def __init__(
        self, at_rest: Callable[[], bool], mark_now: Callable[[int], None]
    ) -> None:
        self._at_rest = at_rest
        self._mark_now = mark_now
        self.due: int | None = None  # asked for, not marked yet
        self.gate: int | None = None  # marked, not committed yet: hold on

    @property
    def pending(self) -> bool:
        """Whether the source owes a barrier or waits for a commit."""
        return self.due is not None or self.gate is not None

    def request(self, epoch: int) -> None:
        """The coordinator asks for ``epoch``; marked now if at rest."""
        self.due = epoch
        self.poll()

    def poll(self) -> bool:
        """Mark the owed epoch now if the source is at rest; True if marked."""
        if self.due is None or not self._at_rest():
            return False
        self._mark_now(self._take())
        return True

    def take_due(self) -> int | None:
        """Between two batches: the epoch to mark now (the source marks it)."""
        return None if self.due is None else self._take()

    def _take(self) -> int:
        epoch = self.due
        assert epoch is not None
        self.due, self.gate = None, epoch
        return epoch

    async def hold(self, coord: Coordinator) -> None:
        """Wait until the marked epoch commits (or checkpoints stop)."""
        while self.gate is not None and coord.active:
            await coord.released.wait()
            if coord.committed >= self.gate:
                self.gate = None


async def run_epochs(
    coord: Coordinator,
    sources: Sequence[SourceBarriers],
    *,
    finished: asyncio.Event,
    stopping: Callable[[], bool],
    committed: Callable[[int], Awaitable[None]],
) -> None:
    """Trigger an epoch every interval; commit it once every segment reported.

    Args:
        coord: The run's coordinator.
        sources: Every source's barrier state.
        finished: Set when every segment has ended (no more epochs).
        stopping: Whether the run is stopping (an epoch in flight is
            abandoned; the final checkpoint after the drain covers it).
        committed: Called with each epoch once it is in the store.
    """
    while True:
        try:
            async with asyncio.timeout(coord.interval):
                await finished.wait()
            return
        except TimeoutError:
            pass
        if stopping() or not coord.active:
            return
        epoch = coord.trigger()
        for source in sources:
            source.request(epoch)
        while not coord.all_reported.is_set():
            if stopping() or finished.is_set() or not coord.active:
                return  # this epoch is abandoned; the final checkpoint follows
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(POLL_INTERVAL):
                    await coord.all_reported.wait()
            for source in sources:
                source.poll()
        await coord.commit()
        await committed(epoch)
