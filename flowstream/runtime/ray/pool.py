"""Idle slot actors kept between runs of one driver, to be reused.

Starting an actor starts a worker process: 0.9-1.7 s for the two slots of a
run on the 2-core development machine, whatever the run's length, so a
second run in the same driver (a notebook, a script, a test suite) paid it
again. An actor whose run completed is handed back here instead of killed,
and the next run takes it with `SlotActor.assign` (which drops everything of
the earlier run).

Bounds and policy:

- Only anonymous actors come here: a checkpointed run names its actors so
  that a later attempt can fence them, and always starts new ones.
- Only after a run whose every slot completed: after a failure, a cancel or
  a death, the run's actors are killed (whatever state they were left in).
- At most `MAX_IDLE` actors wait; past it they are killed. An idle actor
  holds a worker process (its memory) but no CPU: slot actors reserve no
  resources while they run (Ray's default for actors).
- The pool belongs to one connection to Ray: after `ray.shutdown` and a new
  `ray.init` (another job), the old handles are dropped unused.
- An actor that died while idle fails its `assign`; a new one replaces it.

Reused processes keep what a run imported (modules, node types sent by
value), as Ray's own workers do between tasks.
"""

from __future__ import annotations

from typing import Any

import ray

__all__ = ["MAX_IDLE", "give_back", "idle", "take"]

MAX_IDLE = 8

_idle: list[Any] = []
_job: str | None = None


def _of_this_job() -> list[Any]:
    """The idle actors, once those of an earlier connection to Ray are dropped."""
    global _job
    job = str(ray.get_runtime_context().get_job_id())
    if job != _job:
        _idle.clear()  # handles of another connection: gone with it
        _job = job
    return _idle


def take() -> Any | None:
    """An idle actor of this connection to Ray, or None."""
    idle = _of_this_job()
    return idle.pop() if idle else None


def give_back(actors: list[Any]) -> None:
    """Keep the actors of a completed run for the next (up to `MAX_IDLE`)."""
    idle = _of_this_job()
    for a in actors:
        if len(idle) < MAX_IDLE:
            idle.append(a)
        else:
            ray.kill(a)


def idle() -> int:
    """How many actors wait now (for tests)."""
    return len(_idle)
