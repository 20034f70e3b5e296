"""Nexmark queries in plain Python: dicts and loops, no engine.

Each function takes every event (any arrival order) and returns the query's
final records, as the issue's table specifies: window bounds are epoch ms
ints, windows are half-open ``[start, end)`` and aligned to multiples of
their size (or slide) since the epoch, and every window with at least one
event is reported (the watermark reaches +inf at the end of input). The
order of the records is not part of the answer (the checker compares
multisets).
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["QUERIES"]

Records = list[dict[str, Any]]

WINDOW_MS = 10_000
HOP_SLIDE_MS = 2_000
SESSION_GAP_MS = 10_000


def _bids(events: Records) -> Records:
    return [e for e in events if e["type"] == "bid"]


def q0(events: Records) -> Records:
    """Every bid, passed through."""
    keys = ("auction", "bidder", "price", "date_time", "extra")
    return [{k: b[k] for k in keys} for b in _bids(events)]


def q1(events: Records) -> Records:
    """Every bid, its price converted to EUR."""
    return [
        {
            "auction": b["auction"],
            "bidder": b["bidder"],
            "price": round(b["price"] * 0.908, 3),
            "date_time": b["date_time"],
            "extra": b["extra"],
        }
        for b in _bids(events)
    ]


def q2(events: Records) -> Records:
    """Bids on auctions whose id is a multiple of 123."""
    return [
        {"auction": b["auction"], "price": b["price"]}
        for b in _bids(events)
        if b["auction"] % 123 == 0
    ]


def q3(events: Records) -> Records:
    """Category-10 auctions of sellers living in OR, ID or CA (a full join)."""
    sellers = {
        e["id"]: e
        for e in events
        if e["type"] == "person" and e["state"] in ("OR", "ID", "CA")
    }
    out = []
    for a in events:
        if a["type"] == "auction" and a["category"] == 10:
            p = sellers.get(a["seller"])
            if p is not None:
                out.append(
                    {
                        "name": p["name"],
                        "city": p["city"],
                        "state": p["state"],
                        "id": a["id"],
                    }
                )
    return out


def q4(events: Records) -> Records:
    """Per category, the mean of its auctions' winning (highest valid) bids."""
    auctions = {e["id"]: e for e in events if e["type"] == "auction"}
    best: dict[int, int] = {}
    for b in _bids(events):
        a = auctions.get(b["auction"])
        if a is not None and a["date_time"] <= b["date_time"] <= a["expires"]:
            if b["price"] > best.get(a["id"], -1):
                best[a["id"]] = b["price"]
    by_category: dict[int, list[int]] = defaultdict(list)
    for auction_id, price in best.items():
        by_category[auctions[auction_id]["category"]].append(price)
    return [
        {"category": c, "avg_final": sum(prices) / len(prices)}
        for c, prices in by_category.items()
    ]


def q5(events: Records) -> Records:
    """Per hop window (10 s every 2 s): the auctions with the most bids."""
    counts: dict[int, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    per_window = WINDOW_MS // HOP_SLIDE_MS
    for b in _bids(events):
        last = b["date_time"] // HOP_SLIDE_MS * HOP_SLIDE_MS
        for i in range(per_window):
            counts[last - i * HOP_SLIDE_MS][b["auction"]] += 1
    out = []
    for start, by_auction in counts.items():
        top = max(by_auction.values())
        out.extend(
            {
                "window_start": start,
                "window_end": start + WINDOW_MS,
                "auction": a,
                "num": n,
            }
            for a, n in by_auction.items()
            if n == top
        )
    return out


def _tumble(t: int) -> int:
    return t // WINDOW_MS * WINDOW_MS


def q7(events: Records) -> Records:
    """Per tumbling 10 s window: the bids at the window's highest price."""
    windows: dict[int, Records] = defaultdict(list)
    for b in _bids(events):
        windows[_tumble(b["date_time"])].append(b)
    out = []
    for start, bids in windows.items():
        top = max(b["price"] for b in bids)
        out.extend(
            {
                "window_start": start,
                "window_end": start + WINDOW_MS,
                "auction": b["auction"],
                "bidder": b["bidder"],
                "price": b["price"],
                "date_time": b["date_time"],
                "extra": b["extra"],
            }
            for b in bids
            if b["price"] == top
        )
    return out


def q8(events: Records) -> Records:
    """Persons who opened an auction in the tumbling 10 s window they joined in."""
    sellers = {
        (_tumble(e["date_time"]), e["seller"]) for e in events if e["type"] == "auction"
    }
    return [
        {
            "id": p["id"],
            "name": p["name"],
            "window_start": _tumble(p["date_time"]),
            "window_end": _tumble(p["date_time"]) + WINDOW_MS,
        }
        for p in events
        if p["type"] == "person" and (_tumble(p["date_time"]), p["id"]) in sellers
    ]


def q11(events: Records) -> Records:
    """Bids per session of each bidder (a bid <= 10 s after the last continues it)."""
    times: dict[int, list[int]] = defaultdict(list)
    for b in _bids(events):
        times[b["bidder"]].append(b["date_time"])
    out = []
    for bidder, ts in times.items():
        ts.sort()
        start, last, n = ts[0], ts[0], 0
        for t in ts:
            if t - last > SESSION_GAP_MS:
                out.append(_session(bidder, n, start, last))
                start, n = t, 0
            last, n = t, n + 1
        out.append(_session(bidder, n, start, last))
    return out


def _session(bidder: int, n: int, start: int, last: int) -> dict[str, Any]:
    return {
        "bidder": bidder,
        "bid_count": n,
        "window_start": start,
        "window_end": last + SESSION_GAP_MS,
    }


def q12(events: Records) -> Records:
    """Bids per bidder per tumbling 10 s window."""
    counts: dict[tuple[int, int], int] = defaultdict(int)
    for b in _bids(events):
        counts[b["bidder"], _tumble(b["date_time"])] += 1
    return [
        {
            "bidder": bidder,
            "bid_count": n,
            "window_start": s,
            "window_end": s + WINDOW_MS,
        }
        for (bidder, s), n in counts.items()
    ]


QUERIES: dict[str, Callable[[Records], Records]] = {
    "q0": q0,
    "q1": q1,
    "q2": q2,
    "q3": q3,
    "q4": q4,
    "q5": q5,
    "q7": q7,
    "q8": q8,
    "q11": q11,
    "q12": q12,
}
