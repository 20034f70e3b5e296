"""``make demo``: the WebSocket ingestion service, end to end, on 127.0.0.1.

Runs ``examples/ws_ingest.yaml`` (free ports, files under ``demo-output/``),
drives it with the load generator (JSON and MessagePack clients, a few bad
frames), watches the live aggregates as a subscriber would, stops the service
gracefully, then prints a summary and rows from SQLite. No outside services.

    python -m examples.ingest_demo [--seconds 4] [--clients 8] [--rate 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect

from benchmarks.ws_load import Encoding, run_load
from flowstream import FlowRuntime, NodeEvent, WorkflowStarted, read_workflow
from flowstream.cli._display import iso_utc

ENCODINGS: tuple[Encoding, ...] = ("json", "msgpack")

HERE = Path(__file__).parent
OUT = Path("demo-output")


def service(out: Path) -> Any:
    """The example workflow, on free ports, writing under ``out``."""
    wf = read_workflow(HERE / "ws_ingest.yaml")
    wf.get_node("ingest").config["port"] = 0
    wf.get_node("live").config["port"] = 0
    wf.get_node("store").config["path"] = str(out / "ingest.db")
    wf.get_node("dead_letters").config["path"] = str(out / "dead_letters.jsonl")
    return wf


def prepare(out: Path) -> None:
    """Make the output folder and clear the last run's files."""
    out.mkdir(exist_ok=True)
    for old in ("ingest.db", "ingest.db-wal", "ingest.db-shm", "dead_letters.jsonl"):
        (out / old).unlink(missing_ok=True)


async def watch_live(url: str, seen: list[Any], ready: asyncio.Event) -> None:
    """Subscribe to the live aggregates, as a dashboard would."""
    async with connect(url) as ws:
        ready.set()
        async for message in ws:
            seen.extend(json.loads(message))


async def main(seconds: float, clients: int, rate: float, out: Path = OUT) -> int:
    prepare(out)
    runtime = FlowRuntime()
    urls: dict[str, str] = {}
    started = asyncio.Event()

    def on_event(event: Any) -> None:
        if isinstance(event, NodeEvent) and event.name == "listening":
            urls[event.node_id] = event.data["url"]
        elif isinstance(event, WorkflowStarted):
            started.set()

    runtime.bus.add_listener(on_event)
    executor = runtime.executor(service(out))
    live: list[Any] = []
    print(f"== starting the ingestion service ({HERE / 'ws_ingest.yaml'})")
    async with asyncio.TaskGroup() as tg:
        run = tg.create_task(executor.run())
        await started.wait()
        ingest_url = urls["ingest"]
        live_url = urls["live"]
        print(f"   ingest {ingest_url}   live {live_url}")
        subscribed = asyncio.Event()
        watcher = tg.create_task(watch_live(live_url, live, subscribed))
        await subscribed.wait()

        print(f"== {clients} clients sending {rate:,.0f} records/s for {seconds:g} s")
        t0 = time.perf_counter()
        half = max(1, clients // 2)
        loads = [
            tg.create_task(
                run_load(
                    ingest_url,
                    clients=half,
                    rate=rate / 2,
                    seconds=seconds,
                    encoding=encoding,
                    batch=10,
                    bad_every=200,
                    seed=seed,
                )
            )
            for seed, encoding in enumerate(ENCODINGS)
        ]
        shown = ""
        while not all(t.done() for t in loads):
            await asyncio.wait(loads, timeout=1.0)
            stats = executor.statistics()
            records = stats["ingest"].items_out - stats["ingest"].dead_letters
            line = (
                f"in {records:>8,}  "
                f"windows {stats['per_sensor'].items_out:>5,}  "
                f"stored {stats['store'].items_in:>5,}  live {len(live):>5,}"
            )
            # The load ends on a tick: say each state once, not twice.
            if line != shown:
                print(f"   t={time.perf_counter() - t0:4.1f}s  {line}")
                shown = line
        sent = [t.result() for t in loads]
        print("== stopping gracefully (drain: every record read reaches the sinks)")
        executor.stop()
        result = await run
        watcher.cancel()
    elapsed = time.perf_counter() - t0
    return summarize(result, sent, live, elapsed, out)


def iso_time(value: float) -> str:
    """An event time as ISO 8601 UTC with ms (display only; data keeps the number).

    Window bounds are epoch milliseconds (ints) or, in older data, epoch
    seconds (floats): a value past 1e11 is read as milliseconds.
    """
    seconds = value / 1000 if value > 1e11 else value
    return iso_utc(seconds)


def describe_dead_letter(line: str, limit: int = 72) -> list[str]:
    """A dead letter's node and reason in full, its item cut with a mark."""
    doc = json.loads(line)
    item = json.dumps(doc.get("item"), separators=(",", ":"))
    if len(item) > limit:
        item = f"{item[:limit]}... ({len(item) - limit} more characters)"
    return [f"node {doc.get('node')!r}: {doc.get('reason')}", f"item {item}"]


def summarize(
    result: Any, sent: list[Any], live: list[Any], elapsed: float, out: Path
) -> int:
    stats = result.stats
    records_sent = sum(r.records for r in sent)
    bad_sent = sum(r.bad_frames for r in sent)
    bad_in = stats["ingest"].dead_letters
    records_in = stats["ingest"].items_out - bad_in  # items_out counts `error` too
    windows = stats["per_sensor"].items_out
    late = stats["per_sensor"].dead_letters
    db = out / "ingest.db"
    with contextlib.closing(sqlite3.connect(db)) as conn:
        stored = conn.execute("select count(*) from sensor_windows").fetchone()[0]
        total_n = conn.execute("select sum(n) from sensor_windows").fetchone()[0]
        rows = conn.execute(
            "select sensor, window_start, n, round(mean, 3), round(max, 3) "
            "from sensor_windows order by window_start, sensor limit 6"
        ).fetchall()
    dead_path = out / "dead_letters.jsonl"
    dead = dead_path.read_text().splitlines() if dead_path.exists() else []
    print(f"\n== {result.status} in {result.duration_s:.1f} s")
    print(f"   records sent     {records_sent:>10,}  (+ {bad_sent} bad frames)")
    print(f"   records in       {records_in:>10,}  ({records_in / elapsed:,.0f}/s)")
    print(f"   bad frames       {bad_in:>10,}  -> {dead_path}")
    print(f"   late records     {late:>10,}")
    print(f"   windows          {windows:>10,}  stored in SQLite: {stored:,}")
    print(f"   records counted  {total_n or 0:>10,}  (sum of n over stored windows)")
    print(f"   live updates     {len(live):>10,}  received by the subscriber")
    print(f"\n   sensor_windows (first rows of {db}):")
    print(
        f"   {'sensor':<8} {'window_start (UTC)':<24} {'n':>6} {'mean':>8} {'max':>8}"
    )
    for sensor, start, n, mean, peak in rows:
        print(f"   {sensor:<8} {iso_time(start):<24} {n:>6} {mean:>8} {peak:>8}")
    if dead:
        print("\n   a dead letter:")
        for line in describe_dead_letter(dead[0]):
            print(f"     {line}")
    ok = (
        result.status == "completed"
        and records_in == records_sent
        and bad_in == bad_sent
        and stored == windows
        and (total_n or 0) + late == records_in
    )
    verdict = (
        "OK: nothing lost, nothing counted twice"
        if ok
        else "FAIL: the counts above do not match"
    )
    print(f"\n== check: {verdict}")
    return 0 if ok else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rate", type=float, default=20_000.0)
    args = parser.parse_args()
    raise SystemExit(asyncio.run(main(args.seconds, args.clients, args.rate)))
