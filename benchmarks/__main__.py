"""Run every benchmark: ``python -m benchmarks [--quick] [--only NAME[,NAME]]``.

Prints one table per workload (progress on stderr) and writes every figure to
``benchmarks/results/latest.json``.
"""

from __future__ import annotations

import sys
import time
import traceback
from typing import TYPE_CHECKING

from . import (
    _harness as h,
    bench_brokers,
    bench_cel,
    bench_checkpoint,
    bench_dag,
    bench_fanout,
    bench_http,
    bench_join,
    bench_linear,
    bench_memory,
    bench_ray,
    bench_startup,
    bench_wasm,
    bench_window,
    bench_ws,
    ws_memory,
)

if TYPE_CHECKING:
    from collections.abc import Callable

BENCHES: dict[str, Callable[[h.Config], h.Workload]] = {
    "linear": bench_linear.run,
    "fanout": bench_fanout.run,
    "dag": bench_dag.run,
    "memory": bench_memory.run,
    "window": bench_window.run,
    "join": bench_join.run,
    "ws": bench_ws.run,
    "ws_memory": ws_memory.run,
    "checkpoint": bench_checkpoint.run,
    "brokers": bench_brokers.run,
    "cel": bench_cel.run,
    "http": bench_http.run,
    "wasm": bench_wasm.run,
    "ray": bench_ray.run,
    "startup": bench_startup.run,
}


def main(argv: list[str] | None = None) -> int:
    p = h.parser("flowstream benchmarks")
    p.add_argument(
        "--only",
        default=None,
        help=f"comma-separated subset of: {', '.join(BENCHES)}",
    )
    p.add_argument("--json", default=None, help="where to write the results")
    args = p.parse_args(argv)
    cfg = h.config_from(args)
    names = list(BENCHES) if not args.only else args.only.split(",")
    unknown = [name for name in names if name not in BENCHES]
    if unknown:
        p.error(f"unknown benchmark(s) {', '.join(unknown)}; pick from {list(BENCHES)}")
    started = time.perf_counter()
    workloads = []
    failed: list[str] = []
    for name in names:
        try:
            w = BENCHES[name](cfg)
        except Exception as exc:  # one broken workload must not hide the others
            traceback.print_exc()
            failed.append(name)
            w = h.Workload(name=name, title=f"{name}: FAILED", unit="")
            w.notes.append(f"{type(exc).__name__}: {exc}")
        workloads.append(w)
        h.print_workload(w)
        print(flush=True)
    path = h.RESULTS_DIR / "latest.json" if args.json is None else h.Path(args.json)
    h.save_json(workloads, cfg, path)
    summary = [
        f"{w.name}/{r.name}: {r.status}"
        for w in workloads
        for r in w.rows
        if r.status in ("PASS", "MISS")
    ]
    misses = sum(s.endswith("MISS") for s in summary)
    errors = f", FAILED: {', '.join(failed)}" if failed else ""
    print(
        f"{len(summary) - misses} PASS, {misses} MISS{errors}; "
        f"{time.perf_counter() - started:.0f}s; results in {path}"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
