"""A seeded, reproducible Nexmark event generator (persons, auctions, bids).

Written from the Nexmark specification (section 3.2 of the paper, and the
proportions of its reference generator):

* event ``n`` (0-based) is a person if ``n % 50 == 0``, an auction if
  ``n % 50`` is 1-3, else a bid (46 bids in 50 events);
* ``date_time = base_time + n * 100 µs``, truncated to the millisecond:
  10,000 events per second of event time;
* person and auction ids count up from 1000; categories are 10-14;
* hot items: a bid goes to the latest "hot" auction (a multiple of 100 from
  the first id) with probability ``1 - 1/HOT_AUCTION_RATIO``, else to one of
  the last ``IN_FLIGHT_AUCTIONS`` auctions (or a few not created yet); its
  bidder is a hot bidder with probability ``1 - 1/HOT_BIDDER_RATIO``; an
  auction's seller is a hot seller with probability ``1 - 1/HOT_SELLER_RATIO``;
  the others are drawn among the last ``ACTIVE_PEOPLE`` persons (or a few not
  created yet);
* an auction expires 1 ms to twice "the time ``IN_FLIGHT_AUCTIONS`` more
  auctions take to be created" after it is created (``MAX_AUCTION_MS``,
  332 ms at the specification's rate; the same at any ``rate``).

Out-of-order input: ``delay_fraction`` of the events arrive up to
``max_delay_ms`` (uniform) after their ``date_time``; the events are then in
arrival order. Their contents never change, so every query's final answer is
the same as for in-order input.
"""

from __future__ import annotations

import random
from typing import Any

import msgspec

__all__ = [
    "BASE_TIME",
    "FIRST_ID",
    "MAX_AUCTION_MS",
    "RATE",
    "delay",
    "generate",
    "read_events",
    "write_events",
]

BASE_TIME = 1_704_067_200_000
"""2024-01-01T00:00:00Z in epoch ms: the event time of event 0."""

FIRST_ID = 1000
"""The first person id and the first auction id."""

PROPORTION = 50
PERSON_SHARE = 1
AUCTION_SHARE = 3
FIRST_CATEGORY = 10
CATEGORIES = 5
HOT_AUCTION_RATIO = 2
HOT_SELLER_RATIO = 4
HOT_BIDDER_RATIO = 4
HOT_STRIDE = 100
IN_FLIGHT_AUCTIONS = 100
ACTIVE_PEOPLE = 1000
ID_LEAD = 10
RATE = 10_000
"""Events per second of event time (one every 100 µs)."""

