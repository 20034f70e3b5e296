"""``make crash-demo``: kill -9 an ingestion service twice; nothing lost, nothing twice.

A sequenced feed (a WebSocket server in this process, standing for a sensor
hub or market-data feed that can replay: ``?since=N`` resends from N+1)
produces records at a steady rate. The service, ``examples/ws_resume.yaml``
run by ``flowstream run`` in a child process, aggregates them into
per-sensor one-second windows in SQLite, with checkpoints every 200 ms. The
demo SIGKILLs it twice mid-stream and restarts it each time; once the feed
is exhausted it stops the service gracefully and compares every window in
SQLite with windows computed straight from the feed: same rows, same counts
(a record counted twice would show), same sums.

    python -m examples.crash_demo [--records 160000] [--rate 40000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import msgspec
from websockets.asyncio.server import ServerConnection, serve

from flowstream import read_workflow, write_workflow

HERE = Path(__file__).parent
OUT = Path("demo-output") / "crash"
SENSORS = 8
EVENT_RATE = 8192  # records per event-time second
T0_MS = 1_700_000_000_000  # event time of record 1 (epoch ms), on a whole second


def record(seq: int) -> dict[str, Any]:
    """Record ``seq`` of the feed: the same every time it is sent."""
    return {
        "seq": seq,
        "sensor": f"s{seq % SENSORS}",
        "value": float((seq * 7919) % 1000),
        "ts": T0_MS + (seq - 1) * 1000 // EVENT_RATE,  # epoch ms
    }


def expected_windows(total: int) -> dict[tuple[str, int], tuple[int, float, float]]:
    """(sensor, window start in epoch ms) -> (n, total, max), from the feed."""
    n: dict[tuple[str, int], int] = defaultdict(int)
    sums: dict[tuple[str, int], float] = defaultdict(float)
    top: dict[tuple[str, int], float] = {}
    for seq in range(1, total + 1):
        r = record(seq)
        key = (r["sensor"], T0_MS + (seq - 1) // EVENT_RATE * 1000)
        n[key] += 1
        sums[key] += r["value"]
        top[key] = max(top.get(key, r["value"]), r["value"])
    return {k: (n[k], sums[k], top[k]) for k in n}


class Feed:
    """Produces ``total`` records at ``rate``/s; any client may resume."""

    def __init__(self, total: int, rate: float) -> None:
        self.total = total
        self.rate = rate
        self.started = time.monotonic()
        self.resumes: list[int] = []

    def head(self) -> int:
        """The last sequence produced so far."""
        return min(self.total, int((time.monotonic() - self.started) * self.rate))

    async def handler(self, ws: ServerConnection) -> None:
        query = parse_qs(urlparse(ws.request.path if ws.request else "").query)
        since = int(query.get("since", ["0"])[0])
        self.resumes.append(since)
        seq = since + 1
        with contextlib.suppress(Exception):  # the service was killed
            while seq <= self.total:
                head = self.head()
                if seq > head:
                    await asyncio.sleep(0.005)
                    continue
                end = min(head, seq + 499)
                await ws.send(json.dumps([record(s) for s in range(seq, end + 1)]))
                seq = end + 1
            await ws.wait_closed()


def last_epoch(store: Path) -> tuple[int, int]:
    """The service's last committed epoch and the feed sequence it had handed on."""
    try:
        with contextlib.closing(sqlite3.connect(store, timeout=1)) as conn:
            row = conn.execute(
                "select epoch, states from epochs order by epoch desc limit 1"
            ).fetchone()
    except sqlite3.OperationalError:
        return -1, 0
    if row is None:
        return -1, 0
    states = msgspec.msgpack.decode(row[1])
    if "feed" not in states:
        return row[0], 0
    return row[0], int(msgspec.msgpack.decode(states["feed"]).get("seq", 0))


def checkpointed_seq(store: Path) -> int:
    """The feed sequence the service's last committed epoch had handed on."""
    return last_epoch(store)[1]


