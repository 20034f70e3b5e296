"""``flowstream run --restart on-failure``: when, and after how long, to restart.

Three strategies, as Flink names them, given to ``--restart-backoff``:

- ``fixed:DELAY``: wait DELAY before each restart;
- ``exponential:INITIAL:MAX[:FACTOR]``: wait INITIAL, then FACTOR (default 2)
  times longer each time, never more than MAX;
- ``failure-rate:N/INTERVAL:DELAY``: wait DELAY; give up when more than N
  failures fall within INTERVAL.

``--max-restarts`` bounds the restarts of a run (default 3; with
``failure-rate`` the rate is the bound unless it is given). Durations are
``250ms``, ``10s``, ``5m``, ``1h`` or a number of seconds. A policy is pure
arithmetic on the times it is given, so tests drive it with a fake clock.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass, field

__all__ = ["RestartPolicy", "parse_duration"]

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)?")


class RestartSpecError(ValueError):
    """A ``--restart-backoff`` or duration that cannot be read."""


def parse_duration(text: str) -> float:
    """Seconds in ``text`` (``250ms``, ``10s``, ``5m``, ``1h`` or ``2.5``)."""
    found = _DURATION.fullmatch(text.strip())
    if found is None:
        msg = f"{text!r} is not a duration (write 250ms, 10s, 5m, 1h or seconds)"
        raise RestartSpecError(msg)
    return float(found.group(1)) * _UNITS[found.group(2) or "s"]


@dataclass
class RestartPolicy:
    """When to restart a failed run and how long to wait first.

    Attributes:
        strategy: ``fixed``, ``exponential`` or ``failure-rate``.
        delay_s: The wait (the first one, for ``exponential``).
        max_delay_s: The longest wait (``exponential``).
        factor: How much longer each wait is (``exponential``).
        max_restarts: Restarts allowed in all; None for no limit.
        rate_failures: Failures allowed within ``rate_interval_s``
            (``failure-rate``).
        rate_interval_s: The window of ``failure-rate``.
    """

    strategy: str
    delay_s: float
    max_delay_s: float = 0.0
    factor: float = 2.0
    max_restarts: int | None = 3
    rate_failures: int = 0
    rate_interval_s: float = 0.0
    restarts: int = 0
    _failures: deque[float] = field(default_factory=deque, repr=False)

    @classmethod
    def parse(cls, spec: str, max_restarts: int | None) -> RestartPolicy:
        """Read a ``--restart-backoff`` value (see the module docstring)."""
        kind, _, rest = spec.partition(":")
        parts = rest.split(":") if rest else []
        try:
            if kind == "fixed" and len(parts) == 1:
                return cls(
                    "fixed",
                    parse_duration(parts[0]),
                    max_restarts=3 if max_restarts is None else max_restarts,
                )
            if kind == "exponential" and len(parts) in (2, 3):
                factor = float(parts[2]) if len(parts) == 3 else 2.0
                if factor < 1:
                    msg = f"factor {factor} is below 1"
                    raise RestartSpecError(msg)
                return cls(
                    "exponential",
                    parse_duration(parts[0]),
                    max_delay_s=parse_duration(parts[1]),
                    factor=factor,
                    max_restarts=3 if max_restarts is None else max_restarts,
                )
            if kind == "failure-rate" and len(parts) == 2:
                count, slash, interval = parts[0].partition("/")
                if not slash or not count.isdigit():
                    msg = f"{parts[0]!r} is not N/INTERVAL"
                    raise RestartSpecError(msg)
                return cls(
                    "failure-rate",
                    parse_duration(parts[1]),
                    max_restarts=max_restarts,
                    rate_failures=int(count),
                    rate_interval_s=parse_duration(interval),
                )
        except (RestartSpecError, ValueError) as exc:
            msg = f"--restart-backoff {spec!r}: {exc}"
            raise RestartSpecError(msg) from None
        msg = (
            f"--restart-backoff {spec!r}: write fixed:DELAY, "
            "exponential:INITIAL:MAX[:FACTOR] or failure-rate:N/INTERVAL:DELAY"
        )
        raise RestartSpecError(msg)

    def next_delay(self, now: float) -> float | None:
        """Record a failure at ``now``; the wait before restarting, or None.

        None means give up: the restarts are used up, or (``failure-rate``)
        more than N failures fell within the interval.
        """
        if self.max_restarts is not None and self.restarts >= self.max_restarts:
            return None
        if self.strategy == "failure-rate":
            self._failures.append(now)
            while self._failures and now - self._failures[0] > self.rate_interval_s:
                self._failures.popleft()
            if len(self._failures) > self.rate_failures:
                return None
        delay = self.delay_s
        if self.strategy == "exponential":
            delay = min(self.delay_s * self.factor**self.restarts, self.max_delay_s)
        self.restarts += 1
        return delay