MAX_AUCTION_MS = 2 * (IN_FLIGHT_AUCTIONS * PROPORTION // AUCTION_SHARE * 1000 // RATE)
"""An auction's longest life (expires - date_time): 332 ms."""

_FIRST_NAMES = ("Peter", "Paul", "Luke", "John", "Saul", "Vicky", "Kate", "Julie")
_LAST_NAMES = ("Shultz", "Abrams", "Spencer", "White", "Bartels", "Walton", "Smith")
_STATES = ("AZ", "CA", "ID", "OR", "WA", "WY")
_CITIES = ("Phoenix", "Los Angeles", "San Francisco", "Boise", "Portland", "Bend")
_CHANNELS = ("Google", "Facebook", "Baidu", "Apple")


def _persons_before(n: int) -> int:
    """How many persons events ``0 .. n-1`` created."""
    epoch, offset = divmod(n, PROPORTION)
    return epoch * PERSON_SHARE + min(offset, PERSON_SHARE)


def _auctions_before(n: int) -> int:
    epoch, offset = divmod(n, PROPORTION)
    return epoch * AUCTION_SHARE + min(max(offset - PERSON_SHARE, 0), AUCTION_SHARE)


def _price(rng: random.Random) -> int:
    return round(10.0 ** (rng.random() * 6.0) * 100.0)


def _text(rng: random.Random, size: int) -> str:
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz ") for _ in range(size))


def _recent_person(rng: random.Random, made: int) -> int:
    """A person among the last ACTIVE_PEOPLE made (or up to ID_LEAD ahead)."""
    active = min(max(made, 1), ACTIVE_PEOPLE)
    return FIRST_ID + max(made, 1) - active + rng.randrange(active + ID_LEAD)


def _event(n: int, rng: random.Random, base_time: int, rate: int) -> dict[str, Any]:
    t = base_time + n * 1000 // rate
    offset = n % PROPORTION
    people = _persons_before(n)
    if offset < PERSON_SHARE:
        return {
            "type": "person",
            "id": FIRST_ID + people,
            "name": f"{rng.choice(_FIRST_NAMES)} {rng.choice(_LAST_NAMES)}",
            "email_address": f"{_text(rng, 5).replace(' ', 'x')}@example.com",
            "credit_card": " ".join(f"{rng.randrange(10_000):04d}" for _ in range(4)),
            "city": rng.choice(_CITIES),
            "state": rng.choice(_STATES),
            "date_time": t,
            "extra": _text(rng, 8),
        }
    auctions = _auctions_before(n)
    if offset < PERSON_SHARE + AUCTION_SHARE:
        if people and rng.randrange(HOT_SELLER_RATIO) > 0:
            seller = FIRST_ID + (people - 1) // HOT_STRIDE * HOT_STRIDE
        else:
            seller = _recent_person(rng, people)
        initial = _price(rng)
        # The time IN_FLIGHT_AUCTIONS more auctions take to be made at the
        # specification's rate, in ms, whatever the rate: auctions last at
        # most MAX_AUCTION_MS, which q4's join window covers.
        horizon = MAX_AUCTION_MS // 2
        return {
            "type": "auction",
            "id": FIRST_ID + auctions,
            "item_name": _text(rng, 6),
            "description": _text(rng, 12),
            "initial_bid": initial,
            "reserve": initial + _price(rng),
            "date_time": t,
            "expires": t + 1 + rng.randrange(2 * horizon),
            "seller": seller,
            "category": FIRST_CATEGORY + rng.randrange(CATEGORIES),
            "extra": _text(rng, 8),
        }
    if rng.randrange(HOT_AUCTION_RATIO) > 0:
        auction = FIRST_ID + (auctions - 1) // HOT_STRIDE * HOT_STRIDE
    else:
        active = min(auctions, IN_FLIGHT_AUCTIONS)
        auction = FIRST_ID + auctions - active + rng.randrange(active + ID_LEAD)
    if people and rng.randrange(HOT_BIDDER_RATIO) > 0:
        bidder = FIRST_ID + (people - 1) // HOT_STRIDE * HOT_STRIDE + 1
    else:
        bidder = _recent_person(rng, people)
    channel = rng.choice(_CHANNELS)
    return {
        "type": "bid",
        "auction": auction,
        "bidder": bidder,
        "price": _price(rng),
        "channel": channel,
        "url": f"https://www.nexmark.com/{channel.lower()}/item.htm?id={auction}",
        "date_time": t,
        "extra": _text(rng, 4),
    }


def generate(
    n: int,
    *,
    seed: int = 0,
    base_time: int = BASE_TIME,
    delay_fraction: float = 0.0,
    max_delay_ms: int = 0,
    rate: int = RATE,
) -> list[dict[str, Any]]:
    """Return ``n`` events in arrival order (see the module docstring).

    The same arguments always give the same events. Out-of-order arrival
    (``delay_fraction`` > 0) only reorders them. ``rate`` (events per second
    of event time) other than the specification's 10,000 lets a few thousand
    events span several windows, for tests.
    """
    rng = random.Random(seed)
    events = [_event(i, rng, base_time, rate) for i in range(n)]
    if delay_fraction > 0 and max_delay_ms > 0:
        events = delay(events, delay_fraction, max_delay_ms, seed=seed)
    return events


def delay(
    events: list[dict[str, Any]], fraction: float, max_delay_ms: int, *, seed: int
) -> list[dict[str, Any]]:
    """Return the events in the order they arrive if ``fraction`` are late.

    A delayed event arrives ``1 .. max_delay_ms`` ms after its ``date_time``;
    the others arrive at it; ties keep the original order.
    """
    rng = random.Random(seed ^ 0x5EED)
    arrival = []
    for i, e in enumerate(events):
        late = rng.random() < fraction
        arrival.append(
            (e["date_time"] + (rng.randint(1, max_delay_ms) if late else 0), i)
        )
    arrival.sort()
    return [events[i] for _, i in arrival]


_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder()


def write_events(path: str, events: list[dict[str, Any]]) -> None:
    """Write events as JSON Lines, one object per line."""
    with open(path, "wb") as f:
        for start in range(0, len(events), 4096):
            chunk = events[start : start + 4096]
            f.write(b"\n".join(_ENCODER.encode(e) for e in chunk) + b"\n")


def read_events(path: str) -> list[dict[str, Any]]:
    """Read a JSON Lines events file."""
    with open(path, "rb") as f:
        return [_DECODER.decode(line) for line in f if line.strip()]