def service_file(out: Path, url: str) -> Path:
    """The example workflow, pointed at the feed, writing under ``out``."""
    wf = read_workflow(HERE / "ws_resume.yaml")
    wf.get_node("feed").config["url"] = url
    wf.get_node("store").config["path"] = str(out / "windows.db")
    assert wf.checkpoint is not None
    wf.checkpoint = msgspec.structs.replace(
        wf.checkpoint, path=str(out / "checkpoints.db")
    )
    path = out / "ws_resume.yaml"
    write_workflow(wf, path)
    return path


def start_service(path: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "flowstream", "run", str(path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


async def wait_for_seq(
    store: Path, at_least: int, proc: Any, limit: float, after_epoch: int = -1
) -> int:
    """Wait until this process committed an epoch at or past ``at_least``."""
    deadline = time.monotonic() + limit
    while True:
        epoch, seq = last_epoch(store)
        if seq >= at_least and epoch > after_epoch:
            return seq
        if proc.poll() is not None:
            err = proc.stderr.read().decode() if proc.stderr else ""
            msg = f"the service exited with {proc.returncode}: {err}"
            raise RuntimeError(msg)
        if time.monotonic() > deadline:
            msg = f"no checkpoint reached seq {at_least} within {limit:g} s"
            raise RuntimeError(msg)
        await asyncio.sleep(0.02)


def prepare(out: Path) -> None:
    """Make the output folder and clear the last run's databases."""
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.db*"):
        old.unlink()


async def main(records: int, rate: float, out: Path = OUT) -> int:
    prepare(out)
    feed = Feed(records, rate)
    async with serve(feed.handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        url = f"ws://127.0.0.1:{port}/feed"
        path = service_file(out, url)
        store = out / "checkpoints.db"
        print(f"== a feed of {records:,} records at {rate:,.0f}/s on {url}")
        print(f"== the service: flowstream run {path}")
        proc = start_service(path)
        restarted_after = -1  # the epoch a restarted service resumes from
        for kill, share in enumerate((0.25, 0.55), start=1):
            seq = await wait_for_seq(
                store, int(records * share), proc, 60, restarted_after
            )
            await asyncio.sleep(0.05)  # land between two checkpoints
            os.kill(proc.pid, signal.SIGKILL)
            proc.communicate()
            restarted_after, at = last_epoch(store)
            print(
                f"   kill -9 #{kill}: feed at {feed.head():,}, "
                f"last checkpoint at {at:,} (saw {seq:,})"
            )
            proc = start_service(path)
            print("   restarted")
        # The restarted service's own epoch, so its signal handler is set.
        await wait_for_seq(store, records, proc, 60, restarted_after)
        print("== feed exhausted and checkpointed; stopping gracefully")
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.to_thread(proc.communicate, None, 60)
        if proc.returncode != 0:
            print(err.decode(), file=sys.stderr)
            return 1
    return report(feed, records, out / "windows.db")


def report(feed: Feed, records: int, db: Path) -> int:
    expected = expected_windows(records)
    with contextlib.closing(sqlite3.connect(db)) as conn:
        rows = conn.execute(
            "select sensor, window_start, n, total, max from windows"
        ).fetchall()
    got = {(s, w): (n, t, m) for s, w, n, t, m in rows}
    missing = expected.keys() - got.keys()
    extra = got.keys() - expected.keys()
    wrong = [
        k
        for k in expected.keys() & got.keys()
        if got[k][0] != expected[k][0]
        or abs(got[k][1] - expected[k][1]) > 1e-6 * max(1.0, abs(expected[k][1]))
        or got[k][2] != expected[k][2]
    ]
    counted = sum(n for n, _, _ in got.values())
    print(f"\n   resumes asked of the feed: since={feed.resumes}")
    print(f"   records in the feed      {records:>10,}")
    print(f"   records in the windows   {counted:>10,}  (sum of n in SQLite)")
    print(f"   windows expected         {len(expected):>10,}")
    print(f"   windows in SQLite        {len(got):>10,}")
    print(f"   missing / extra / wrong  {len(missing)} / {len(extra)} / {len(wrong)}")
    ok = not (missing or extra or wrong) and counted == records
    print("== OK: nothing lost, nothing twice" if ok else "== MISMATCH")
    return 0 if ok else 1


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=160_000)
    parser.add_argument("--rate", type=float, default=40_000)
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.records, args.rate)))


if __name__ == "__main__":
    cli()
