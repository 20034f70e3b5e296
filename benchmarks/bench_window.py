"""(e) Window throughput: ``window.tumbling``, keyed count, event time; items/s.

The workload: items ``{"k": "k<i % 100>", "ts": i}`` (epoch ms; 100 keys, 1000
items per event-time second; 1M items) through a tumbling window of 1 s keyed
by ``key_field: k`` with ``timestamp_field: ts`` and 100 ms of allowed
lateness. A counting sink tallies the emitted window records (how many, and
the sum of their counts), which every contender must get right.

Floor: a plain Python loop doing the same windowing by hand: it makes the same
items in the same batches of 1024, reads the timestamp (an int of epoch ms)
and key of each, moves the watermark, counts per (window, key), fires every
window the watermark passed as the same ``{"key", "start", "end", "value",
"count"}`` record, and tallies them. flowstream: a batched source node making
the items as it goes, ``window.tumbling``, the tally sink.

Also timed, for information: the window with CEL ``timestamp``/``key``
expressions instead of fields (next to the floor loop evaluating the same CEL
programs, so the CEL cost shows apart from the engine's), the source alone
into the tally (what the window adds on top of it), and processing time.

``python -m benchmarks.bench_window [--quick] [--repeat N]``
"""

from __future__ import annotations

import functools
import heapq
import math
import sys
from typing import TYPE_CHECKING, Any

import msgspec

from flowstream import FlowRuntime, default_registry
from flowstream.core.expr import expr_function
from flowstream.core.node import node
from flowstream.core.workflow import Workflow

from . import _harness as h

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from flowstream.runtime.registry import NodeRegistry
    from flowstream.runtime.validation import Graph

NAME = "window"
KEYS = 100
BATCH = 1024
SIZE_MS = 1000
LATENESS_MS = 100

EVENT_FIELDS = {
    "size_ms": SIZE_MS,
    "timestamp_field": "ts",
    "key_field": "k",
    "allowed_lateness_ms": LATENESS_MS,
}
# Expressions that really evaluate: a bare field path ("x.ts") is a plain
# lookup and would time no CEL at all.
CEL_TS = "x.ts + 0"
CEL_KEY = 'x.k + ""'
EVENT_CEL = {
    "size_ms": SIZE_MS,
    "timestamp": CEL_TS,
    "key": CEL_KEY,
    "allowed_lateness_ms": LATENESS_MS,
}
PROCESSING = {"size_ms": SIZE_MS, "key_field": "k"}


def key_names() -> list[str]:
    return [f"k{i}" for i in range(KEYS)]


def make_batch(keys: list[str], lo: int, hi: int) -> list[dict[str, Any]]:
    """Items ``lo`` to ``hi``: what the source node and the floors both make."""
    return [{"k": keys[i % KEYS], "ts": i} for i in range(lo, hi)]


