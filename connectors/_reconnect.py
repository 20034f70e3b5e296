"""The reconnect policy every connector shares: exponential backoff with jitter.

`Reconnect` is a config struct (the ``reconnect`` field of a client's config);
`pause` waits out one of its delays, or less when the run is asked to stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import random

import msgspec

__all__ = ["Reconnect", "pause"]


class Reconnect(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How a client reconnects: exponential backoff with jitter.

    After *n* consecutive failed attempts the wait is ``delay_ms *
    backoff_multiplier**(n-1)``, capped at ``max_delay_ms``, times a random
    factor in ``[1 - jitter, 1]`` (so that many clients do not retry in step).
    A lost connection waits one ``delay_ms`` (with jitter) before reconnecting.

    Attributes:
        max_attempts: Consecutive failed attempts after which the node fails
            with `flowstream.errors.ConnectError`; None retries forever.
    """

    delay_ms: float = 100.0
    backoff_multiplier: float = 2.0
    max_delay_ms: float = 10_000.0
    jitter: float = 0.5
    max_attempts: int | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.delay_ms <= self.max_delay_ms:
            msg = (
                "need 0 <= delay_ms <= max_delay_ms, "
                f"got {self.delay_ms} and {self.max_delay_ms}"
            )
            raise ValueError(msg)
        if not self.backoff_multiplier >= 1:
            msg = f"backoff_multiplier must be >= 1, got {self.backoff_multiplier}"
            raise ValueError(msg)
        if not 0 <= self.jitter <= 1:
            msg = f"jitter must be between 0 and 1, got {self.jitter}"
            raise ValueError(msg)
        if self.max_attempts is not None and self.max_attempts < 1:
            msg = f"max_attempts must be >= 1 or null, got {self.max_attempts}"
            raise ValueError(msg)

    def delay_s(self, failures: int) -> float:
        """Return the wait in seconds after ``failures`` consecutive failures."""
        exponent = min(max(failures, 1) - 1, 64)  # past the cap long before
        delay = min(
            self.delay_ms * self.backoff_multiplier**exponent, self.max_delay_ms
        )
        return delay * (1.0 - self.jitter * random.random()) / 1000.0


async def pause(stopping: asyncio.Event, seconds: float) -> None:
    """Sleep ``seconds``, or less if the run is asked to stop."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await stopping.wait()
