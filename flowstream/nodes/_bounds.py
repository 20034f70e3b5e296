"""Bounds on keyed state: ``max_keys`` and what happens at it (``on_max_keys``).

Keyed stateful nodes (``window.*``, ``transform.scan``, ``transform.reduce``)
hold one record per key (per open window), in ``ctx.state``. With keys that
never repeat, that grows for ever in stream mode. Each of them takes:

* ``max_keys`` (default `DEFAULT_MAX_KEYS`; ``null``: unbounded, which
  validation warns about in stream mode);
* ``on_max_keys``: ``fail`` (default) stops the run with a
  `flowstream.errors.StateLimitError` naming the node and the bound;
  ``evict_oldest`` drops the oldest key's record, emitting what the node
  would have emitted for it (marked ``evicted: true``) where it emits at the
  end, and counts it in the state (``evicted``).

Why these defaults: a million keys is more than most jobs hold yet caps the
state at a few hundred MB, and failing loudly never changes results behind
the user's back, where evicting would (a window emitted early, a scan
restarting a key from scratch). Eviction is a choice the user makes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from ..errors import StateLimitError

if TYPE_CHECKING:
    from ..core.node import NodeContext

__all__ = [
    "DEFAULT_MAX_KEYS",
    "OnMaxKeys",
    "check_max_keys",
    "note_eviction",
    "over_max_keys",
]

DEFAULT_MAX_KEYS = 1_000_000
"""Keys a keyed node holds at most unless its config says otherwise."""

OnMaxKeys = Literal["fail", "evict_oldest"]


def check_max_keys(max_keys: int | None) -> None:
    """Refuse a ``max_keys`` below 1 (config validation).

    Raises:
        ValueError: ``max_keys`` is below 1.
    """
    if max_keys is not None and max_keys < 1:
        msg = f"max_keys must be >= 1 or null (unbounded), got {max_keys}"
        raise ValueError(msg)


def over_max_keys(max_keys: int, what: str) -> StateLimitError:
    """The error of ``on_max_keys: fail``, naming the bound and the ways out."""
    msg = (
        f"max_keys={max_keys} reached: the node holds {what} for more than "
        f"{max_keys} keys; raise max_keys, set on_max_keys: evict_oldest, or "
        "bound the keys upstream"
    )
    return StateLimitError(msg)


def note_eviction(ctx: NodeContext, max_keys: int, what: str) -> None:
    """Count an eviction in the state; log the first one the state has seen."""
    state = ctx.state
    evicted = state["evicted"] = state.get("evicted", 0) + 1
    if evicted == 1:
        ctx.logger.warning(
            "max_keys=%d reached: evicting the oldest %s (on_max_keys: "
            "evict_oldest); the count is in the node state ('evicted')",
            max_keys,
            what,
        )
