"""``make nexmark``: every query in each form on generated events, checked and timed.

For each query and form (``cel``: the workflow file; ``python``: the
Python-built workflow with Python callables) this runs the query ``rounds``
times on events already decoded (engine only: ``source.values``) and
``rounds`` times from the JSON Lines file (end to end: ``file.source``
decoding included), checks the records of every run against the reference
(multisets), and reports the median events/s with [min..max]. The two ways
alternate round by round, so that load on the machine hits both alike.
Events/s are per second of the process's CPU time (the engine runs on one
thread), so that a machine shared with other work still gives one core's
figure; the wall times are in the JSON too.

CEL forms run on fewer events when asked (``--cel-events``): the CEL
interpreter costs microseconds per expression. The table says how many
events each row ran on.
"""

from __future__ import annotations

import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec

from .. import _harness as h
from . import runner
from .check import compare
from .generator import generate, write_events
from .reference import QUERIES

__all__ = ["FLINK_PER_CORE", "TARGETS", "bench", "render_markdown"]

FLINK_PER_CORE = {
    "q0": 155_000,
    "q1": 158_000,
    "q2": 175_000,
    "q5": 22_000,
    "q7": 12_000,
}
"""Flink's published Nexmark V1 figures per core (3 x 8 cores)."""

TARGETS = {
    "q0": 1_000_000,
    "q1": 1_000_000,
    "q2": 1_000_000,
    "q3": 1_000_000,
    "q8": 1_000_000,
    "q7": 500_000,
    "q12": 500_000,
    "q4": 200_000,
    "q5": 200_000,
    "q11": 200_000,
}
"""The issue's engine-only targets, events/s on one core."""

END_TO_END_TARGETS = {"q0": 500_000}

DOC_MARK = "<!-- nexmark table -->"


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _measure(
    query: str, form: str, events: list[Any], path: str, rounds: int, want: list[Any]
) -> dict[str, Any]:
    engine = runner.prepare(query, form, events=events)
    e2e = runner.prepare(query, form, path=path)
    times: dict[str, list[float]] = {"engine": [], "end_to_end": []}
    walls: dict[str, list[float]] = {"engine": [], "end_to_end": []}
    verdicts = []
    for _ in range(rounds):
        for name, graph in (("engine", engine), ("end_to_end", e2e)):
            started = time.perf_counter()
            got, elapsed = runner.run(graph)
            walls[name].append(time.perf_counter() - started)
            times[name].append(elapsed)
            verdicts.append(compare(got, want))
    bad = [v for v in verdicts if not v.match]
    n = len(events)
    row: dict[str, Any] = {
        "query": query,
        "form": form,
        "events": n,
        "records": len(want),
        "check": "match" if not bad else bad[0].describe(),
    }
    for name, ts in times.items():
        rates = sorted(n / t for t in ts)
        row[name] = {
            "median": statistics.median(rates),
            "min": rates[0],
            "max": rates[-1],
            "cpu_seconds": ts,
            "wall_seconds": walls[name],
        }
    return row


def bench(
    n: int,
    *,
    cel_events: int | None = None,
    rounds: int = 3,
    queries: list[str] | None = None,
    forms: tuple[str, ...] = runner.FORMS,
    seed: int = 42,
) -> dict[str, Any]:
    """Run the benchmark; return every figure (see the module docstring)."""
    names = queries or list(QUERIES)
    h.log(f"nexmark: generating {n:,} events (seed {seed})")
    events = generate(n, seed=seed)
    sizes = {"python": n, "cel": min(n, cel_events or n)}
    rows = []
    with tempfile.TemporaryDirectory(prefix="nexmark-") as tmp:
        files: dict[int, str] = {}
        for size in sorted(set(sizes.values())):
            files[size] = os.path.join(tmp, f"events-{size}.jsonl")
            write_events(files[size], events[:size])
        wants: dict[tuple[str, int], list[Any]] = {}
        for query in names:
            for form in forms:
                size = sizes[form]
                if (query, size) not in wants:
                    wants[query, size] = QUERIES[query](events[:size])
                h.log(f"nexmark: {query} {form} on {size:,} events")
                row = _measure(
                    query, form, events[:size], files[size], rounds, wants[query, size]
                )
                rows.append(row)
                h.log(
                    f"  engine {row['engine']['median']:,.0f}/s, end to end "
                    f"{row['end_to_end']['median']:,.0f}/s, {row['check']}"
                )
    return {
        "machine": {
            "cpu": _cpu(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "commit": h.environment()["commit"],
        },
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "events": n,
        "cel_events": sizes["cel"],
        "rounds": rounds,
        "seed": seed,
        "rows": rows,
    }


def _rate(m: dict[str, Any]) -> str:
    return (
        f"{m['median'] / 1000:,.0f} K [{m['min'] / 1000:,.0f}..{m['max'] / 1000:,.0f}]"
    )


def _holds(query: str, row: dict[str, Any]) -> str:
    marks = []
    target = TARGETS.get(query)
    if target is not None:
        ok = row["engine"]["median"] >= target
        marks.append(f"{'yes' if ok else 'no'} (≥ {target // 1000:,} K)")
    e2e = END_TO_END_TARGETS.get(query)
    if e2e is not None:
        ok = row["end_to_end"]["median"] >= e2e
        marks.append(f"e2e {'yes' if ok else 'no'} (≥ {e2e // 1000:,} K)")
    flink = FLINK_PER_CORE.get(query)
    if flink is not None:
        ok = row["engine"]["median"] > flink
        marks.append(f"{'above' if ok else 'below'} Flink")
    return "; ".join(marks)


def render_markdown(doc: dict[str, Any]) -> str:
    """The result table (markdown) with the machine and date."""
    m = doc["machine"]
    lines = [
        f"Measured {doc['date']} on {m['cpu']} ({m['cpus']} cores, one used), "
        f"Python {m['python']}, commit {m['commit']}; median of {doc['rounds']} "
        "runs, [min..max], events per second of CPU time (K = 1,000).",
        "",
        "| query | form | events | engine only | end to end (JSON Lines) | check "
        "| Flink per core | target holds |",
        "|---|---|---:|---:|---:|---|---:|---|",
    ]
    for row in doc["rows"]:
        flink = FLINK_PER_CORE.get(row["query"])
        lines.append(
            f"| {row['query']} | {row['form']} | {row['events']:,} "
            f"| {_rate(row['engine'])} | {_rate(row['end_to_end'])} | {row['check']} "
            f"| {'—' if flink is None else f'{flink // 1000} K'} "
            f"| {_holds(row['query'], row)} |"
        )
    return "\n".join(lines) + "\n"


def save(doc: dict[str, Any], json_path: Path, docs_path: Path) -> None:
    """Write the figures as JSON and the table into the docs between marks."""
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_bytes(msgspec.json.format(msgspec.json.encode(doc)) + b"\n")
    table = render_markdown(doc)
    text = docs_path.read_text() if docs_path.exists() else ""
    if text.count(DOC_MARK) >= 2:
        head, _, rest = text.partition(DOC_MARK)
        _, _, tail = rest.partition(DOC_MARK)
        text = f"{head}{DOC_MARK}\n{table}{DOC_MARK}{tail}"
    else:
        text = f"{text}\n{DOC_MARK}\n{table}{DOC_MARK}\n"
    docs_path.write_text(text)
