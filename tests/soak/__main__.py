"""``python -m tests.soak``: the full soak (``make soak``), at most about 10 minutes."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from .report import SoakConfig
from .soak import run_soak


def main() -> None:
    """Parse the command line, run the soak, exit 0 only if nothing was lost."""
    parser = argparse.ArgumentParser(prog="python -m tests.soak", description=__doc__)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--kills", type=int, default=60, help="at least 10")
    parser.add_argument(
        "--duration",
        type=float,
        default=240.0,
        help="seconds the feed produces for (the kills are spread over it)",
    )
    parser.add_argument("--rate", type=float, default=1000.0, help="records/s")
    parser.add_argument("--snapshots", type=int, default=8)
    parser.add_argument("--flood-good", type=int, default=20_000)
    parser.add_argument("--flood-bad", type=int, default=300)
    parser.add_argument("--workdir", type=Path, default=Path("soak-output"))
    parser.add_argument(
        "--limit", type=float, default=600.0, help="seconds before it fails"
    )
    args = parser.parse_args()
    if args.kills < 10:
        parser.error("--kills must be at least 10 (one per fault point first)")
    config = SoakConfig(
        seed=args.seed,
        kills=args.kills,
        duration=args.duration,
        rate=args.rate,
        snapshots=args.snapshots,
        flood_good=args.flood_good,
        flood_bad=args.flood_bad,
        workdir=args.workdir,
        limit=args.limit,
    )
    sys.exit(asyncio.run(run_soak(config)))


if __name__ == "__main__":
    main()
