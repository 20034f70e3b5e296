"""Processing time as epoch milliseconds, read from the event loop's clock.

Records carry event time as epoch milliseconds (ints), the convention of
Flink, Kafka and Nexmark; processing time uses the same unit so that a
window's ``start``/``end`` mean the same thing in both. The clock is the
event loop's (``loop.time()``, monotonic) plus the wall-clock offset taken
once, so virtual-time tests (`flowstream.testing.VirtualTimeLoop`, whose
``epoch`` attribute sets the offset) run windows and timers instantly.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["epoch_ms_clock"]


def epoch_ms_clock() -> Callable[[], int]:
    """Return a function reading the running loop's clock in epoch ms (int).

    The clock is monotonic (it never goes back when the wall clock is
    adjusted); it reads as the wall clock at the moment this was called.
    """
    loop = asyncio.get_running_loop()
    loop_time = loop.time
    epoch = getattr(loop, "epoch", None)
    offset = (time.time() - loop_time()) if epoch is None else float(epoch)

    def now_ms() -> int:
        # A reading of the clock, rounded to the unit records use.
        return round((loop_time() + offset) * 1000)

    return now_ms
