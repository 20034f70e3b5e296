"""How the built-in nodes' state moves to another parallelism (`StateRescaler`).

At a restore with another number of instances
(`flowstream.runtime.checkpointing.rescale`), a node's hook gets its old
instances' states and returns the new ones. Each hook here knows its node's
state layout (documented with the node) and:

* puts every per-key entry (an accumulator, a window record, a session, a
  join bucket, a remembered key) in the instance that owns its key now;
* adds up counters (``evicted``, ``dropped``, ``late``) into instance 0 (the
  others start at 0), so totals are kept;
* gives every instance the furthest progress any had (a window's
  ``max_t``, a join's latest times, sequence numbers): what one instance
  that had seen everything would hold;
* refuses an entry it does not know (``ValueError``, which the restore turns
  into a `RescaleError` naming the node): a state layout that changed
  without its hook fails loudly rather than losing entries.
"""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence
    from typing import TypeAlias

    States: TypeAlias = Sequence[dict[str, Any]]
    Place: TypeAlias = Callable[[Any], int]

__all__ = [
    "check_known",
    "counter",
    "fresh",
    "rescale_held",
    "rescale_sequence",
    "rescale_window",
    "rescale_window_join",
]


def check_known(states: States, known: Iterable[str]) -> None:
    """Refuse a state with an entry not in ``known`` (``ValueError``)."""
    allowed = set(known)
    for state in states:
        unknown = sorted(set(state) - allowed)
        if unknown:
            msg = f"its state has entries the rescaling does not know: {unknown}"
            raise ValueError(msg)


def fresh(m: int) -> list[dict[str, Any]]:
    """``m`` empty states."""
    return [{} for _ in range(m)]


def counter(news: list[dict[str, Any]], states: States, name: str) -> None:
    """The total of counter ``name`` in instance 0, 0 in the others."""
    found = [s[name] for s in states if name in s]
    if found:
        for new in news:
            new[name] = 0
        news[0][name] = sum(found)


def _furthest(values: Iterable[Any]) -> Any:
    """The largest of values that may be None (None if all are)."""
    known = [v for v in values if v is not None]
    return max(known) if known else None


_WINDOW = ("max_t", "late", "evicted")


def rescale_window(states: States, m: int, place: Place) -> list[dict[str, Any]]:
    """``window.*``: fixed windows' records or sessions, by their record's key.

    A record is ``[key, count, ...]``; ``max_t`` (the latest time seen, the
    watermark's base) is the latest of all instances in each new one.
    """
    if any("sessions" in s for s in states):
        news = _sessions(states, m, place)
    else:
        news = _fixed(states, m, place)
    if any("max_t" in s for s in states):
        max_t = _furthest(s.get("max_t") for s in states)
        for new in news:
            new["max_t"] = max_t
            new["late"] = 0
    counter(news, states, "late")
    counter(news, states, "evicted")
    return news


def _fixed(states: States, m: int, place: Place) -> list[dict[str, Any]]:
    check_known(states, (*_WINDOW, "open", "fired"))
    news = fresh(m)
    for name in ("open", "fired"):
        if not any(name in s for s in states):
            continue
        for new in news:
            new[name] = {}
        for state in states:
            for n, window in state.get(name, {}).items():
                for skey, record in window.items():
                    new = news[place(record[0])][name]
                    new.setdefault(n, {})[skey] = record
        for new in news:  # window indexes in order, as the engine keeps them
            new[name] = dict(sorted(new[name].items()))
    return news


