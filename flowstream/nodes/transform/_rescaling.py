"""How ``transform.scan``, ``reduce`` and ``dedupe`` state moves between parallelisms.

Their per-key entries are keyed by slot (`_shared._slot`): the grouping key
itself when a str or int, else its JSON text. The key is recomputed from the
slot to find its key group (`flowstream.nodes._rescaling` has the rules).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._rescaling import check_known, counter, fresh
from ._shared import _slot, _unslot

if TYPE_CHECKING:
    from .._rescaling import Place, States

__all__ = ["rescale_accs", "rescale_dedupe"]


def _slot_key(slot: Any) -> Any:
    """The grouping key behind a state slot; refused if it cannot be recomputed.

    Slots hold str and int keys as themselves and other keys as JSON text: a
    key JSON does not keep (bytes) would hash to another group.
    """
    key = _unslot(slot)
    if _slot(key) != slot:
        msg = f"the key of state entry {slot!r:.60} cannot be recomputed from it"
        raise ValueError(msg)
    return key


def rescale_accs(states: States, m: int, place: Place) -> list[dict[str, Any]]:
    """``transform.scan`` / ``reduce`` / ``aggregate``: ``accs`` by key, ``evicted``."""
    check_known(states, ("accs", "evicted"))
    news = fresh(m)
    if any("accs" in s for s in states):
        for new in news:
            new["accs"] = {}
    for state in states:
        for slot, acc in state.get("accs", {}).items():
            news[place(_slot_key(slot))]["accs"][slot] = acc
    counter(news, states, "evicted")
    return news


def rescale_dedupe(states: States, m: int, place: Place) -> list[dict[str, Any]]:
    """``transform.dedupe``: ``seen`` keys (oldest first), ``dropped``."""
    check_known(states, ("seen", "dropped"))
    news = fresh(m)
    if any("seen" in s for s in states):
        for new in news:
            new["seen"] = {}
    # Oldest first in every instance, as each old one kept them.
    seen = sorted(
        (
            (slot, since)
            for state in states
            for slot, since in state.get("seen", {}).items()
        ),
        key=lambda entry: entry[1],
    )
    for slot, since in seen:
        news[place(_slot_key(slot))]["seen"][slot] = since
    counter(news, states, "dropped")
    return news
