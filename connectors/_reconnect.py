"""The reconnect policy every connector shares: `flowstream.Backoff` with jitter.

`Reconnect` is a config struct (the ``reconnect`` field of a client's config);
`pause` waits out one of its delays, or less when the run is asked to stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import random

from flowstream import Backoff

__all__ = ["Reconnect", "pause"]


class Reconnect(Backoff, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How a client reconnects: `flowstream.Backoff` with jitter.

    After *n* consecutive failed attempts the wait is ``delay_ms *
    backoff_multiplier**(n-1)``, capped at ``max_delay_ms``, times a random
    factor in ``[1 - jitter, 1]`` (so that many clients do not retry in step).
    A lost connection waits one ``delay_ms`` (with jitter) before reconnecting.

    Attributes:
        max_delay_ms: Longest wait (10 s here, rather than Backoff's 30 s).
        jitter: Fraction of each wait that is random, between 0 and 1.
        max_attempts: Consecutive failed attempts after which the node fails
            with `flowstream.errors.ConnectError`; None retries forever.
    """

    max_delay_ms: float = 10_000.0
    jitter: float = 0.5
    max_attempts: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.jitter <= 1:
            msg = f"jitter must be between 0 and 1, got {self.jitter}"
            raise ValueError(msg)
        if self.max_attempts is not None and self.max_attempts < 1:
            msg = f"max_attempts must be >= 1 or null, got {self.max_attempts}"
            raise ValueError(msg)

    def delay_s(self, attempt: int) -> float:
        """Return the wait in seconds after ``attempt`` consecutive failures."""
        return super().delay_s(attempt) * (1.0 - self.jitter * random.random())


async def pause(stopping: asyncio.Event, seconds: float) -> None:
    """Sleep ``seconds``, or less if the run is asked to stop."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await stopping.wait()
