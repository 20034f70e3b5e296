"""A WebSocket load generator for ``ws.source`` (and any server taking records).

``python -m benchmarks.ws_load --url ws://127.0.0.1:PORT --clients N --rate R
--seconds S [--encoding json|msgpack] [--batch B] [--bad-every K]``

``N`` clients connect at once and together send ``R`` records/s (an even
share each) for ``S`` seconds, as records like ``{"sensor": "s3", "value": 1.5,
"ts": <epoch ms>}``, ``B`` per frame (1: a bare record; more: an array).
With ``--bad-every K`` every K-th frame of each client is bad, alternately
malformed (truncated JSON, or a byte MessagePack never uses) and a schema
violation (``sensor`` a number, ``value`` a string). Sends are paced on a fixed
schedule; a server that applies backpressure makes them block, and the report
says how far behind the schedule the clients fell.

Importable: the demo drives `run_load` in-process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import msgspec
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

Encoding = Literal["json", "msgpack"]
SENSORS = [f"s{i}" for i in range(10)]


@dataclass
class LoadReport:
    """What `run_load` sent.

    Attributes:
        records: Good records sent (in good frames).
        frames: Frames sent, bad ones included.
        bad_frames: Bad frames sent.
        elapsed: Seconds from the first connection to the last send.
        target_rate: Records/s asked for.
        errors: One line per client that failed (connect or send).
    """

    url: str
    clients: int
    encoding: str
    seconds: float
    records: int = 0
    frames: int = 0
    bad_frames: int = 0
    elapsed: float = 0.0
    target_rate: float = 0.0
    errors: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        """Good records per second actually sent."""
        return self.records / self.elapsed if self.elapsed > 0 else 0.0

    def summary(self) -> str:
        line = (
            f"sent {self.records:,} records in {self.frames:,} frames "
            f"({self.bad_frames:,} bad) from {self.clients} clients in "
            f"{self.elapsed:.2f} s: {self.rate:,.0f} good records/s "
            f"(target {self.target_rate:,.0f}/s, bad frames included)"
        )
        return "\n".join([line, *(f"  error: {e}" for e in self.errors)])

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "rate": round(self.rate, 1)}


class _Frames:
    """Builds one client's frames: good records, and bad frames when asked."""

    def __init__(self, encoding: Encoding, batch: int, seed: int | None) -> None:
        self.encoding = encoding
        self.batch = batch
        self.rng = random.Random(seed)
        self.bad_count = 0
        self._encode = (
            msgspec.json.encode if encoding == "json" else msgspec.msgpack.encode
        )

    def _record(self) -> dict[str, Any]:
        rng = self.rng
        return {
            "sensor": rng.choice(SENSORS),
            "value": round(rng.uniform(0.0, 100.0), 2),
            "ts": time.time_ns() // 1_000_000,  # epoch ms
        }

    def good(self) -> bytes:
        if self.batch == 1:
            return self._encode(self._record())
        return self._encode([self._record() for _ in range(self.batch)])

    def bad(self) -> bytes:
        self.bad_count += 1
        if self.bad_count % 2:
            if self.encoding == "json":
                return b'{"sensor": "s1", "value": '  # malformed: cut short
            return b"\xc1"  # malformed: a byte MessagePack never uses
        return self._encode(
            {"sensor": 3, "value": "high", "ts": time.time_ns() // 1_000_000}
        )


async def _client(
    url: str,
    share: float,
    deadline: float,
    frames: _Frames,
    bad_every: int,
    report: LoadReport,
) -> None:
    text = frames.encoding == "json"
    interval = frames.batch / share  # seconds between frames, on schedule
    loop = asyncio.get_running_loop()
    try:
        async with connect(url, compression=None) as ws:
            start = loop.time()
            sent = 0
            while (now := loop.time()) < deadline:
                due = int((now - start) / interval) + 1
                while sent < due:
                    sent += 1
                    if bad_every and sent % bad_every == 0:
                        await ws.send(frames.bad(), text=text)
                        report.bad_frames += 1
                    else:
                        await ws.send(frames.good(), text=text)
                        report.records += frames.batch
                    report.frames += 1
                await asyncio.sleep(max(0.0, start + due * interval - loop.time()))
    except (OSError, TimeoutError, InvalidHandshake, ConnectionClosed) as exc:
        report.errors.append(f"{type(exc).__name__}: {exc}")


async def run_load(
    url: str,
    *,
    clients: int = 1,
    rate: float = 1000.0,
    seconds: float = 5.0,
    encoding: Encoding = "json",
    batch: int = 1,
    bad_every: int = 0,
    seed: int | None = None,
) -> LoadReport:
    """Send records to ``url`` from ``clients`` connections; return what was sent.

    Args:
        url: ``ws://host:port/path``.
        clients: Connections, all open at once.
        rate: Records per second, all clients together.
        seconds: How long to send.
        encoding: ``json`` (text frames) or ``msgpack`` (binary frames).
        batch: Records per frame (1: a bare record, more: an array).
        bad_every: Every this many frames of a client is bad (0: none).
        seed: Seeds the records' random values (None: random).

    Raises:
        ValueError: An argument is out of range.
    """
    if clients < 1 or rate <= 0 or seconds <= 0 or batch < 1 or bad_every < 0:
        msg = (
            "need clients >= 1, rate > 0, seconds > 0, batch >= 1, bad_every >= 0; "
            f"got {clients}, {rate}, {seconds}, {batch}, {bad_every}"
        )
        raise ValueError(msg)
    report = LoadReport(url, clients, encoding, seconds, target_rate=rate)
    loop = asyncio.get_running_loop()
    started = loop.time()
    deadline = started + seconds
    async with asyncio.TaskGroup() as tg:
        for i in range(clients):
            frames = _Frames(encoding, batch, None if seed is None else seed + i)
            tg.create_task(
                _client(url, rate / clients, deadline, frames, bad_every, report)
            )
    report.elapsed = loop.time() - started
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", required=True, help="ws://host:port/path")
    p.add_argument("--clients", type=int, default=1)
    p.add_argument("--rate", type=float, default=1000.0, help="records/s in all")
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--encoding", choices=["json", "msgpack"], default="json")
    p.add_argument("--batch", type=int, default=1, help="records per frame")
    p.add_argument("--bad-every", type=int, default=0, help="every K-th frame bad")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    args = p.parse_args(argv)
    try:
        report = asyncio.run(
            run_load(
                args.url,
                clients=args.clients,
                rate=args.rate,
                seconds=args.seconds,
                encoding=args.encoding,
                batch=args.batch,
                bad_every=args.bad_every,
                seed=args.seed,
            )
        )
    except ValueError as exc:
        p.error(str(exc))
    print(json.dumps(report.as_dict()) if args.json else report.summary())
    return 1 if report.errors else 0


if __name__ == "__main__":
    sys.exit(main())
