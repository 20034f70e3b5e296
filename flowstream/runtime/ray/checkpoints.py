"""The run's coordinator in the driver: epochs over every slot, one store.

Each slot's executor checkpoints for this coordinator
(`checkpointing.delegated`); the driver runs the protocol from here, with
calls to the slots' actors:

1. A fresh run first commits epoch 0: every slot's snapshot after its nodes
   started (``ready_states``), so a crash before the first epoch rolls the
   sinks back to where they began.
2. Every interval it starts the next epoch in every slot (``checkpoint``):
   each asks its own sources for it; barriers cross between processes
   in-band (`edges`) and are aligned where a node has several producers.
   Each call returns its slot's node states once every segment there has
   passed the barrier; with all of them, the epoch is committed in the
   store (one transaction) and every slot is told (``decide``): held
   sources go on, sinks make the epoch final.
3. Once a source ended or the run stops, no more epochs (``stop_epochs``);
   after the drain each slot hands over its final snapshot
   (``ready_states`` again) and the last epoch is committed.

An epoch that a slot abandons (a source ended meanwhile) is not committed;
the final one covers it. An actor that dies ends this loop (its call
raises); the executor rolls the run back.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import ray

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from ..checkpointing.store import CheckpointStore

__all__ = ["Checkpoints"]


class Checkpoints:
    """One attempt of a checkpointed run on Ray: the store and where it starts.

    Args:
        store: The open checkpoint store.
        run_key: The run's key in it.
        interval: Seconds between epochs.
        epoch: The last committed epoch (0: a fresh start).
        states: Its node states, by node id (fitted to this run's parallelism).
        layout: The run's layout entry (`rescale.layout_states`).
    """

    def __init__(
        self,
        store: CheckpointStore,
        run_key: str,
        interval: float,
        epoch: int,
        states: dict[str, bytes],
        layout: dict[str, bytes] | None = None,
    ) -> None:
        self.store = store
        self.run_key = run_key
        self.interval = interval
        self.epoch = epoch
        self.states = states
        self.layout = layout or {}
        """The run's parallel layout, stored beside every epoch's states."""
        self.committed = epoch
        """The last epoch committed (by this attempt, or before it)."""

    def restored(self, nodes: Sequence[str]) -> tuple[int, dict[str, bytes]]:
        """The last epoch and the states of ``nodes`` (one slot's share)."""
        mine = set(nodes)
        return self.epoch, {k: v for k, v in self.states.items() if k in mine}

    async def coordinate(
        self,
        actors: list[Any],
        runs: Sequence[asyncio.Task[None]],
        stopping: Callable[[], bool],
    ) -> None:
        """Run the epochs of one attempt (see the module docstring).

        Args:
            actors: The slots' actors.
            runs: Each slot's run, watched: one that ends stops the epochs.
            stopping: Whether the run stops (or is cancelled).
        """
        finals: list[asyncio.Task[Any]] = []
        try:
            await self._epochs(actors, runs, stopping, finals)
        except ray.exceptions.RayError:
            return  # an actor died: its run's watcher says so
        finally:
            for f in finals:
                f.cancel()

    async def _epochs(
        self,
        actors: list[Any],
        runs: Sequence[asyncio.Task[None]],
        stopping: Callable[[], bool],
        finals: list[asyncio.Task[Any]],
    ) -> None:
        epoch = self.epoch
        if epoch == 0:
            parts = await _all(a.ready_states.remote() for a in actors)
            if not await self._commit(actors, 0, parts):
                return
        finals.extend(
            asyncio.ensure_future(_get(a.ready_states.remote())) for a in actors
        )
        while True:
            done, _ = await asyncio.wait(
                [*finals, *runs], timeout=self.interval, return_when="FIRST_COMPLETED"
            )
            if done or stopping():
                break
            epoch += 1
            parts = await _all(a.checkpoint.remote(epoch) for a in actors)
            if not await self._commit(actors, epoch, parts):
                break  # abandoned: a source ended; the final epoch covers it
        await _all(a.stop_epochs.remote() for a in actors)
        parts = [await f for f in finals]
        await self._commit(actors, epoch + 1, parts)

    async def _commit(
        self, actors: list[Any], epoch: int, parts: list[dict[str, bytes] | None]
    ) -> bool:
        """Commit ``epoch`` if every slot sent its states; False if one did not."""
        states: dict[str, bytes] = {}
        for part in parts:
            if part is None:
                return False
            states.update(part)
        states.update(self.layout)
        await self.store.commit_epoch(self.run_key, epoch, states)
        self.committed = epoch
        await _all(a.decide.remote(epoch) for a in actors)
        return True


async def _get(ref: Awaitable[Any]) -> Any:
    """One actor call's result; None if its actor died (the watcher reports it)."""
    try:
        return await ref
    except ray.exceptions.RayError:
        return None


async def _all(refs: Any) -> list[Any]:
    """Every call's result, in order (raises if an actor died)."""
    return list(await asyncio.gather(*refs))


NAMESPACE = "flowstream"
"""The Ray namespace of checkpointed runs' actors (named, so a later driver
finds them)."""

FENCE_TIMEOUT_S = 30.0


def actor_name(run_key: str, attempt: str, slot: int) -> str:
    """The name of one slot's actor in one attempt of a checkpointed run."""
    return f"flowstream:{run_key}:{attempt}:{slot}"


async def fence(run_key: str) -> int:
    """Kill every actor an earlier attempt of ``run_key`` left; wait till dead.

    A driver killed with ``kill -9`` leaves its actors running until Ray
    notices; one of them still writing to a sink would undo the rollback of
    the next attempt. Returns how many were found.

    Raises:
        RuntimeError: One was still alive after `FENCE_TIMEOUT_S` seconds.
    """
    prefix = f"flowstream:{run_key}:"
    found = []
    for entry in ray.util.list_named_actors(all_namespaces=True):
        name, namespace = entry["name"], entry["namespace"]
        if namespace != NAMESPACE or not name.startswith(prefix):
            continue
        try:
            handle = ray.get_actor(name, namespace=NAMESPACE)
        except ValueError:
            continue  # gone meanwhile
        ray.kill(handle, no_restart=True)
        found.append((name, handle))
    deadline = time.monotonic() + FENCE_TIMEOUT_S
    for name, handle in found:
        while not await _dead(handle, deadline):
            if time.monotonic() >= deadline:
                msg = f"actor {name} of an earlier run is still alive after kill"
                raise RuntimeError(msg)
    return len(found)


async def _dead(handle: Any, deadline: float) -> bool:
    """Whether a call to the actor says it is dead (False: it answered)."""
    try:
        async with asyncio.timeout(max(0.1, deadline - time.monotonic())):
            await handle.ping.remote()
    except ray.exceptions.RayActorError:
        return True
    except TimeoutError:
        return False
    return False
