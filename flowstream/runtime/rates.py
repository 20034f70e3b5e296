"""Items per second that mean something: recent while running, average once done.

A node's counters only ever grow; its rate is read from them, never counted
on the hot path. Each read (a progress frame, a metrics sample, an API call)
gives `RateMeter` the counters and the clock, and the meter keeps a few of
those readings, at least ``STEP_S`` apart, covering the last ``WINDOW_S``
seconds. The rate is the change since the oldest kept reading:

- while the node runs, over about the last ``WINDOW_S`` seconds (or since the
  previous reading, when readings are further apart than that), so a source
  that stopped shows 0/s within a window instead of an average that drifts
  down forever;
- once the node has ended, the average over its whole run;
- None when the span is shorter than ``MIN_SPAN_S``: ten items handled in
  0.4 ms are not "26,394 items/s", they are ten items.

Memory is bounded: a meter keeps at most ``WINDOW_S / STEP_S + 2`` readings.
"""

from __future__ import annotations

from collections import deque

__all__ = ["MIN_SPAN_S", "STEP_S", "WINDOW_S", "RateMeter", "average"]

WINDOW_S = 5.0
"""How far back a running node's rate looks."""
STEP_S = 0.5
"""Readings closer together than this are not kept (the meter stays small)."""
MIN_SPAN_S = 1.0
"""Shorter spans give no rate (None): too short to mean anything."""


def average(items: int, duration_s: float) -> float | None:
    """Items per second over a finished span; None if it is under a second.

    Args:
        items: How many items moved in the span.
        duration_s: The span's length in seconds.

    Returns:
        ``items / duration_s``, or None when ``duration_s < MIN_SPAN_S``.
    """
    if duration_s < MIN_SPAN_S:
        return None
    return items / duration_s


class RateMeter:
    """One node's recent rates in and out, from readings of its counters.

    Not thread-safe; read it from the thread that owns the run (the event
    loop's), as the counters themselves are.

    Args:
        started: When the node started, on the clock the readings use
            (``time.perf_counter()`` in the runtime); counters are 0 then.
    """

    __slots__ = ("_readings",)

    def __init__(self, started: float) -> None:
        # (time, items_in, items_out); the first one is the oldest kept, the
        # anchor every rate is measured from.
        self._readings: deque[tuple[float, int, int]] = deque(
            [(started, 0, 0)], maxlen=int(WINDOW_S / STEP_S) + 2
        )

    def read(
        self, now: float, items_in: int, items_out: int
    ) -> tuple[float | None, float | None]:
        """Record a reading and return the recent rates ``(in, out)``.

        Args:
            now: The reading's time (same clock as ``started``).
            items_in: The node's input counter now.
            items_out: The node's output counter now.

        Returns:
            Items per second in and out since the oldest kept reading (about
            ``WINDOW_S`` ago); ``(None, None)`` when that is under
            ``MIN_SPAN_S`` ago.
        """
        readings = self._readings
        # Keep exactly one reading at or before the window's start: the anchor.
        start = now - WINDOW_S
        while len(readings) > 1 and readings[1][0] <= start:
            readings.popleft()
        if now - readings[-1][0] >= STEP_S:
            readings.append((now, items_in, items_out))
        t0, in0, out0 = readings[0]
        span = now - t0
        if span < MIN_SPAN_S:
            return None, None
        return (items_in - in0) / span, (items_out - out0) / span
