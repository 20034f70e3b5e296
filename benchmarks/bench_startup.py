"""(s) Start-up of the command line: cold processes against a bare ``python -c pass``.

Each round starts, in turn, a bare interpreter (the floor) and every command
below, each as a new process, so a burst of load on the machine hits all of
them alike. A command's *overhead* is its wall time minus the floor's in the
same round (paired); the table shows the median of the rounds with [min..max].

Targets (issue #17): ``--version`` and ``--help`` at most 0.15 s over the
floor, ``validate`` of a small file at most 0.4 s.

``python -m benchmarks.bench_startup [--quick] [--repeat N]``
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from . import _harness as h

if TYPE_CHECKING:
    from collections.abc import Callable

NAME = "startup"
ROOT = Path(__file__).resolve().parent.parent
ROUNDS = 10
# (name, arguments after the interpreter, target overhead in seconds or None)
COMMANDS: list[tuple[str, list[str], float | None]] = [
    ("python -c pass (floor)", ["-c", "pass"], None),
    ("flowstream --version", ["-m", "flowstream", "--version"], 0.15),
    ("flowstream --help", ["-m", "flowstream", "--help"], 0.15),
    (
        "flowstream validate examples/numbers.yaml",
        ["-m", "flowstream", "validate", "examples/numbers.yaml"],
        0.4,
    ),
]


def _spread(values: list[float]) -> str:
    return (
        f"{statistics.median(values) * 1e3:.0f} ms "
        f"[{min(values) * 1e3:.0f}..{max(values) * 1e3:.0f}]"
    )


COLUMNS: list[tuple[str, Callable[[h.Row], str]]] = [
    ("command", lambda r: r.name),
    ("wall median [min..max]", lambda r: r.extra.get("wall", "")),
    ("over floor [min..max]", lambda r: r.extra.get("over", "")),
    ("target", lambda r: r.target),
    ("result", lambda r: r.status),
]


# A user's start-up reads cached bytecode: never measure with it switched off.
_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def _once(args: list[str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=_ENV, capture_output=True, check=False
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        msg = f"{args} exited {done.returncode}: {done.stderr.decode()[-300:]}"
        raise RuntimeError(msg)
    return elapsed


def run(cfg: h.Config) -> h.Workload:
    rounds = cfg.repeat if cfg.quick else max(cfg.repeat, ROUNDS)
    for _, args, _ in COMMANDS:  # warm the page cache and .pyc files once
        _once(args)
    times: dict[str, list[float]] = {name: [] for name, _, _ in COMMANDS}
    for i in range(rounds):
        for name, args, _ in COMMANDS:
            times[name].append(_once(args))
        h.log(f"[{NAME}] round {i + 1}/{rounds}")
    floor = times[COMMANDS[0][0]]
    w = h.Workload(
        name=NAME, title="(s) command line start-up, cold processes", unit="s"
    )
    for name, _, target in COMMANDS:
        row = h.Row(
            name=name,
            role="floor" if target is None else "flowstream",
            n=None,
            unit="s",
        )
        row.times_s = times[name]
        row.value = statistics.median(times[name])
        row.extra["wall"] = _spread(times[name])
        if target is None:
            row.status = "info"
        else:
            over = [t - f for t, f in zip(times[name], floor, strict=True)]
            row.extra["over"] = _spread(over)
            row.extra["over_median_s"] = statistics.median(over)
            row.target = f"<= {target * 1e3:.0f} ms over floor"
            row.status = h.verdict_max(statistics.median(over), target)
        w.rows.append(row)
    w.notes.append(
        f"{rounds} rounds, each command once per round as a new process; "
        "over floor = the command minus the bare interpreter in the same round"
    )
    w.extra["columns"] = COLUMNS
    return w


if __name__ == "__main__":
    h.run_standalone(NAME, run, sys.argv[1:])