@functools.cache
def expected(n: int) -> tuple[int, int]:
    """(window records emitted, sum of their counts) for ``n`` items."""
    seconds = -(-n // 1000)
    records = sum(min(KEYS, min(n, (s + 1) * 1000) - s * 1000) for s in range(seconds))
    return records, n


def expected_items(n: int) -> int:
    """What the contenders that emit no event-time windows are checked on."""
    return n


# --- bench nodes ---------------------------------------------------------------------


class Items(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    count: int


@node("bench.window_items", config=Items, batched=True)
async def window_items(*, config: Items) -> AsyncIterator[list[dict[str, Any]]]:
    """The workload's items, made batch by batch as they are asked for."""
    keys = key_names()
    for lo in range(0, config.count, BATCH):
        yield make_batch(keys, lo, min(lo + BATCH, config.count))


class Tally(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``what``: ``windows`` (records and the sum of ``count``) or ``items``."""

    what: str = "windows"


@node("bench.tally", config=Tally, batched=True)
async def tally(
    inp: AsyncIterator[list[Any]], *, config: Tally
) -> AsyncIterator[list[Any]]:
    """Count what arrives; emit one result at the end (see `Tally`)."""
    if config.what == "items":
        items = 0
        async for batch in inp:
            items += len(batch)
        yield [items]
        return
    records = total = 0
    async for batch in inp:
        records += len(batch)
        for rec in batch:
            total += rec["count"]
    yield [(records, total)]


def registry() -> NodeRegistry:
    reg = default_registry(entry_points=False)
    for spec in (window_items, tally):
        if spec.type_id not in reg:
            reg.register(spec)
    return reg


@functools.cache
def runtime() -> FlowRuntime:
    return FlowRuntime(registry())


def workflow(n: int, window: dict[str, Any] | None) -> Workflow:
    what = "windows" if window is not None else "items"
    wf = Workflow("bench-window").node("src", "bench.window_items", count=n)
    wf.node("tally", "bench.tally", what=what)
    if window is None:
        return wf.connect("src -> tally")
    wf.node("w", "window.tumbling", window)
    return wf.connect("src -> w").connect("w -> tally")


@functools.cache
def graph(n: int, case: str) -> Graph:
    window = {"fields": EVENT_FIELDS, "cel": EVENT_CEL, "processing": PROCESSING}
    return runtime().validate(workflow(n, window.get(case)))


def flowstream_run(case: str, *, total_only: bool = False) -> Callable[[int], Any]:
    """Run ``case``; ``total_only``: return the sum of the counts alone."""

    async def run(n: int) -> Any:
        result = await runtime().arun(graph(n, case))
        if not result.ok:
            raise RuntimeError(result.error)
        out = result.output("tally")[0]
        return out[1] if total_only else out

    return run


# --- floor ---------------------------------------------------------------------------


def hand_window(
    n: int, ts: Callable[[Any], Any], key: Callable[[Any], Any]
) -> tuple[int, int]:
    """Keyed tumbling count over event time, by hand; returns the tally."""
    keys = key_names()
    size = SIZE_MS
    lateness = LATENESS_MS
    open_: dict[int, dict[str, list[Any]]] = {}
    due: list[int] = []  # window numbers, a heap
    out: list[dict[str, Any]] = []
    late: list[Any] = []
    max_t = wm = -math.inf
    next_due = math.inf

    def fire(limit: float) -> float:
        while due and (due[0] + 1) * size <= limit:
            w = heapq.heappop(due)
            start, end = w * size, (w + 1) * size
            for k, rec in open_.pop(w).items():
                out.append(
                    {
                        "key": k,
                        "start": start,
                        "end": end,
                        "value": rec[0],
                        "count": rec[0],
                    }
                )
        return (due[0] + 1) * size if due else math.inf

    for lo in range(0, n, BATCH):
        for x in make_batch(keys, lo, min(lo + BATCH, n)):
            t = ts(x)
            if type(t) is not int:
                raise TypeError(t)
            k = key(x)
            if type(k) is not str:
                k = "\0" + msgspec.json.encode(k).decode()
            if t > max_t:
                max_t = t
                wm = t - lateness
                if wm >= next_due:
                    next_due = fire(wm)
            w = t // size
            end = (w + 1) * size
            if end <= wm:
                late.append(x)
                continue
            win = open_.get(w)
            if win is None:
                win = open_[w] = {}
                heapq.heappush(due, w)
                next_due = min(next_due, end)
            rec = win.get(k)
            if rec is None:
                win[k] = [1]
            else:
                rec[0] += 1
    fire(math.inf)
    return len(out), sum(rec["count"] for rec in out)


def floor(n: int) -> tuple[int, int]:
    """The floor: the window by hand, fields read with ``x["ts"]``, ``x["k"]``."""
    return hand_window(n, lambda x: x["ts"], lambda x: x["k"])


def floor_cel(n: int) -> tuple[int, int]:
    """The floor, evaluating the CEL programs the CEL variant uses."""
    return hand_window(n, expr_function(CEL_TS), expr_function(CEL_KEY))


# --- running -----------------------------------------------------------------------


def run(cfg: h.Config) -> h.Workload:
    n = cfg.size(1_000_000, 100_000)
    cel_n = n  # compiled CEL costs a fraction of a microsecond
    c = h.Contender
    h.log(f"[{NAME}] {n:,} items -> window.tumbling (keyed count, event time)")
    event = [
        c("floor (plain Python loop)", "floor", floor, n),
        c(h.FLOWSTREAM, "flowstream", flowstream_run("fields"), n, note="fields"),
        c(
            "floor (loop, CEL key/ts)",
            "info",
            floor_cel,
            cel_n,
            note="the floor evaluating the CEL programs",
        ),
        c(
            "flowstream CEL",
            "info",
            flowstream_run("cel"),
            cel_n,
            note=f"CEL timestamp {CEL_TS!r} and key {CEL_KEY!r} (compiled)",
        ),
    ]
    other = [
        c(
            "flowstream source only",
            "info",
            flowstream_run("source"),
            n,
            note="the source straight into the tally, no window",
        ),
        c(
            "flowstream processing time",
            "info",
            flowstream_run("processing", total_only=True),
            n,
            note="key_field, processing time (checked on the total count only)",
        ),
    ]
    times = h.measure(event, expected, cfg.repeat)
    times.update(h.measure(other, expected_items, cfg.repeat))
    rows = h.throughput_rows([*event, *other], times)
    for r in rows:
        if r.role == "flowstream" or r.name == "flowstream CEL":
            r.target, r.status = "report", "info"
        elif r.role == "info":
            r.status = "info"
    w = h.Workload(
        name=NAME,
        title=(
            f"(e) window: tumbling 1 s, {KEYS} keys, count, event time "
            f"({LATENESS_MS} ms lateness)"
        ),
        unit="items/s",
        rows=rows,
    )
    w.notes.append(
        f"median of {cfg.repeat} interleaved rounds; items/s = n / wall time of one "
        "run (the items are made inside it, as the source makes them); no target "
        "in the issue: figures reported"
    )
    fs = next(r for r in rows if r.name == h.FLOWSTREAM)
    src = next(r for r in rows if r.name == "flowstream source only")
    if fs.value and src.value and 1 / fs.value > 1 / src.value:
        net = 1 / (1 / fs.value - 1 / src.value)
        w.extra["window_net_items_per_s"] = net
        w.notes.append(
            f"the window node alone (flowstream minus source only): {net / 1e6:.2f} M "
            "items/s"
        )
    return w


if __name__ == "__main__":
    h.run_standalone(NAME, run, sys.argv[1:])
