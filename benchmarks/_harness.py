"""Timing, checking, tables and JSON shared by every benchmark module.

A workload is a list of `Contender`s: the floor, flowstream's variants and the
competitors. `measure` runs one untimed warm-up of each (which also checks its
result), then ``repeat`` interleaved rounds (every contender once per round, so
a burst of load on the machine hits all of them alike) and keeps the median.
Every run's result is checked against the expected value: a contender that
computes something else fails the benchmark instead of winning it.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.metadata
import inspect
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

RESULTS_DIR = Path(__file__).parent / "results"
FLOWSTREAM = "flowstream"


# --- configuration -----------------------------------------------------------


@dataclass(frozen=True)
class Config:
    """How big and how often; ``quick`` is the smoke-test setting."""

    quick: bool = False
    repeat: int = 5
    profile: bool = False

    def size(self, full: int, quick: int) -> int:
        return quick if self.quick else full


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="small sizes, fewer rounds")
    p.add_argument("--repeat", type=int, default=None, help="timed rounds (median)")
    return p


def config_from(args: argparse.Namespace) -> Config:
    repeat = args.repeat if args.repeat is not None else (3 if args.quick else 5)
    return Config(
        quick=args.quick, repeat=max(1, repeat), profile=getattr(args, "profile", False)
    )


# --- contenders and measurements --------------------------------------------


@dataclass
class Contender:
    """One way of running a workload.

    Attributes:
        name: As printed in the table.
        role: ``floor``, ``flowstream``, ``competitor`` or ``info`` (an extra
            reference point that has no target).
        run: ``run(n)`` (a function or a coroutine function) returns the
            workload's result for size ``n``; only this call is timed.
        n: The size used for the timed runs.
        note: Printed under the table.
        unavailable: Why it cannot run (not installed, cannot express the
            workload); the row then says n/a.
        warm_n: The size of the untimed warm-up run.
    """

    name: str
    role: str
    run: Callable[[int], Any] | None
    n: int
    note: str = ""
    unavailable: str | None = None
    warm_n: int | None = None


@dataclass
class Row:
    """A contender's measurement and verdict, as printed and saved."""

    name: str
    role: str
    n: int | None
    unit: str
    value: float | None = None  # the median, in ``unit``
    times_s: list[float] = field(default_factory=list)
    vs_floor: float | None = None  # throughput ratio to the floor (higher: faster)
    vs_floor_range: tuple[float, float] | None = None  # [min..max] of the paired ratios
    fs_speedup: float | None = None  # how many times faster flowstream is
    fs_speedup_range: tuple[float, float] | None = None
    target: str = ""
    status: str = ""  # PASS, MISS, info, n/a
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Workload:
    """A workload's rows plus what is needed to read them."""

    name: str
    title: str
    unit: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def row(self, name: str) -> Row:
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(name)


def _timed_once(fn: Callable[[int], Any], n: int) -> tuple[float, Any]:
    """Time one call; a coroutine function gets a fresh loop, timed inside it."""
    gc.collect()
    if inspect.iscoroutinefunction(fn):

        async def inner() -> tuple[float, Any]:
            t0 = time.perf_counter()
            result = await fn(n)
            return time.perf_counter() - t0, result

        return asyncio.run(inner())
    t0 = time.perf_counter()
    result = fn(n)
    return time.perf_counter() - t0, result


def measure(
    contenders: Sequence[Contender],
    expected: Callable[[int], Any],
    repeat: int,
    *,
    log: Callable[[str], None] | None = None,
) -> dict[str, list[float]]:
    """Warm up and check each contender, then time ``repeat`` interleaved rounds.

    Raises:
        AssertionError: A contender's result differs from ``expected(n)``.
    """
    log = log or _log
    live = [c for c in contenders if c.unavailable is None and c.run is not None]
    for c in live:
        assert c.run is not None
        warm = c.warm_n if c.warm_n is not None else min(c.n, 10_000)
        _, result = _timed_once(c.run, warm)
        _check(c, warm, result, expected)
    times: dict[str, list[float]] = {c.name: [] for c in live}
    for i in range(repeat):
        for c in live:
            assert c.run is not None
            dt, result = _timed_once(c.run, c.n)
            _check(c, c.n, result, expected)
            times[c.name].append(dt)
        log(f"  round {i + 1}/{repeat}: " + _round_summary(live, times))
    return times


