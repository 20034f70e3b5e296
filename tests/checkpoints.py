"""Test helpers for checkpoint stores: read them from outside, kill runs."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
from contextlib import closing
from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:
    import random
    from pathlib import Path


def latest_epoch(store: Path, run_key: str | None = None) -> tuple[int, dict[str, Any]]:
    """The store's last committed epoch and its decoded node states.

    Read as an outside observer would, while a run may be writing: ``(-1,
    {})`` when there is no store, no schema or no epoch yet.
    """
    if not store.exists():
        return -1, {}
    sql = "select epoch, states from epochs"
    args: tuple[str, ...] = ()
    if run_key is not None:
        sql, args = f"{sql} where run_key = ?", (run_key,)
    try:
        with closing(sqlite3.connect(store, timeout=5)) as conn:
            row = conn.execute(f"{sql} order by epoch desc limit 1", args).fetchone()
    except sqlite3.OperationalError:  # the run has not created the schema yet
        return -1, {}
    if row is None:
        return -1, {}
    blobs = msgspec.msgpack.decode(row[1])
    return row[0], {k: msgspec.msgpack.decode(v) for k, v in blobs.items()}


def last_commit_time(store: Path) -> float:
    """When the store last committed an epoch after the start (epoch 0)."""
    if not store.exists():
        return 0.0
    try:
        with closing(sqlite3.connect(store, timeout=1)) as conn:
            row = conn.execute(
                "select coalesce(max(committed), 0) from epochs where epoch > 0"
            )
            return float(row.fetchone()[0])
    except sqlite3.OperationalError:  # schema not created yet
        return 0.0


def kill_at_random(
    args: list[str], store: Path, rng: random.Random, rounds: int, max_delay: float
) -> int:
    """Start ``args`` ``rounds`` times, SIGKILLing each soon after a commit.

    Each run is killed at a random instant up to ``max_delay`` seconds after
    it committed a new epoch (a loaded machine may take a second just to
    import), so every kill lands mid-run with something to resume from.
    Returns how many kills landed (a run may finish first).
    """
    kills = 0
    for _ in range(rounds):
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        seen = last_commit_time(store)
        deadline = time.monotonic() + 60
        while proc.poll() is None and last_commit_time(store) <= seen:
            assert time.monotonic() < deadline, "the run never committed an epoch"
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, max_delay))
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        proc.communicate(timeout=30)
    return kills
