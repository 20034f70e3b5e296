"""Top-N for window records: the ``n`` best items by a score, in a bounded heap.

The window nodes' ``top`` aggregate, a `flowstream.nodes._aggregates.Kind`
in timestamp order (a record holds at most ``n`` items, whatever the
window's size).
"""

from __future__ import annotations

import heapq
from typing import Any

from ._aggregates import APPEND, Kind, describe

__all__ = ["top_kind"]


def _ranked(score: Any, desc: bool) -> Any:
    if (type(score) is not int and type(score) is not float) or score != score:
        msg = f"top needs a number to rank by, got {describe(score)}"
        raise TypeError(msg)
    return score if desc else -score


def top_kind(n: int, *, desc: bool) -> Kind:
    """The ``n`` best items by a score (timestamp order): a bounded heap.

    The value stepped is ``(score, item)``; the accumulator is ``[seq,
    heap]`` with heap entries ``[rank, -t, -seq, item]`` (rank: the score,
    negated for ascending order), so the heap's first entry is the worst
    kept: the lowest rank, then the latest timestamp, then the latest to
    arrive. An item enters if it beats that entry (or the heap has fewer
    than ``n``): ties go to the earlier timestamp, then the earlier arrival.
    Memory: ``n`` items per record, whatever the window's size.
    """

    def step(acc: Any, v: Any, t: int) -> Any:
        rank = _ranked(v[0], desc)
        heap = acc[1]
        if len(heap) < n:
            return APPEND
        worst = heap[0]
        # The newcomer arrives last: it beats an equal (rank, t) entry never.
        if rank > worst[0] or (rank == worst[0] and -t > worst[1]):
            return APPEND
        return acc

    def add(acc: Any, v: Any, t: int) -> None:
        seq = acc[0] = acc[0] + 1
        entry = [_ranked(v[0], desc), -t, -seq, v[1]]
        if len(acc[1]) < n:
            heapq.heappush(acc[1], entry)
        else:
            heapq.heapreplace(acc[1], entry)

    def merge(a: Any, b: Any) -> Any:
        # ``b`` is the later record: its items count as arriving after a's.
        shift = a[0]
        moved = [[r, nt, ns - shift, item] for r, nt, ns, item in b[1]]
        heap = heapq.nlargest(n, [*a[1], *moved])
        heapq.heapify(heap)
        return [a[0] + b[0], heap]

    def result(acc: Any, count: int) -> list[Any]:
        return [entry[3] for entry in sorted(acc[1], reverse=True)]

    return Kind(step, add, merge, result, lambda: [0, []])