def _check(c: Contender, n: int, result: Any, expected: Callable[[int], Any]) -> None:
    want = expected(n)
    if result != want:
        msg = f"{c.name} computed {_short(result)} for n={n}, expected {_short(want)}"
        raise AssertionError(msg)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) < 120 else text[:117] + "..."


def _round_summary(live: Sequence[Contender], times: dict[str, list[float]]) -> str:
    return ", ".join(f"{c.name} {times[c.name][-1]:.3f}s" for c in live)


def throughput_rows(
    contenders: Sequence[Contender], times: dict[str, list[float]]
) -> list[Row]:
    """Rows in items/s (median), with the floor ratio filled in."""
    rows: list[Row] = []
    for c in contenders:
        row = Row(name=c.name, role=c.role, n=c.n, unit="items/s", note=c.note)
        if c.unavailable is not None or c.name not in times:
            row.status = "n/a"
            row.note = c.unavailable or c.note
            row.n = None
        else:
            row.times_s = times[c.name]
            row.value = c.n / statistics.median(row.times_s)
        rows.append(row)
    floor = next((r for r in rows if r.role == "floor" and r.value), None)
    if floor is not None:
        for r in rows:
            if r.value is not None:
                r.vs_floor, r.vs_floor_range = paired_ratio(r, floor)
    return rows


def paired_ratio(row: Row, base: Row) -> tuple[float, tuple[float, float]]:
    """``row``'s rate over ``base``'s, round by round: the median and [min..max].

    Both were timed once in every round (`measure` interleaves them), so each
    round gives one ratio under the same machine load; a ratio of two medians
    taken from different rounds would hide that spread.
    """
    assert row.n is not None
    assert base.n is not None
    ratios = sorted(
        (row.n / t_row) / (base.n / t_base)
        for t_row, t_base in zip(row.times_s, base.times_s, strict=True)
    )
    return statistics.median(ratios), (ratios[0], ratios[-1])


def apply_throughput_targets(
    rows: list[Row],
    flowstream: str,
    floor_targets: dict[str, float],
    competitor_targets: dict[str, float],
) -> None:
    """Fill targets: floor ratios for flowstream rows, speed-ups over competitors.

    ``competitor_targets`` maps a competitor's name prefix (``"bytewax"``
    matches ``"bytewax (map_batch)"``) to the speed-up flowstream must reach
    over it, flowstream being the row named ``flowstream``.
    """
    fs = next(r for r in rows if r.name == flowstream)
    for r in rows:
        if r.status == "n/a":
            continue
        if r.name in floor_targets:
            need = floor_targets[r.name]
            r.target = f">= {need:.1f}x floor"
            r.status = _verdict(r.vs_floor, need)
        elif r.role == "competitor":
            need = _prefix_lookup(competitor_targets, r.name)
            if r.value and fs.value:
                r.fs_speedup, r.fs_speedup_range = paired_ratio(fs, r)
            if need is not None:
                r.target = f"flowstream >= {need:g}x"
                r.status = _verdict(r.fs_speedup, need)
            else:
                r.status = "info"
        elif r.role != "floor" and not r.status:
            r.status = "info"
            if r.target == "" and r.note.startswith("known gap"):
                r.target = "report"


def _prefix_lookup(table: dict[str, float], name: str) -> float | None:
    for prefix, value in table.items():
        if name == prefix or name.startswith(prefix + " "):
            return value
    return None


def _verdict(value: float | None, need: float) -> str:
    if value is None:
        return "n/a"
    return "PASS" if value >= need else "MISS"


