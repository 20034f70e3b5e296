"""Fault injection: kill the process at a named point of the checkpoint protocol.

Crash tests set ``FLOWSTREAM_FAULT=POINT`` (or ``POINT@EPOCH``) in a child
process's environment; when the run reaches that point (in that epoch, or the
first time), the process sends itself SIGKILL — no cleanup, no flush, exactly
like ``kill -9`` at that instant. Unset, each point costs one comparison.

Points, in protocol order:

``barrier_emitted``
    A source has sent barrier *e* downstream.
``snapshot``
    A segment has snapshotted its nodes' states for *e*.
``sink_barrier``
    The first barrier hook for *e* ran; the others have not (and the epoch
    is not committed). This is what the built-in sinks do for an epoch:
    ``file.sink`` has fsynced its file and noted its length, a keyless
    ``sqlite.sink`` has noted its last rowid. Also at epoch 0, the start.
``before_commit``
    The store has written epoch *e* inside its transaction, before COMMIT.
``after_commit``
    Epoch *e* is committed; no sink has been told yet.
``sink_commit``
    The first commit hook for *e* ran; the others have not. Among the
    built-in nodes only ``ws.source`` with a ``journal`` has one (it prunes
    the journal); the built-in sinks make an epoch final at their barrier
    (``sink_barrier``) and need none. User sinks' ``ctx.on_commit`` hooks.

Without ``@EPOCH`` a point fires the first time it is reached, epoch 0 (the
start of a fresh run) included.
"""

from __future__ import annotations

import os
import signal

__all__ = ["POINTS", "fault_point"]

POINTS = (
    "barrier_emitted",
    "snapshot",
    "sink_barrier",
    "before_commit",
    "after_commit",
    "sink_commit",
)


def _armed() -> tuple[str, int | None] | None:
    spec = os.environ.get("FLOWSTREAM_FAULT")
    if not spec:
        return None
    point, _, epoch = spec.partition("@")
    if point not in POINTS:
        msg = f"FLOWSTREAM_FAULT: unknown point {point!r}; known: {', '.join(POINTS)}"
        raise ValueError(msg)
    return point, int(epoch) if epoch else None


_ARMED = _armed()


def fault_point(point: str, epoch: int) -> None:
    """SIGKILL this process if ``FLOWSTREAM_FAULT`` names this point (and epoch)."""
    if _ARMED is None:
        return
    name, at = _ARMED
    if name == point and (at is None or at == epoch):
        os.kill(os.getpid(), signal.SIGKILL)
