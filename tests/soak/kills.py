"""Part 1 and 2 of the soak: kill -9 the ingestion service, copy it while it runs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
import sqlite3
import time
from collections import Counter
from typing import TYPE_CHECKING

from examples.crash_demo import SENSORS, Feed, last_epoch, wait_for_seq
from flowstream import Workflow
from flowstream.core.workflow import Checkpoint
from flowstream.runtime.checkpointing.faults import POINTS
from tests.checkpoints import latest_epoch

from .report import Report, SoakConfig, Tally
from .service import (
    JOURNAL,
    OUT_FILE,
    STORE,
    drain,
    exited,
    kill,
    start,
)

if TYPE_CHECKING:
    import random
    from pathlib import Path

INTERVAL_MS = 100.0
OUT_DB = "out.db"
AT_EPOCH_0 = ("sink_barrier", "before_commit")
"""Fault points that leave a fresh store without epoch 0: the next start is
fresh again, so both can be hit at epoch 0 before the first random kill."""


def service_workflow(url: str) -> Workflow:
    """The killed service: the feed into three sinks, checkpointed."""
    schema = {"seq": "int", "sensor": "str", "value": "float", "ts": "int"}
    wf = (
        Workflow("soak", mode="stream")
        .node(
            "feed",
            "ws.source",
            mode="client",
            url=url,
            schema=schema,
            seq_field="seq",
            resume_query="since",
            journal=JOURNAL,
        )
        .node("file", "file.sink", path=OUT_FILE)
        .node("plain", "sqlite.sink", path=OUT_DB, table="plain")
        .node("count", "transform.scan", op="count", key="x.sensor")
        .node("counts", "sqlite.sink", path=OUT_DB, table="counts", key="key")
        .connect("feed -> file")
        .connect("feed -> plain")
        .connect("feed -> count")
        .connect("count -> counts")
    )
    wf.checkpoint = Checkpoint(path=STORE, interval_ms=INTERVAL_MS)
    return wf


def snapshot(source: Path, target: Path, journal_first: bool) -> None:
    """Copy a running service's directory: the sinks after the store.

    The sinks only grow between restarts, so copied after the store they
    hold at least what the copied store says they had. The journal goes
    before or after the store (both must resume exactly: a journal copied
    after may have been pruned past the store's position).
    """
    target.mkdir(parents=True)
    shutil.copyfile(source / "wf.json", target / "wf.json")
    order = (JOURNAL, STORE) if journal_first else (STORE, JOURNAL)
    for name in (*order, OUT_DB):
        if not (source / name).exists():
            continue
        with (
            contextlib.closing(sqlite3.connect(source / name, timeout=10)) as src,
            contextlib.closing(sqlite3.connect(target / name)) as dst,
        ):
            src.backup(dst)
    if (source / OUT_FILE).exists():
        shutil.copyfile(source / OUT_FILE, target / OUT_FILE)


def kill_plan(rng: random.Random, kills: int) -> list[str]:
    """What each kill is: ``fault:POINT@0``, ``fault:POINT`` or a random kind.

    Starts with the epoch-0 faults and a start-up kill on the fresh store,
    then one kill at every fault point; the rest are random kinds, a fifth
    of them fault points again.
    """
    plan = [f"fault:{p}@0" for p in AT_EPOCH_0]
    plan += ["start-up", "fault:after_commit@0"]
    plan += [f"fault:{p}" for p in rng.sample(POINTS, len(POINTS))]
    while len(plan) < kills:
        if rng.random() < 0.2:
            plan.append(f"fault:{rng.choice(POINTS)}")
        else:
            plan.append(rng.choice(("start-up", "first epoch", "mid-run")))
    return plan


async def kill_phase(
    cfg: SoakConfig, feed: Feed, live: Path, rng: random.Random, report: Report
) -> list[Path]:
    """Start and SIGKILL the service ``kills`` times; return the snapshots."""
    store = live / STORE
    plan = kill_plan(rng, cfg.kills)
    spread = 2 * cfg.duration / max(1, len(plan))
    randoms = [i for i, kind in enumerate(plan) if not kind.startswith("fault:")]
    snap_at = set(rng.sample(randoms, min(cfg.snapshots, len(randoms))))
    snapshots: list[Path] = []
    for i, kind in enumerate(plan):
        fault = None
        if kind.startswith("fault:"):
            point, _, at = kind.removeprefix("fault:").partition("@")
            if at == "0" and latest_epoch(store)[0] >= 0:
                # The start-up kill before it came after epoch 0 committed:
                # epoch 0 is never committed again, so aim at the next one.
                at = ""
            epoch = int(at) if at else latest_epoch(store)[0] + rng.randint(1, 3)
            fault = f"{point}@{epoch}"
        connects = len(feed.resumes)
        proc = start(live, fault)
        if fault is not None:
            code = await exited(proc, 60)
            if code == -signal.SIGKILL:
                report.kills[f"fault {fault.partition('@')[0]}"] += 1
            else:
                report.faults_not_fired.append(f"{fault} (exit {code})")
                await kill(proc)
            continue
        if kind == "start-up":
            await asyncio.sleep(rng.uniform(0.0, 1.2))
        elif kind == "first epoch":
            # Just after it reached the feed: restored, before its first commit.
            deadline = time.monotonic() + 60
            while len(feed.resumes) == connects and proc.poll() is None:
                if time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.002)
            await asyncio.sleep(rng.uniform(0.0, INTERVAL_MS / 1000))
        else:
            before = latest_epoch(store)[0]
            deadline = time.monotonic() + 60
            while latest_epoch(store)[0] <= before and proc.poll() is None:
                if time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.01)
            await asyncio.sleep(rng.uniform(0.0, spread))
        if i in snap_at and proc.poll() is None:
            target = live.parent / f"snapshot-{len(snapshots) + 1}"
            journal_first = rng.random() < 0.5
            await asyncio.to_thread(snapshot, live, target, journal_first)
            snapshots.append(target)
        if await kill(proc):
            report.kills[f"random, {kind}"] += 1
        else:
            tail = (live / "stderr.log").read_text(errors="replace")[-600:]
            report.problems.append(f"the service exited by itself: {tail}")
            return snapshots
    return snapshots


async def finish(directory: Path, total: int, limit: float, report: Report) -> None:
    """Run the service in ``directory`` until the feed is in, stop, check it."""
    proc = start(directory)
    try:
        after = last_epoch(directory / STORE)[0]
        await wait_for_seq(directory / STORE, total, proc, limit, after)
    except RuntimeError as exc:
        report.problems.append(f"{directory.name}: {exc}")
        await kill(proc)
        return
    problem = await drain(proc, directory)
    if problem is not None:
        report.problems.append(problem)
    check_outputs(directory, total, report)


def check_outputs(directory: Path, total: int, report: Report) -> None:
    """Compare each sink of ``directory`` with the feed's records 1..total."""
    lines = (directory / OUT_FILE).read_text().splitlines()
    in_file = Counter(json.loads(line)["seq"] for line in lines)
    with contextlib.closing(sqlite3.connect(directory / OUT_DB)) as conn:
        in_table = Counter(seq for (seq,) in conn.execute("select seq from plain"))
        counts = dict(conn.execute("select key, value from counts").fetchall())
    for sink, seen in (("file.sink", in_file), ("sqlite.sink", in_table)):
        report.outputs[f"{directory.name}: {sink}"] = Tally(
            sent=total,
            delivered=sum(seen.values()),
            lost=sum(1 for s in range(1, total + 1) if s not in seen),
            duplicated=sum(n - 1 for n in seen.values() if n > 1),
        )
    expected = Counter(f"s{s % SENSORS}" for s in range(1, total + 1))
    # A key counted too often is a duplicate, too rarely a loss.
    report.outputs[f"{directory.name}: keyed counts"] = Tally(
        sent=total,
        delivered=sum(counts.values()),
        lost=sum(max(0, n - counts.get(k, 0)) for k, n in expected.items()),
        duplicated=sum(max(0, counts.get(k, 0) - n) for k, n in expected.items()),
    )
