"""``python -m benchmarks.nexmark gen | run | bench``.

* ``gen --events N --out FILE [--seed S] [--delay-fraction F --max-delay-ms D]``
  writes N generated events as JSON Lines;
* ``run --query q5 --events FILE --out FILE [--form cel|python] [--check]``
  runs one query on an events file and writes its records as JSON Lines
  (``--check`` also compares them with the reference);
* ``bench [--events N] [--cel-events N] [--rounds R] [--queries q0,q5]``
  runs every query in each form, checks and times them, prints the table and
  writes ``docs/benchmarks-nexmark.json`` and the table in
  ``docs/benchmarks.md`` (``make nexmark``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import msgspec

from . import bench as bench_mod, runner
from .check import compare
from .generator import generate, read_events, write_events
from .reference import QUERIES

ROOT = Path(__file__).resolve().parents[2]


def _gen(args: argparse.Namespace) -> int:
    events = generate(
        args.events,
        seed=args.seed,
        delay_fraction=args.delay_fraction,
        max_delay_ms=args.max_delay_ms,
    )
    write_events(args.out, events)
    print(f"wrote {len(events):,} events to {args.out}")
    return 0


def _run(args: argparse.Namespace) -> int:
    graph = runner.prepare(args.query, args.form, path=args.events)
    records, elapsed = runner.run(graph)
    encode = msgspec.json.Encoder().encode
    with open(args.out, "wb") as f:
        for r in records:
            f.write(encode(r) + b"\n")
    print(f"{args.query} ({args.form}): {len(records):,} records in {elapsed:.3f} s")
    if args.check:
        verdict = compare(records, QUERIES[args.query](read_events(args.events)))
        print(verdict.describe())
        return 0 if verdict.match else 1
    return 0


def _bench(args: argparse.Namespace) -> int:
    doc = bench_mod.bench(
        args.events,
        cel_events=args.cel_events,
        rounds=args.rounds,
        queries=args.queries.split(",") if args.queries else None,
    )
    print(bench_mod.render_markdown(doc))
    bench_mod.save(doc, Path(args.json), Path(args.docs))
    print(f"wrote {args.json} and the table in {args.docs}")
    return 0 if all(r["check"] == "match" for r in doc["rows"]) else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.nexmark")
    sub = p.add_subparsers(dest="command", required=True)
    g = sub.add_parser("gen", help="generate events as JSON Lines")
    g.add_argument("--events", type=int, required=True, help="how many")
    g.add_argument("--out", required=True)
    g.add_argument("--seed", type=int, default=42)
    g.add_argument("--delay-fraction", type=float, default=0.0)
    g.add_argument("--max-delay-ms", type=int, default=0)
    g.set_defaults(func=_gen)
    r = sub.add_parser("run", help="run one query on an events file")
    r.add_argument("--query", required=True, choices=list(QUERIES))
    r.add_argument("--events", required=True, help="a JSON Lines events file")
    r.add_argument("--out", required=True, help="where to write the records")
    r.add_argument("--form", default="python", choices=runner.FORMS)
    r.add_argument("--check", action="store_true", help="compare with the reference")
    r.set_defaults(func=_run)
    b = sub.add_parser("bench", help="every query in each form, checked and timed")
    b.add_argument("--events", type=int, default=1_000_000)
    b.add_argument("--cel-events", type=int, default=None)
    b.add_argument("--rounds", type=int, default=3)
    b.add_argument("--queries", default=None, help="comma-separated subset")
    b.add_argument("--json", default=str(ROOT / "docs/benchmarks-nexmark.json"))
    b.add_argument("--docs", default=str(ROOT / "docs/benchmarks.md"))
    b.set_defaults(func=_bench)
    args = p.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
