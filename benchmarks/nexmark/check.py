"""Compare a query's records with the reference's, as multisets."""

from __future__ import annotations

from collections import Counter
from typing import Any

import msgspec

__all__ = ["Comparison", "compare"]

_ENCODER = msgspec.json.Encoder(order="sorted")


class Comparison(msgspec.Struct, frozen=True, kw_only=True):
    """The outcome of one comparison; ``missing``/``extra`` hold a few examples."""

    expected: int
    actual: int
    missing: list[Any]
    extra: list[Any]
    missing_count: int
    extra_count: int

    @property
    def match(self) -> bool:
        """Both sides hold exactly the same records, as many times each."""
        return self.missing_count == 0 and self.extra_count == 0

    def describe(self) -> str:
        """One line (and examples) saying how the records differ."""
        if self.match:
            return f"match ({self.actual} records)"
        return (
            f"MISMATCH: expected {self.expected} records, got {self.actual}; "
            f"{self.missing_count} missing (e.g. {self.missing}), "
            f"{self.extra_count} extra (e.g. {self.extra})"
        )


def _canonical(record: Any) -> bytes:
    # Records compare by value: keys in any order; an int and an equal float
    # differ (1 vs 1.0), as they would in the JSON output.
    return _ENCODER.encode(record)


def compare(actual: list[Any], expected: list[Any], examples: int = 3) -> Comparison:
    """Compare two lists of records as multisets (order does not matter)."""
    want = Counter(_canonical(r) for r in expected)
    got = Counter(_canonical(r) for r in actual)
    missing = want - got
    extra = got - want
    return Comparison(
        expected=len(expected),
        actual=len(actual),
        missing=[msgspec.json.decode(r) for r in list(missing)[:examples]],
        extra=[msgspec.json.decode(r) for r in list(extra)[:examples]],
        missing_count=sum(missing.values()),
        extra_count=sum(extra.values()),
    )
