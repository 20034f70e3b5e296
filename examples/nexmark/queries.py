"""Nexmark's queries built in Python, with Python callables where CEL would be.

Each ``qN()`` returns a `Workflow` with the same shape as ``qN.yaml``: a
``file.source`` node ``events`` (events.jsonl; the benchmark replaces it),
the query, and a ``sink.collect`` node ``result``. Node configs reference
the functions below as ``"examples.nexmark.queries:name"``.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any, Literal, TypedDict

from flowstream import Workflow

if TYPE_CHECKING:
    from collections.abc import Callable

    from flowstream.dataflow import JoinChange, Joined

__all__ = [
    "EVENT_FIELDS",
    "QUERIES",
    "READS",
    "Auction",
    "Bid",
    "Event",
    "Person",
    "variants",
]

HERE = "examples.nexmark.queries"
WINDOW: dict[str, Any] = {
    "timestamp_field": "date_time",
    "allowed_lateness_ms": 4000,
}
JOIN_TIMES: dict[str, Any] = {
    "left_time": "x.date_time",
    "right_time": "x.date_time",
    "allowed_lateness_ms": 4000,
}

Record = dict[str, Any]


# The events as the queries' sources decode them: only the fields a query
# declares (``READS``) are there, so every field but ``type`` may be missing.


class Person(TypedDict, total=False):
    """A person event (``type: person``)."""

    type: Literal["person"]
    id: int
    name: str
    email_address: str
    credit_card: str
    city: str
    state: str
    date_time: int
    extra: str


class Auction(TypedDict, total=False):
    """An auction event (``type: auction``)."""

    type: Literal["auction"]
    id: int
    item_name: str
    description: str
    initial_bid: int
    reserve: int
    date_time: int
    expires: int
    seller: int
    category: int
    extra: str


class Bid(TypedDict, total=False):
    """A bid event (``type: bid``)."""

    type: Literal["bid"]
    auction: int
    bidder: int
    price: int
    channel: str
    url: str
    date_time: int
    extra: str


Event = Person | Auction | Bid
"""One event; its ``type`` says which."""


def _fn(name: str) -> str:
    return f"{HERE}:{name}"


EVENT_FIELDS: dict[str, dict[str, str]] = {
    "person": {
        "id": "int",
        "name": "str",
        "email_address": "str",
        "credit_card": "str",
        "city": "str",
        "state": "str",
        "date_time": "int",
        "extra": "str",
    },
    "auction": {
        "id": "int",
        "item_name": "str",
        "description": "str",
        "initial_bid": "int",
        "reserve": "int",
        "date_time": "int",
        "expires": "int",
        "seller": "int",
        "category": "int",
        "extra": "str",
    },
    "bid": {
        "auction": "int",
        "bidder": "int",
        "price": "int",
        "channel": "str",
        "url": "str",
        "date_time": "int",
        "extra": "str",
    },
}
"""Every field of each event kind (``type``), as ``file.source`` variants."""

READS: dict[str, dict[str, list[str]]] = {
    "q0": {"bid": ["auction", "bidder", "price", "date_time", "extra"]},
    "q1": {"bid": ["auction", "bidder", "price", "date_time", "extra"]},
    "q2": {"bid": ["auction", "price"]},
    "q3": {
        "person": ["id", "name", "city", "state", "date_time"],
        "auction": ["id", "seller", "category", "date_time"],
    },
    "q4": {
        "auction": ["id", "category", "date_time", "expires"],
        "bid": ["auction", "price", "date_time"],
    },
    "q5": {"bid": ["auction", "date_time"]},
    "q7": {"bid": ["auction", "bidder", "price", "date_time", "extra"]},
    "q8": {"person": ["id", "name", "date_time"], "auction": ["seller", "date_time"]},
    "q11": {"bid": ["bidder", "date_time"]},
    "q12": {"bid": ["bidder", "date_time"]},
}
"""The fields each query reads, by event kind: what its source decodes."""


def variants(query: str) -> dict[str, dict[str, str]]:
    """The ``file.source`` variants of a query: only the fields it reads."""
    reads = READS[query]
    return {
        kind: {f: fields[f] for f in reads.get(kind, [])}
        for kind, fields in EVENT_FIELDS.items()
    }


def _start(name: str) -> Workflow:
    return Workflow(f"nexmark-{name}-python").node(
        "events", "file.source", path="events.jsonl", variants=variants(name)
    )


def _chain(wf: Workflow, ids: list[str]) -> Workflow:
    for a, b in zip(["events", *ids], [*ids, "result"], strict=True):
        wf.connect(a, b)
    return wf.node("result", "sink.collect")


# --- per-item functions ---------------------------------------------------------------


def is_bid(x: Event) -> bool:
    return x["type"] == "bid"


def is_auction(x: Event) -> bool:
    return x["type"] == "auction"


def q0_shape(b: Bid) -> Record:
    return {
        "auction": b["auction"],
        "bidder": b["bidder"],
        "price": b["price"],
        "date_time": b["date_time"],
        "extra": b["extra"],
    }


def q1_shape(b: Bid) -> Record:
    return {
        "auction": b["auction"],
        "bidder": b["bidder"],
        # price * 908 is an exact int: the same float as round(price * 0.908, 3).
        "price": b["price"] * 908 / 1000,
        "date_time": b["date_time"],
        "extra": b["extra"],
    }


def q2_keep(x: Event) -> bool:
    return x["type"] == "bid" and x["auction"] % 123 == 0


def q2_shape(b: Bid) -> Record:
    return {"auction": b["auction"], "price": b["price"]}


def q3_auction(x: Event) -> bool:
    return x["type"] == "auction" and x["category"] == 10


def q3_seller(x: Event) -> bool:
    return x["type"] == "person" and x["state"] in ("OR", "ID", "CA")


def q3_shape(pair: JoinChange[Auction, Person]) -> Record:
    p = pair["right"]
    return {
        "name": p["name"],
        "city": p["city"],
        "state": p["state"],
        "id": pair["left"]["id"],
    }


def q4_by_auction(pair: Joined[Auction, Bid]) -> Record:
    a = pair["left"]
    return {"key": [a["id"], a["category"]], "value": pair["right"]["price"]}


def q4_by_category(final: Record) -> Record:
    return {"key": final["key"][1], "value": final["value"]}


def q4_shape(mean: Record) -> Record:
    return {"category": mean["key"], "avg_final": mean["value"]}


def q5_hottest(window: Record) -> list[Record]:
    return [
        {
            "window_start": r["start"],
            "window_end": r["end"],
            "auction": r["key"],
            "num": r["count"],
        }
        for r in window["value"]
    ]


def q7_highest(window: Record) -> list[Record]:
    start, end = window["start"], window["end"]
    return [
        {
            "window_start": start,
            "window_end": end,
            "auction": b["auction"],
            "bidder": b["bidder"],
            "price": b["price"],
            "date_time": b["date_time"],
            "extra": b["extra"],
        }
        for b in window["value"]
    ]


def q8_not_bid(x: Event) -> bool:
    return x["type"] != "bid"


def q8_role(x: Person | Auction) -> Record:
    if x["type"] == "person":
        return {
            "id": x["id"],
            "date_time": x["date_time"],
            "joined": 1,
            "opened": 0,
            "name": x["name"],
        }
    return {
        "id": x["seller"],
        "date_time": x["date_time"],
        "joined": 0,
        "opened": 1,
        "name": "",
    }


def q8_both(w: Record) -> bool:
    return bool(w["value"]["joined"] and w["value"]["opened"])


def q8_shape(w: Record) -> Record:
    return {
        "id": w["key"],
        "name": w["value"]["name"],
        "window_start": w["start"],
        "window_end": w["end"],
    }


def per_bidder_shape(w: Record) -> Record:
    return {
        "bidder": w["key"],
        "bid_count": w["count"],
        "window_start": w["start"],
        "window_end": w["end"],
    }


# --- the queries ----------------------------------------------------------------------


def q0() -> Workflow:
    wf = _start("q0").node("bids", "transform.filter", fn=_fn("is_bid"))
    wf.node("result_shape", "transform.map", fn=_fn("q0_shape"))
    return _chain(wf, ["bids", "result_shape"])


def q1() -> Workflow:
    wf = _start("q1").node("bids", "transform.filter", fn=_fn("is_bid"))
    wf.node("result_shape", "transform.map", fn=_fn("q1_shape"))
    return _chain(wf, ["bids", "result_shape"])


def q2() -> Workflow:
    wf = _start("q2").node("bids", "transform.filter", fn=_fn("q2_keep"))
    wf.node("result_shape", "transform.map", fn=_fn("q2_shape"))
    return _chain(wf, ["bids", "result_shape"])


def q3() -> Workflow:
    wf = (
        _start("q3")
        .node("auctions", "transform.filter", fn=_fn("q3_auction"))
        .node("sellers", "transform.filter", fn=_fn("q3_seller"))
        .node(
            "join",
            "join.changelog",
            left_key="x.seller",
            right_key="x.id",
            left_retention_ms=10_000,
            right_retention_ms=60_000,
            **JOIN_TIMES,
        )
        .node("result_shape", "transform.map", fn=_fn("q3_shape"))
        .node("result", "sink.collect")
    )
    for edge in (
        "events -> auctions",
        "events -> sellers",
        "auctions -> join.left",
        "sellers -> join.right",
        "join -> result_shape",
        "result_shape -> result",
    ):
        wf.connect(edge)
    return wf


def q4() -> Workflow:
    wf = (
        _start("q4")
        .node("auctions", "transform.filter", fn=_fn("is_auction"))
        .node("bids", "transform.filter", fn=_fn("is_bid"))
        .node(
            "join",
            "join.interval",
            left_key="x.id",
            right_key="x.auction",
            left_time="x.date_time",
            right_time="x.date_time",
            left_end="x.expires",
            upper_ms=60_000,
            allowed_lateness_ms=4000,
        )
        .node("by_auction", "transform.map", fn=_fn("q4_by_auction"))
        .node("final_price", "transform.reduce", op="max", keyed=True)
        .node("by_category", "transform.map", fn=_fn("q4_by_category"))
        .node("per_category", "transform.reduce", op="mean", keyed=True)
        .node("result_shape", "transform.map", fn=_fn("q4_shape"))
        .node("result", "sink.collect")
    )
    chain = [
        "join",
        "by_auction",
        "final_price",
        "by_category",
        "per_category",
        "result_shape",
        "result",
    ]
    for edge in (
        "events -> auctions",
        "events -> bids",
        "auctions -> join.left",
        "bids -> join.right",
    ):
        wf.connect(edge)
    for a, b in itertools.pairwise(chain):
        wf.connect(a, b)
    return wf


def q5() -> Workflow:
    wf = (
        _start("q5")
        .node("bids", "transform.filter", fn=_fn("is_bid"))
        .node(
            "counts",
            "window.sliding",
            size_ms=10_000,
            slide_ms=2_000,
            key_field="auction",
            **WINDOW,
        )
        .node(
            "per_window",
            "window.tumbling",
            size_ms=2_000,
            timestamp_field="start",
            op="max_rows",
            value="x.count",
        )
        .node("hottest", "transform.flat_map", fn=_fn("q5_hottest"))
    )
    return _chain(wf, ["bids", "counts", "per_window", "hottest"])


def q7() -> Workflow:
    wf = (
        _start("q7")
        .node("bids", "transform.filter", fn=_fn("is_bid"))
        .node(
            "windows",
            "window.tumbling",
            size_ms=10_000,
            op="max_rows",
            value="x.price",
            **WINDOW,
        )
        .node("highest", "transform.flat_map", fn=_fn("q7_highest"))
    )
    return _chain(wf, ["bids", "windows", "highest"])


def q8() -> Workflow:
    aggs = {
        "joined": {"op": "sum", "value": "x.joined"},
        "opened": {"op": "sum", "value": "x.opened"},
        "name": {"op": "max", "value": "x.name"},
    }
    wf = (
        _start("q8")
        .node("people_and_auctions", "transform.filter", fn=_fn("q8_not_bid"))
        .node("roles", "transform.map", fn=_fn("q8_role"))
        .node(
            "windows",
            "window.tumbling",
            size_ms=10_000,
            key_field="id",
            aggs=aggs,
            **WINDOW,
        )
        .node("sellers", "transform.filter", fn=_fn("q8_both"))
        .node("result_shape", "transform.map", fn=_fn("q8_shape"))
    )
    return _chain(
        wf, ["people_and_auctions", "roles", "windows", "sellers", "result_shape"]
    )


def q11() -> Workflow:
    wf = (
        _start("q11")
        .node("bids", "transform.filter", fn=_fn("is_bid"))
        .node("sessions", "window.session", gap_ms=10_000, key_field="bidder", **WINDOW)
        .node("result_shape", "transform.map", fn=_fn("per_bidder_shape"))
    )
    return _chain(wf, ["bids", "sessions", "result_shape"])


def q12() -> Workflow:
    wf = (
        _start("q12")
        .node("bids", "transform.filter", fn=_fn("is_bid"))
        .node(
            "windows", "window.tumbling", size_ms=10_000, key_field="bidder", **WINDOW
        )
        .node("result_shape", "transform.map", fn=_fn("per_bidder_shape"))
    )
    return _chain(wf, ["bids", "windows", "result_shape"])


QUERIES: dict[str, Callable[[], Workflow]] = {
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
