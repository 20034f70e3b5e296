"""The soak: kill -9 a checkpointed ingestion service again and again, flood another.

One seed drives three parts; `run_soak` returns 0 only if nothing was lost
or written twice anywhere.

1. **Kills.** The feed of ``examples/crash_demo.py`` (a WebSocket server that
   produces sequenced records at a steady pace and resends from ``?since=N``)
   feeds a service run by ``flowstream run`` in a child process:
   ``ws.source`` (client, ``seq_field``, ``resume_query``, an ingest
   ``journal``) into a ``file.sink``, a keyless ``sqlite.sink`` and a keyed
   count (``transform.scan`` into a keyed ``sqlite.sink``), checkpointed every
   `INTERVAL_MS`. The service is started ``kills`` times and each time killed
   with SIGKILL: at every fault point of `flowstream.runtime.checkpointing.faults`
   (``FLOWSTREAM_FAULT``; at epoch 0, the start of a fresh store, and at later
   epochs) and at random instants: during start-up, during the process's
   first epoch (just after it reached the feed), or mid-run.
2. **Snapshots.** At random instants while a service runs, its directory is
   copied, as a backup would be taken: the sinks after the checkpoint store,
   the journal before or after it (by the seed). SQLite files are copied with
   SQLite's backup API: a byte copy of a live WAL database is not a
   consistent file. Every copy is later resumed on its own and must end as
   exact as the original.
3. **Flood.** A ``ws.source`` server (``encoding: auto``, a schema, frame
   limits, a journal) gets good records interleaved with bad frames of every
   class: malformed JSON, invalid MessagePack, wrong schema, binary garbage,
   oversize, over the hard limit (its connection is closed), deeply nested
   JSON and MessagePack. Every good record must come out once and every bad
   frame must be dead-lettered once, and the service must survive.

Workflows use paths relative to their directory and every service runs in its
own directory, so a copied directory is the same run (same workflow key).
Parts 1 and 2 are in `tests.soak.kills`, part 3 in `tests.soak.flood`, the
child processes in `tests.soak.service`, the counts in `tests.soak.report`.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import sys
import time
from typing import IO

from websockets.asyncio.server import serve

from examples.crash_demo import Feed
from flowstream import write_workflow

from .flood import flood_phase
from .kills import finish, kill_phase, service_workflow
from .report import Report, SoakConfig
from .service import kill_all


async def run_soak(cfg: SoakConfig, out: IO[str] = sys.stdout) -> int:
    """Run the whole soak; print the counts; 0 if nothing was lost or twice.

    Bounded: past `SoakConfig.limit` seconds the services are killed and the
    soak fails, saying so.
    """
    report = Report()
    try:
        async with asyncio.timeout(cfg.limit):
            await _soak(cfg, report, out)
    except TimeoutError:
        report.problems.append(f"the soak overran its bound of {cfg.limit:g} s")
    finally:
        kill_all()
    report.print(out)
    return 0 if report.ok else 1


async def _soak(cfg: SoakConfig, report: Report, out: IO[str]) -> None:
    rng = random.Random(cfg.seed)
    started = time.monotonic()
    if cfg.workdir.exists():
        shutil.rmtree(cfg.workdir)
    live = cfg.workdir / "live"
    live.mkdir(parents=True)
    feed = Feed(cfg.records, cfg.rate)
    print(
        f"== soak seed {cfg.seed}: {cfg.kills} kills, a feed of {cfg.records:,} "
        f"records over {cfg.duration:g} s, {cfg.snapshots} snapshots, a flood of "
        f"{cfg.flood_good:,} good records and {cfg.flood_bad} bad frames per class",
        file=out,
    )
    async with serve(feed.handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        url = f"ws://127.0.0.1:{port}/feed"
        write_workflow(service_workflow(url), live / "wf.json")
        feed.started = time.monotonic()  # the feed starts with the first service
        snapshots = await kill_phase(cfg, feed, live, rng, report)
        print(f"   kills done in {time.monotonic() - started:.0f} s", file=out)
        if not report.problems:
            for directory in (live, *snapshots):
                await finish(directory, cfg.records, cfg.duration + 120, report)
    elapsed = time.monotonic() - started
    print(f"   resumed the service and its copies: {elapsed:.0f} s", file=out)
    await flood_phase(cfg, rng, report)
    print(f"   flood done: {time.monotonic() - started:.0f} s in all", file=out)
