"""Window throughput: items/s through ``window.tumbling``, keyed count, event time.

The workload: 1M items ``{"k": "k<i % 100>", "ts": i / 1000}`` (100 keys, 1000
items per event-time second) through a tumbling window of 1 s keyed by
``key_field: k`` with ``timestamp_field: ts`` and 100 ms of allowed lateness,
into ``sink.null``. The source makes its batches as it goes; the same source
straight into ``sink.null`` is timed too, so the window's own cost per item is
shown apart from the source's. Also timed: the same window with CEL
``timestamp``/``key`` expressions, and processing time.

Self-contained: ``python -m benchmarks.bench_window [--items N] [--repeat R]``
prints a table; medians of R rounds.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from typing import TYPE_CHECKING, Any

import msgspec

from flowstream.core.node import node
from flowstream.core.workflow import Workflow
from flowstream.nodes.window import session_window, sliding_window, tumbling_window
from flowstream.runtime.flow import FlowRuntime
from flowstream.runtime.registry import NodeRegistry

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

KEYS = 100
BATCH = 1024


class Items(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    count: int


@node("bench.window_items", config=Items, batched=True)
async def window_items(*, config: Items) -> AsyncIterator[list[dict[str, Any]]]:
    keys = [f"k{i}" for i in range(KEYS)]
    for lo in range(0, config.count, BATCH):
        hi = min(lo + BATCH, config.count)
        yield [{"k": keys[i % KEYS], "ts": i / 1000} for i in range(lo, hi)]


def registry() -> NodeRegistry:
    reg = NodeRegistry.default(entry_points=False)
    for spec in (window_items, tumbling_window, sliding_window, session_window):
        if spec.type_id not in reg:
            reg.register(spec)
    return reg


def workflow(items: int, window: dict[str, Any] | None) -> Workflow:
    wf = Workflow("bench-window").node("src", "bench.window_items", count=items)
    last = "src"
    if window is not None:
        wf.node("w", "window.tumbling", window)
        wf.connect("src -> w")
        last = "w"
    return wf.node("out", "sink.null").connect(f"{last} -> out")


CASES: dict[str, dict[str, Any] | None] = {
    "source -> sink.null (floor)": None,
    "tumbling keyed count, fields": {
        "size_ms": 1000,
        "timestamp_field": "ts",
        "key_field": "k",
        "allowed_lateness_ms": 100,
    },
    "tumbling keyed count, CEL": {
        "size_ms": 1000,
        "timestamp": "x.ts",
        "key": "x.k",
        "allowed_lateness_ms": 100,
    },
    "tumbling keyed count, processing time": {"size_ms": 1000, "key_field": "k"},
}


def run_once(runtime: FlowRuntime, wf: Workflow) -> float:
    gc.collect()
    start = time.perf_counter()
    result = runtime.run(wf)
    took = time.perf_counter() - start
    if not result.ok:
        msg = f"run failed: {result.error}"
        raise RuntimeError(msg)
    return took


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--items", type=int, default=1_000_000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--cel-items", type=int, default=100_000, help="CEL is slow")
    args = p.parse_args(argv)
    runtime = FlowRuntime(registry())
    rates: dict[str, float] = {}
    floor_s = 0.0
    print(f"{'workload':44} {'items':>9} {'median s':>9} {'items/s':>11} {'net/s':>11}")
    for name, window in CASES.items():
        items = args.cel_items if "CEL" in name else args.items
        wf = workflow(items, window)
        run_once(runtime, workflow(min(items, 10_000), window))  # warm-up
        took = statistics.median(run_once(runtime, wf) for _ in range(args.repeat))
        rates[name] = items / took
        if window is None:
            floor_s = took / items
            net = ""
        else:
            window_s = took / items - floor_s
            net = f"{1 / window_s:11,.0f}" if window_s > 0 else f"{'-':>11}"
        print(f"{name:44} {items:9,} {took:9.3f} {items / took:11,.0f} {net}")
    return rates


if __name__ == "__main__":
    main()