def verdict_max(value: float | None, limit: float) -> str:
    if value is None:
        return "n/a"
    return "PASS" if value <= limit else "MISS"


# --- output -------------------------------------------------------------------


def _fmt_value(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    if unit == "items/s":
        if value >= 1e6:
            return f"{value / 1e6:.2f} M/s"
        return f"{value / 1e3:.0f} k/s"
    if unit == "us/node":
        return f"{value:.2f} us"
    if unit == "MB":
        return f"{value:.1f} MB"
    return f"{value:.3g}"


def _fmt_ratio(value: float | None, spread: tuple[float, float] | None = None) -> str:
    if value is None:
        return ""
    if spread is None:
        return f"{value:.2f}x"
    return f"{value:.2f}x [{spread[0]:.2f}..{spread[1]:.2f}]"


def _fmt_n(n: int | None) -> str:
    if n is None:
        return ""
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    if n >= 1000 and n % 1000 == 0:
        return f"{n // 1000}k"
    return str(n)


def format_table(
    w: Workload, columns: Sequence[tuple[str, Callable[[Row], str]]]
) -> str:
    header = [c[0] for c in columns]
    body = [[fn(r) for _, fn in columns] for r in w.rows]
    widths = [max([len(h)] + [len(b[i]) for b in body]) for i, h in enumerate(header)]
    lines = [f"== {w.title} =="]
    lines.append("  ".join(h.ljust(widths[i]) for i, h in enumerate(header)))
    lines.append("  ".join("-" * wd for wd in widths))
    for b in body:
        lines.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(b)))
    notes = [f"{r.name}: {r.note}" for r in w.rows if r.note]
    for note in [*notes, *w.notes]:
        lines.append(f"  * {note}")
    return "\n".join(lines)


THROUGHPUT_COLUMNS: list[tuple[str, Callable[[Row], str]]] = [
    ("contender", lambda r: r.name),
    ("n", lambda r: _fmt_n(r.n)),
    ("median", lambda r: _fmt_value(r.value, r.unit)),
    ("vs floor [min..max]", lambda r: _fmt_ratio(r.vs_floor, r.vs_floor_range)),
    ("flowstream/x [min..max]", lambda r: _fmt_ratio(r.fs_speedup, r.fs_speedup_range)),
    ("target", lambda r: r.target),
    ("result", lambda r: r.status),
]


def print_workload(w: Workload) -> None:
    columns = w.extra.get("columns", THROUGHPUT_COLUMNS)
    print(format_table(w, columns), flush=True)


def _log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def log(text: str) -> None:
    """Progress goes to stderr; tables to stdout."""
    _log(text)


def environment() -> dict[str, Any]:
    """Where and with what the numbers were taken."""
    versions = {}
    for dist in ("flowstream", "aiostream", "streamz", "reactivex", "bytewax", "dask"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = None
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
            cwd=Path(__file__).parent,
        ).stdout.strip()
    except OSError:
        commit = ""
    return {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "commit": commit or None,
        "versions": versions,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def save_json(workloads: Sequence[Workload], cfg: Config, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "environment": environment(),
        "config": asdict(cfg),
        "workloads": {
            w.name: {
                "title": w.title,
                "unit": w.unit,
                "notes": w.notes,
                "rows": [asdict(r) for r in w.rows],
                "extra": {k: v for k, v in w.extra.items() if k != "columns"},
            }
            for w in workloads
        },
    }
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n")


def run_standalone(
    name: str, run: Callable[[Config], Workload], argv: Sequence[str] | None = None
) -> Workload:
    """The ``python -m benchmarks.bench_<name>`` entry point."""
    args = parser(f"flowstream benchmark: {name}").parse_args(argv)
    cfg = config_from(args)
    w = run(cfg)
    print_workload(w)
    save_json([w], cfg, RESULTS_DIR / f"{name}.json")
    return w
