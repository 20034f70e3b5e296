"""The driver's health check of a run's actors.

An actor whose process dies is noticed at once: the driver awaits every
slot's ``run`` call, and Ray fails it when the worker goes (measured here:
tens of milliseconds after a ``SIGKILL``, busy or idle). What that misses
is an actor that is alive but does not answer: its process stopped
(``SIGSTOP``, a debugger), wedged in code that never yields, or on a machine
cut off from the cluster, which Ray itself takes many seconds to give up on.
Its ``run`` call then never ends, and neither does the run.

So the driver pings each actor every `PING_S` (`SlotActor.ping`, answered
on the actor's event loop). One whose ping has not answered after
``RunOptions.health_timeout_s`` (15 s unless set) is taken for dead: the
executor kills it and fails the run naming its nodes, or, under checkpoints,
rolls every slot back to the last committed epoch. The bound is generous on
purpose: a node that blocks its process's event loop (a synchronous call in
a one-shot node) keeps pings waiting as long, and a healthy run must not be
killed for it.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import ray

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

__all__ = ["PING_S", "watch_health"]

PING_S = 0.5
"""Seconds between two pings of one actor."""


async def watch_health(
    actors: Sequence[Any],
    runs: Sequence[asyncio.Task[None]],
    limit: float,
    unresponsive: Callable[[int, str], None],
) -> None:
    """Ping every actor until the ``runs`` end; report one that stops answering.

    Args:
        actors: The slots' actors.
        runs: Each slot's run, watched: the check ends with the last.
        limit: Seconds an actor may leave a ping unanswered.
        unresponsive: Called once with the slot and why, for the first
            actor that did not answer in time.
    """
    checks = [asyncio.ensure_future(_ping(a, limit)) for a in actors]
    try:
        waiting = {*checks, *runs}
        while not all(r.done() for r in runs):
            await asyncio.wait(waiting, return_when="FIRST_COMPLETED")
            for i, check in enumerate(checks):
                if check.done() and check.result() is not None:
                    unresponsive(i, str(check.result()))
                    return
            waiting = {*(c for c in checks if not c.done()), *runs}
    finally:
        for c in checks:
            c.cancel()


async def _ping(actor: Any, limit: float) -> str | None:
    """Ping ``actor`` every `PING_S` till it dies; why, if it stops answering."""
    while True:
        sent = time.monotonic()
        try:
            async with asyncio.timeout(limit):
                await actor.ping.remote()
        except TimeoutError:
            return (
                f"it has not answered a health check for {limit:g} s "
                "(its process stopped, hung or cut off)"
            )
        except ray.exceptions.RayError:
            return None  # it died: its run's watcher says so
        await asyncio.sleep(max(0.0, PING_S - (time.monotonic() - sent)))