def _sessions(states: States, m: int, place: Place) -> list[dict[str, Any]]:
    check_known(states, (*_WINDOW, "sessions", "heap", "seq"))
    news = fresh(m)
    for new in news:
        new["sessions"] = {}
        new["heap"] = []
    seq = max((s.get("seq", 0) for s in states), default=0)
    where: dict[str, int] = {}
    for state in states:
        for skey, sessions in state.get("sessions", {}).items():
            # A key's sessions all hold its key in their record ([4][0]).
            i = where[skey] = place(sessions[0][4][0])
            news[i]["sessions"][skey] = sessions
    for state in states:
        for entry in state.get("heap", ()):
            to = where.get(entry[2])
            if to is not None:  # else a stale entry of a session gone
                news[to]["heap"].append(entry)
    for new in news:
        heapq.heapify(new["heap"])
        new["seq"] = seq  # session ids stay unique per key
    return news


def rescale_window_join(states: States, m: int, place: Place) -> list[dict[str, Any]]:
    """``join.window``: buckets by their key, each side's expiry heap with them."""
    check_known(states, ("buckets", "heaps", "tops", "seq"))
    news = fresh(m)
    if not any(states):
        return news
    tops = [
        _furthest(s["tops"][side] for s in states if "tops" in s) for side in (0, 1)
    ]
    seq = max((s.get("seq", 0) for s in states), default=0)
    for new in news:
        new.update(buckets={}, heaps=[[], []], tops=list(tops), seq=seq)
    for state in states:
        where: dict[Any, int] = {}
        for slot, bucket in state.get("buckets", {}).items():
            i = where[slot] = place(bucket["key"])
            news[i]["buckets"][slot] = bucket
        for side, heap in enumerate(state.get("heaps", ((), ()))):
            for entry in heap:
                news[where[entry[2]]]["heaps"][side].append(entry)
    for new in news:
        for heap in new["heaps"]:
            heapq.heapify(heap)
    return news


def rescale_queued_join(states: States, m: int, place: Place) -> list[dict[str, Any]]:
    """``join.interval`` and ``join.changelog``: buckets by key, queues with them.

    Both keep ``buckets`` (slot -> a list whose first entry is the key),
    per side an expiry ``queue`` of ``(expires_at, seq, slot)`` read from
    ``heads``, the ``tops``, the ``seq`` counter (and ``evicted``). A key's
    bucket and its live queue entries move to the instance that owns the
    key; each new
    queue is sorted by expiry (the entries were in arrival order per old
    instance), and ``seq`` goes on past every old instance's.
    """
    check_known(states, ("buckets", "queues", "heads", "tops", "seq", "evicted"))
    news = fresh(m)
    if not any(states):
        return news
    counter(news, states, "evicted")  # keys forgotten past max_keys, a total
    tops = [
        _furthest(s["tops"][side] for s in states if "tops" in s) for side in (0, 1)
    ]
    seq = max((s.get("seq", 0) for s in states), default=0)
    for new in news:
        new.update(buckets={}, queues=[[], []], heads=[0, 0], tops=list(tops), seq=seq)
    for state in states:
        where: dict[Any, int] = {}
        for slot, bucket in state.get("buckets", {}).items():
            i = where[slot] = place(bucket[0])
            news[i]["buckets"][slot] = bucket
        heads = state.get("heads", (0, 0))
        for side, queue in enumerate(state.get("queues", ((), ()))):
            for entry in queue[heads[side] :]:
                owner = where.get(entry[2])
                if owner is not None:  # an entry whose bucket is gone is spent
                    news[owner]["queues"][side].append(entry)
    for new in news:
        for queue in new["queues"]:
            queue.sort(key=lambda e: (e[0], e[1]))
    return news


def rescale_held(states: States, m: int, place: Place) -> list[dict[str, Any]]:
    """``time.delay``: the held items, dealt out round-robin."""
    check_known(states, ("held",))
    held = [x for s in states for x in s.get("held", ())]
    news = fresh(m)
    if any("held" in s for s in states):
        for i, new in enumerate(news):
            new["held"] = held[i::m]
    return news


def rescale_sequence(states: States, m: int, place: Place) -> list[dict[str, Any]]:
    """``debug.log``: the items logged so far (``seq``), totalled in instance 0."""
    check_known(states, ("seq",))
    news = fresh(m)
    counter(news, states, "seq")
    return news
