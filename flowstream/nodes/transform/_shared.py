"""Helpers the transform modules share: messages and checks."""

from __future__ import annotations

import math
from typing import Any

# How keys become state slots (and back): one definition, shared with the
# windows and joins (`flowstream.nodes._aggregates`).
from .._aggregates import key_of as _unslot, slot_of as _slot

# --- shared helpers ------------------------------------------------------------


def _identity(x: Any) -> Any:
    return x


def _describe(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"


def _check_finite(name: str, value: float | None, *, minimum: float = 0.0) -> None:
    """Reject NaN, infinity and values at or below ``minimum`` (if not None)."""
    if value is not None and not (minimum < value < math.inf):
        msg = f"{name} must be a finite number > {minimum:g}, got {value}"
        raise ValueError(msg)


__all__ = ["_check_finite", "_describe", "_identity", "_slot", "_unslot"]
