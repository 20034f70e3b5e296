"""`Backoff`: how long to wait between attempts, the one definition of it.

Every retrying thing in flowstream waits the same way: a node's
`RetryPolicy`, a connector's reconnect policy and ``http.sink``'s request
retries. They share this struct's fields (by inheriting it), so the fields are
named, documented and validated here only::

    retry: {max_attempts: 5, delay_ms: 100, backoff_multiplier: 2, max_delay_ms: 5000}

The wait after failed attempt *n* is ``delay_ms * backoff_multiplier**(n-1)``,
capped at ``max_delay_ms``. A ``delay_ms`` above the cap is allowed and waits
the cap. Old spellings of these fields (``http.sink``'s ``backoff_ms`` and
``max_backoff_ms``) are still read: see ``Backoff.old_names``.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import msgspec

__all__ = ["Backoff"]


class Backoff(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Exponential backoff between attempts, capped.

    Subclasses add what they retry (``max_attempts``, ``jitter``) and may set
    other defaults; the checks below run for all of them. A subclass that
    renamed its fields to these keeps reading the old names by declaring
    them as optional fields (None when absent) and listing them in
    ``old_names``: a value given under an old name is checked under that
    name, then moved to the new field (the old one is reset to None, so a
    config written back uses the new names). Giving both names with
    different values is an error naming both.

    Attributes:
        delay_ms: Wait after the first failed attempt, a finite number >= 0.
        backoff_multiplier: Growth of the wait after each further failure, a
            finite number >= 1 (1 waits ``delay_ms`` every time).
        max_delay_ms: Longest wait, >= 0 (``.inf`` for no cap).

    Raises:
        ValueError: A field is out of range; the message starts with its name.
    """

    delay_ms: float = 100.0
    backoff_multiplier: float = 2.0
    max_delay_ms: float = 30_000.0

    old_names: ClassVar[dict[str, str]] = {}
    """Old field name -> the `Backoff` field it became."""

    def __post_init__(self) -> None:
        if self.old_names:
            _fold_old_names(self)
        check_delay("delay_ms", self.delay_ms)
        # Written as "not >=" so that NaN is rejected too.
        if not (1 <= self.backoff_multiplier < math.inf):
            msg = (
                "backoff_multiplier must be a finite number >= 1, "
                f"got {self.backoff_multiplier}"
            )
            raise ValueError(msg)
        check_cap("max_delay_ms", self.max_delay_ms)

    def delay_s(self, attempt: int) -> float:
        """Return the wait in seconds after failed attempt number ``attempt``.

        Args:
            attempt: Failed attempts so far, counted from 1 (0 counts as 1).
        """
        try:
            delay = self.delay_ms * self.backoff_multiplier ** (max(attempt, 1) - 1)
        except OverflowError:  # a late attempt of a long retry: past any cap
            delay = math.inf if self.delay_ms else 0.0
        return min(delay, self.max_delay_ms) / 1000.0


def check_delay(name: str, value: float) -> None:
    """Check a first delay (finite, >= 0), naming the field as written.

    Raises:
        ValueError: It is not; the message starts with ``name``.
    """
    if not (0 <= value < math.inf):
        msg = f"{name} must be a finite number >= 0, got {value}"
        raise ValueError(msg)


def check_cap(name: str, value: float) -> None:
    """Check a cap on the delay (>= 0, NaN refused), naming the field as written.

    Raises:
        ValueError: It is not; the message starts with ``name``.
    """
    if not value >= 0:
        msg = f"{name} must be >= 0, got {value}"
        raise ValueError(msg)


def _fold_old_names(config: Backoff) -> None:
    defaults = {f.name: f.default for f in msgspec.structs.fields(config)}
    for old_name, new_name in config.old_names.items():
        value: Any = getattr(config, old_name)
        if value is None:
            continue
        current = getattr(config, new_name)
        if current != defaults[new_name] and current != value:
            msg = (
                f"{old_name} is the old name of {new_name}: give one of them, "
                f"got {old_name}={value} and {new_name}={current}"
            )
            raise ValueError(msg)
        if new_name == "delay_ms":
            check_delay(old_name, value)
        else:
            check_cap(old_name, value)
        msgspec.structs.force_setattr(config, new_name, value)
        msgspec.structs.force_setattr(config, old_name, None)
