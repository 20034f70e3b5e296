"""(d) Memory: 10,000,000 items into a deliberately slow sink; peak RSS reported.

Every round runs each contender once (up to ``ROUNDS`` rounds, interleaved, so
load on the machine hits all alike); the speed ratios are paired: each round's
items/s over the same round's floor, median [min..max]. The peak is the median
of the rounds with [min..max], and the target is judged on the worst round.

Each contender runs in a fresh subprocess. After its imports and set-up the
child reads its resident set (the idle process), resets the kernel's high-water
mark (``/proc/self/clear_refs``; without it the figure falls back to
``ru_maxrss``, which may include import peaks), runs the workload and reports
the peak resident set during the run minus the idle one.

The sink does a Python loop over every batch (`funcs.slow_work`) and, in the
async engines, then gives the loop a turn, so the source can always run ahead:
only backpressure keeps memory flat. In flowstream the sink is kept out of the
source's fused segment (``fuse: false``), so a bounded channel sits between.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

from . import _harness as h, funcs

if TYPE_CHECKING:
    from collections.abc import Callable

NAME = "memory"
BATCH = 1024
LIMIT_MB = 50.0
ROUNDS = 3  # at most: every round runs each contender in a new process


def expected(n: int) -> int:
    return n * (n - 1) // 2


# --- the contenders (run inside the child) ---------------------------------------


def floor(n: int) -> Callable[[], int]:
    def batches() -> Any:
        for i in range(0, n, BATCH):
            yield list(range(i, min(i + BATCH, n)))

    def run() -> int:
        return sum(funcs.slow_work(b) for b in batches())

    return run


def flowstream(n: int, fuse_sink: bool = False) -> Callable[[], int]:
    from flowstream import FlowRuntime
    from flowstream.core.workflow import Workflow

    from . import _nodes

    rt = FlowRuntime(_nodes.registry())
    wf = (
        Workflow("memory")
        .node("src", "source.range", stop=n)
        .node("sink", "bench.slow_sink", fuse=fuse_sink)
        .connect("src -> sink")
    )
    graph = rt.validate(wf)

    def run() -> int:
        result = rt.run(graph)
        if not result.ok:
            raise RuntimeError(result.error)
        return int(result.output("sink")[0])

    return run


def aiostream(n: int) -> Callable[[], int]:
    from aiostream import pipe, stream

    total = 0

    async def sink(batch: list[int]) -> None:
        nonlocal total
        total += funcs.slow_work(batch)
        await asyncio.sleep(0)

    xs = stream.range(n) | pipe.chunks(BATCH) | pipe.map(sink, task_limit=1)

    async def consume() -> None:
        async with xs.stream() as items:
            async for _ in items:
                pass

    def run() -> int:
        asyncio.run(consume())
        return total

    return run


def streamz(n: int) -> Callable[[], int]:
    from streamz import Stream

    total = 0
    buffer: list[int] = []

    # streamz's partition() needs an IO loop and keeps a partial last batch,
    # so the sink batches for itself.
    def sink(x: int) -> None:
        nonlocal total
        buffer.append(x)
        if len(buffer) == BATCH:
            total += funcs.slow_work(buffer)
            buffer.clear()

    def run() -> int:
        nonlocal total
        source = Stream()
        source.sink(sink)
        emit = source.emit
        for i in range(n):
            emit(i)
        total += funcs.slow_work(buffer)
        return total

    return run


def reactivex(n: int) -> Callable[[], int]:
    import reactivex as rx
    from reactivex import operators as ops

    total = 0

    def sink(batch: list[int]) -> None:
        nonlocal total
        total += funcs.slow_work(batch)

    def run() -> int:
        rx.range(n).pipe(ops.buffer_with_count(BATCH)).subscribe(on_next=sink)
        return total

    return run


def bytewax(n: int) -> Callable[[], int]:
    import bytewax.operators as op
    from bytewax.dataflow import Dataflow
    from bytewax.outputs import DynamicSink, StatelessSinkPartition
    from bytewax.testing import TestingSource, run_main

    total = 0

    class Partition(StatelessSinkPartition[int]):
        def write_batch(self, items: list[int]) -> None:
            nonlocal total
            total += funcs.slow_work(items)

    class SlowSink(DynamicSink[int]):
        def build(self, step_id: str, worker_index: int, worker_count: int) -> Any:
            return Partition()

    flow = Dataflow("memory")
    s = op.input("inp", flow, TestingSource(range(n), batch_size=BATCH))
    op.output("out", s, SlowSink())

    def run() -> int:
        run_main(flow)
        return total

    return run


FACTORIES: dict[str, Callable[[int], Callable[[], int]]] = {
    "floor (generator chain)": floor,
    h.FLOWSTREAM: flowstream,
    "flowstream fused": lambda n: flowstream(n, fuse_sink=True),
    "aiostream": aiostream,
    "streamz": streamz,
    "reactivex": reactivex,
    "bytewax": bytewax,
}


def _rss_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def child(name: str, n: int) -> dict[str, Any]:
    run = FACTORIES[name](n)
    idle = _rss_kb("VmRSS")
    reset = idle is not None and _reset_peak()
    t0 = time.perf_counter()
    result = run()
    seconds = time.perf_counter() - t0
    if reset:
        peak = _rss_kb("VmHWM")
        method = "VmHWM after clear_refs"
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux
        idle = idle or 0
        method = "ru_maxrss (includes import-time peak)"
    return {
        "name": name,
        "n": n,
        "result": result,
        "seconds": seconds,
        "idle_kb": idle,
        "peak_kb": peak,
        "method": method,
    }


# --- the parent -------------------------------------------------------------------


def spawn(name: str, n: int) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "benchmarks.bench_memory", "--child", name, str(n)]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run(
        cmd, capture_output=True, text=True, check=False, cwd=root, timeout=600
    )
    if out.returncode != 0:
        msg = f"{name} failed:\n{out.stderr[-2000:]}"
        raise RuntimeError(msg)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


COMPETITOR_TARGETS = {
    "aiostream": 10.0,
    "streamz": 10.0,
    "reactivex": 2.0,
    "bytewax": 2.0,
}
UNAVAILABLE_CHECK = {
    "aiostream": "aiostream",
    "streamz": "streamz",
    "reactivex": "reactivex",
    "bytewax": "bytewax",
}


def run(cfg: h.Config) -> h.Workload:
    from .bench_linear import available

    n = cfg.size(10_000_000, 1_000_000)
    slow = cfg.size(1_000_000, 100_000)
    sizes = {
        "floor (generator chain)": n,
        h.FLOWSTREAM: n,
        "flowstream fused": n,
        "aiostream": slow,
        "streamz": slow,
        "reactivex": slow,
        "bytewax": n,
    }
    roles = {"floor (generator chain)": "floor", h.FLOWSTREAM: "flowstream"}
    notes = {
        h.FLOWSTREAM: "sink in its own task behind a bounded channel",
        "flowstream fused": "sink fused into the source's task (no channel)",
        "aiostream": "chunks(1024) | map(async sink, task_limit=1)",
        "streamz": "sink() batching 1024 items per slow_work call",
        "reactivex": "buffer_with_count(1024)",
        "bytewax": "TestingSource batch_size=1024 into a DynamicSink",
    }
    rounds = max(1, min(cfg.repeat, ROUNDS))
    h.log(
        f"[{NAME}] {n:,} items into a slow sink, one subprocess each, "
        f"{rounds} interleaved rounds"
    )
    rows: list[h.Row] = []
    live: list[h.Row] = []
    for name, size in sizes.items():
        role = roles.get(name, "competitor" if name in COMPETITOR_TARGETS else "info")
        row = h.Row(name=name, role=role, n=size, unit="MB", note=notes.get(name, ""))
        rows.append(row)
        missing = (
            available(UNAVAILABLE_CHECK[name]) if name in UNAVAILABLE_CHECK else None
        )
        if missing:
            row.status, row.note, row.n = "n/a", missing, None
        else:
            live.append(row)
    records: dict[str, list[dict[str, Any]]] = {r.name: [] for r in live}
    for i in range(rounds):  # every contender once per round, in turn
        for row in live:
            if row.status == "error":
                continue
            assert row.n is not None
            try:
                rec = spawn(row.name, row.n)
            except RuntimeError as exc:
                row.status, row.note = "error", str(exc).strip().splitlines()[-1]
                h.log(f"  {row.name}: {exc}")
                continue
            if rec["result"] != expected(row.n):
                msg = f"{row.name} computed {rec['result']}, expected {expected(row.n)}"
                raise AssertionError(msg)
            records[row.name].append(rec)
            h.log(
                f"  round {i + 1}/{rounds} {row.name}: "
                f"+{(rec['peak_kb'] - rec['idle_kb']) / 1024:.1f} MB over "
                f"{rec['idle_kb'] / 1024:.1f} MB idle, {rec['seconds']:.2f}s"
            )
    for row in live:
        recs = records[row.name]
        if row.status == "error" or not recs:
            continue
        peaks = sorted((r["peak_kb"] - r["idle_kb"]) / 1024 for r in recs)
        row.value = statistics.median(peaks)
        row.times_s = [r["seconds"] for r in recs]
        row.extra = {
            "peak_over_idle_mb": [(r["peak_kb"] - r["idle_kb"]) / 1024 for r in recs],
            "worst_mb": peaks[-1],
            "idle_mb": statistics.median(r["idle_kb"] for r in recs) / 1024,
            "peak_mb": statistics.median(r["peak_kb"] for r in recs) / 1024,
            "items_per_s": row.n / statistics.median(row.times_s) if row.n else None,
            "method": recs[0]["method"],
        }
    by_name = {r.name: r for r in rows}
    floor = by_name["floor (generator chain)"]
    fs = by_name[h.FLOWSTREAM]
    for r in rows:
        if r.status in ("n/a", "error"):
            if r.name == h.FLOWSTREAM:
                r.target, r.status = f"peak <= idle + {LIMIT_MB:g} MB", "MISS"
            continue
        # Paired: each round's items/s over the same round's floor (or, for
        # a competitor, flowstream's over its own in the same round).
        if floor.times_s and len(floor.times_s) == len(r.times_s):
            r.vs_floor, r.vs_floor_range = h.paired_ratio(r, floor)
        if r.name == h.FLOWSTREAM:
            # A bound on memory holds in every round: judged on the worst.
            r.target = f"peak <= idle + {LIMIT_MB:g} MB (worst round)"
            r.status = h.verdict_max(r.extra["worst_mb"], LIMIT_MB)
        elif (
            r.role == "competitor" and fs.times_s and len(fs.times_s) == len(r.times_s)
        ):
            r.fs_speedup, r.fs_speedup_range = h.paired_ratio(fs, r)
            need = COMPETITOR_TARGETS[r.name]
            r.target = f"flowstream >= {need:g}x (items/s)"
            r.status = "PASS" if r.fs_speedup >= need else "MISS"
        elif r.role != "floor":
            r.status = "info"
    w = h.Workload(
        name=NAME,
        title=f"(d) memory: {n:,} items into a slow sink (peak RSS over idle)",
        unit="MB",
        rows=rows,
    )
    w.extra["columns"] = MEMORY_COLUMNS
    w.notes.append(
        f"{rounds} interleaved rounds, every contender once per round, each run "
        "in a fresh subprocess; peak-idle MB = median [min..max] of the rounds "
        "(the target is judged on the worst); peak = VmHWM after resetting it "
        "once idle (see 'method' in the JSON); vs floor and flowstream/x compare "
        "items/s round by round (paired), median [min..max]"
    )
    return w


def _mb(value: Any) -> str:
    return "" if value is None else f"{value:.1f}"


def _mb_range(values: list[float] | None) -> str:
    return "" if not values else f"[{min(values):.1f}..{max(values):.1f}]"


MEMORY_COLUMNS: list[tuple[str, Callable[[h.Row], str]]] = [
    ("contender", lambda r: r.name),
    ("n", lambda r: h._fmt_n(r.n)),
    ("peak-idle MB", lambda r: _mb(r.value) or "n/a"),
    ("[min..max]", lambda r: _mb_range(r.extra.get("peak_over_idle_mb"))),
    ("idle MB", lambda r: _mb(r.extra.get("idle_mb"))),
    ("items/s", lambda r: h._fmt_value(r.extra.get("items_per_s"), "items/s")),
    ("vs floor [min..max]", lambda r: h._fmt_ratio(r.vs_floor, r.vs_floor_range)),
    (
        "flowstream/x [min..max]",
        lambda r: h._fmt_ratio(r.fs_speedup, r.fs_speedup_range),
    ),
    ("target", lambda r: r.target),
    ("result", lambda r: r.status),
]


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        print(json.dumps(child(sys.argv[2], int(sys.argv[3]))))
    else:
        h.run_standalone(NAME, run, sys.argv[1:])
