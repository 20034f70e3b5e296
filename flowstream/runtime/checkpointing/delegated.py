"""A coordinator whose epochs are decided elsewhere (one process of many).

When a run is spread over processes (the Ray backend), one coordinator in the
driver owns the store and decides every commit; each process runs its part
of the graph with a `DelegatedCoordinator` in place of its own
`store.Coordinator`. The executor uses it exactly as it uses the local one
(barriers, alignment, snapshots, held sources); what differs is where an
epoch starts and who commits it:

* an epoch starts either by the driver's call (`DelegatedCoordinator
  .checkpoint`: the process's own sources are asked for it) or by a barrier
  that came in-band from another process (`DelegatedCoordinator.advance`),
  whichever comes first;
* once every segment of the process has reported, `checkpoint` returns the
  process's node states to the driver, which commits the epoch in its store
  once every process has, and then calls `DelegatedCoordinator.decide` here:
  the sources go on and the sinks' commit hooks run;
* the epochs at the start (0) and after the drain are snapshots of the
  whole process (`commit`): it hands them over (`ready_states`) and waits
  for the driver's decision.

Pure asyncio, no Ray: the driver talks to it through whatever carries calls
between its processes.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from .barriers import POLL_INTERVAL
from .coordinator import Coordinator

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping

    from .barriers import SourceBarriers

__all__ = ["CheckpointsUnder", "DelegatedCoordinator"]


class DelegatedCoordinator(Coordinator):
    """This process's side of a coordinator that runs elsewhere.

    Args:
        first_epoch: The number of the next epoch (the last committed + 1).
        in_band: The source nodes whose barriers come in-band from another
            process (never asked for an epoch here).
    """

    def __init__(self, first_epoch: int, in_band: frozenset[str] = frozenset()) -> None:
        # No store here: the driver's coordinator commits (`commit` below).
        super().__init__(None, "", 0.0, 0, first_epoch)  # type: ignore[arg-type]
        self.in_band = in_band
        self._sources: dict[str, SourceBarriers] = {}
        self._finished: asyncio.Event | None = None
        self._stopping: Callable[[], bool] = lambda: False
        self._on_commit: Callable[[int], Awaitable[None]] | None = None
        self._ready = asyncio.Event()  # a whole-process snapshot is ready
        self._waiting = False  # `commit` waits for the driver
        self._decided = asyncio.Event()
        self._ended = asyncio.Event()  # the run ended: nothing more comes
        self._attached = asyncio.Event()

    def attach(
        self,
        sources: Mapping[str, SourceBarriers],
        *,
        finished: asyncio.Event,
        stopping: Callable[[], bool],
        committed: Callable[[int], Awaitable[None]],
    ) -> None:
        """The executor hands over its run (called once its segments exist).

        Args:
            sources: Each source segment's barriers, by its head node's id.
            finished: Set when every segment has ended.
            stopping: Whether the run is stopping.
            committed: Runs the commit hooks of an epoch.
        """
        self._sources = {k: v for k, v in sources.items() if k not in self.in_band}
        self._finished = finished
        self._stopping = stopping
        self._on_commit = committed
        self._attached.set()

    def ended(self) -> None:
        """The run is over: a caller waiting for states gets None."""
        self._ended.set()
        self.active = False
        self.released.set()

    # --- what the executor calls ---------------------------------------------

    def advance(self, epoch: int) -> None:
        """A barrier of ``epoch`` came in-band: the epoch has started here too."""
        while self.epoch < epoch:
            self.trigger()

    async def commit(self, finish: str | None = None) -> None:
        """Hand over a whole-process snapshot; wait for the driver's decision.

        The executor calls it for the epoch at the start and the one after
        the drain; the driver picks the states up (`ready_states`) and
        answers with `decide`, which also names the epoch. ``finish`` is
        ignored: the driver records the run's status itself.
        """
        self._decided.clear()
        self._waiting = True
        self._ready.set()
        try:
            await self._decided.wait()
        finally:
            self._waiting = False

    # --- what the driver calls ---------------------------------------------

    async def checkpoint(self, epoch: int) -> dict[str, bytes] | None:
        """Start ``epoch`` here; its node states once every segment reported.

        None if the epoch is abandoned: a source ended, the run stops or
        ends (the snapshot after the drain follows).
        """
        if not self._attached.is_set():
            await _first(self._attached, self._ended)
        if not self.active or epoch < self.epoch:
            return None
        self.advance(epoch)
        for source in self._sources.values():
            source.request(epoch)
        finished = self._finished
        while not self.all_reported.is_set():
            if (
                self._stopping()
                or not self.active
                or (finished is not None and finished.is_set())
            ):
                return None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(POLL_INTERVAL):
                    await self.all_reported.wait()
            for source in self._sources.values():
                source.poll()
        return self.states if self.epoch == epoch else None

    async def ready_states(self) -> dict[str, bytes] | None:
        """Wait for a whole-process snapshot (`commit`); None if the run ended."""
        await _first(self._ready, self._ended)
        if not self._ready.is_set():
            return None
        self._ready.clear()
        return self.states

    def stop_epochs(self) -> None:
        """No more epochs: sources held for one go on (the final one follows)."""
        self.active = False
        self.released.set()

    async def decide(self, epoch: int) -> None:
        """The driver committed ``epoch``: release the sources, commit the sinks.

        A whole-process snapshot waiting in `commit` goes on with the epoch's
        number (its caller runs the commit hooks).
        """
        self.epoch = epoch if self._waiting else max(self.epoch, epoch)
        self.committed = epoch
        self.released.set()
        if self._waiting:
            self._decided.set()
            return
        if self._on_commit is not None:
            await self._on_commit(epoch)


async def _first(*events: asyncio.Event) -> None:
    """Wait until one of ``events`` is set."""
    waits = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()


@runtime_checkable
class CheckpointsUnder(Protocol):
    """An executor that can take checkpoints for a coordinator elsewhere."""

    def checkpoint_under(
        self,
        coord: DelegatedCoordinator,
        epoch: int,
        states: dict[str, bytes],
        poison: dict[str, dict[str, str]] | None = None,
    ) -> None:
        """Checkpoint under ``coord``, from ``epoch`` and ``states``.

        ``poison``: the records to dead-letter (`checkpointing.poison`).
        """
        ...

    def failed_record(self) -> tuple[str, Any] | None:
        """The node instance and record the run failed on, if it did."""
        ...

    def failed_with(self) -> BaseException | None:
        """What the node the run failed on raised, if a node failed."""
        ...
