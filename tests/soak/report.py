"""What the soak counts and prints: its config, `Tally` per thing checked, `Report`."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO


@dataclass(frozen=True)
class SoakConfig:
    """How long and how hard to soak.

    Attributes:
        seed: Drives every random choice (kill instants, points, frames).
        kills: SIGKILLs of the ingestion service (at least one per fault
            point, plus the epoch-0 ones).
        duration: Seconds the feed takes to produce its records; kills are
            spread over about that long.
        rate: Records per second the feed produces.
        snapshots: Copies of a running service's files, each resumed.
        flood_good: Good records in the flood.
        flood_bad: Bad frames per class in the flood (a tenth of that, at
            least one, over the hard limit: each costs a connection).
        workdir: Where the services' directories go.
        limit: Seconds the whole soak may take; past it, it fails.
    """

    seed: int = 1
    kills: int = 60
    duration: float = 240.0
    rate: float = 1000.0
    snapshots: int = 8
    flood_good: int = 20_000
    flood_bad: int = 300
    workdir: Path = Path("soak-output")
    limit: float = 600.0

    @property
    def records(self) -> int:
        """How many records the feed produces."""
        return max(1, int(self.rate * self.duration))


@dataclass
class Tally:
    """Lost / duplicated / dead-lettered counts of one thing checked."""

    sent: int = 0
    delivered: int = 0
    dead_lettered: int = 0
    lost: int = 0
    duplicated: int = 0
    reason: str = ""
    """One dead letter's reason, as an example."""

    @property
    def ok(self) -> bool:
        """Nothing lost, nothing twice."""
        return not (self.lost or self.duplicated)


@dataclass
class Report:
    """What the soak found, printed as tables."""

    kills: Counter[str] = field(default_factory=Counter)
    faults_not_fired: list[str] = field(default_factory=list)
    outputs: dict[str, Tally] = field(default_factory=dict)
    flood: dict[str, Tally] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Nothing lost, nothing twice, every fault point fired, no failure."""
        tallies = [*self.outputs.values(), *self.flood.values()]
        return (
            all(t.ok for t in tallies)
            and not self.faults_not_fired
            and not self.problems
        )

    def print(self, out: IO[str]) -> None:
        """Print the tables and the verdict."""
        total = sum(self.kills.values())
        print(f"\n== kill -9: {total} kills", file=out)
        for kind, n in sorted(self.kills.items()):
            print(f"   {kind:<28} {n:>4}", file=out)
        if self.faults_not_fired:
            print(f"   never fired: {', '.join(self.faults_not_fired)}", file=out)
        _table(out, "== sinks after the kills and from each snapshot", self.outputs)
        _table(out, "== ws.source flood, per frame class", self.flood)
        for problem in self.problems:
            print(f"!! {problem}", file=out)
        verdict = "OK: nothing lost, nothing twice" if self.ok else "FAILED"
        print(f"== {verdict}", file=out)


def _table(out: IO[str], title: str, rows: dict[str, Tally]) -> None:
    print(title, file=out)
    head = ("", "sent", "delivered", "dead-lettered", "lost", "duplicated")
    print("   {:<26} {:>9} {:>10} {:>14} {:>8} {:>11}".format(*head), file=out)
    for name, t in rows.items():
        print(
            f"   {name:<26} {t.sent:>9,} {t.delivered:>10,} {t.dead_lettered:>14,} "
            f"{t.lost:>8,} {t.duplicated:>11,}",
            file=out,
        )
    for name, t in rows.items():
        if t.reason:
            print(f"   {name}: {t.reason[:90]}", file=out)
