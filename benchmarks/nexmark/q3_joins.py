"""Nexmark q3 two ways, paired: ``join.window`` (an hour) vs ``join.changelog``.

q3 was first written with ``join.window`` keeping an hour of each side (the
whole benchmark), which equals the full join only because the run is short;
``join.changelog`` keeps persons a minute and auctions 10 s (see
``examples/nexmark/q3.yaml``). Both run the shipped workflow on the same
pre-decoded events, alternating in one process, ``rounds`` times; each run
is checked against the reference. Prints events/s of CPU time per form,
median [min..max], and the paired ratio (changelog / window per round).

``python -m benchmarks.nexmark.q3_joins [--events N] [--rounds R] [--form cel]``
"""

from __future__ import annotations

import argparse
import statistics
import sys

from flowstream import FlowRuntime
from flowstream.core.workflow import Workflow, WorkflowNode

from . import runner
from .check import compare
from .generator import generate
from .reference import QUERIES

__all__ = ["main"]


def _as_window_join(wf: Workflow) -> Workflow:
    nodes = []
    for n in wf.nodes:
        if n.id == "join":
            config = {k: v for k, v in (n.config or {}).items() if "retention" not in k}
            n = WorkflowNode(
                id="join", type="join.window", config={**config, "window_ms": 3_600_000}
            )
        nodes.append(n)
    return Workflow(
        name=f"{wf.name}-window", mode=wf.mode, nodes=nodes, connections=wf.connections
    )


def _span(rates: list[float]) -> str:
    s = sorted(rates)
    return (
        f"{statistics.median(s) / 1e3:,.0f} K/s [{s[0] / 1e3:,.0f}..{s[-1] / 1e3:,.0f}]"
    )


def main(argv: list[str] | None = None) -> int:
    """Run the pair; return 1 if a run does not match the reference."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.nexmark.q3_joins")
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--form", default="cel", choices=runner.FORMS)
    args = p.parse_args(argv)
    events = generate(args.events, seed=42)
    want = QUERIES["q3"](events)
    runtime = FlowRuntime()
    changelog = runner.prepare("q3", args.form, events=events, runtime=runtime)
    graphs = {
        "join.window": runtime.validate(_as_window_join(changelog.workflow)),
        "join.changelog": changelog,
    }
    rates: dict[str, list[float]] = {name: [] for name in graphs}
    for _ in range(args.rounds):
        for name, graph in graphs.items():
            got, cpu = runner.run(graph, runtime)
            verdict = compare(got, want)
            if not verdict.match:
                print(f"{name}: {verdict.describe()}")
                return 1
            rates[name].append(args.events / cpu)
    for name, rs in rates.items():
        print(f"q3 {args.form} {name}: {_span(rs)}")
    ratio = sorted(
        a / b
        for a, b in zip(rates["join.changelog"], rates["join.window"], strict=True)
    )
    print(
        f"changelog / window, paired: median {statistics.median(ratio):.2f} "
        f"[{ratio[0]:.2f}..{ratio[-1]:.2f}] over {args.rounds} rounds"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
