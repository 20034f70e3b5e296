"""(b) Fan-out / fan-in: a source broadcast to 4 map(x*2) branches, merged, summed.

Floor: ``itertools.tee`` of the source into four generator maps, merged round
robin by a generator and summed, all synchronous. flowstream: ``source.range``
connected to four ``transform.map`` nodes whose outputs all go to the one input
port of a batch-aware sum. Items/s counts source items (each is processed four
times).
"""

from __future__ import annotations

import functools
import itertools
import operator
import sys
from typing import TYPE_CHECKING, Any

from flowstream import FlowRuntime
from flowstream.core.workflow import Workflow

from . import _harness as h, _nodes
from .bench_linear import BYTEWAX_BATCH, COMPETITOR_TARGETS, available, gen_map
from .funcs import double

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from flowstream.runtime.validation import Graph

NAME = "fanout"
BRANCHES = 4


@functools.cache
def expected(n: int) -> int:
    return BRANCHES * sum(map(double, range(n)))


# --- floor ----------------------------------------------------------------------


def gen_merge(branches: Iterable[Iterator[Any]]) -> Iterator[Any]:
    """Fan-in: take one item from each branch in turn."""
    for group in zip(*branches, strict=True):
        yield from group


def floor(n: int) -> int:
    branches = [gen_map(double, t) for t in itertools.tee(range(n), BRANCHES)]
    return sum(gen_merge(branches))


# --- flowstream -------------------------------------------------------------------


@functools.cache
def runtime() -> FlowRuntime:
    return FlowRuntime(_nodes.registry())


def workflow(n: int) -> Workflow:
    wf = Workflow("fanout").node("src", "source.range", stop=n).node("sum", "bench.sum")
    for i in range(BRANCHES):
        wf.node(f"map{i}", "transform.map", fn="benchmarks.funcs:double")
        wf.connect(f"src -> map{i}").connect(f"map{i} -> sum")
    return wf


@functools.cache
def graph(n: int) -> Graph:
    return runtime().validate(workflow(n))


async def flowstream_run(n: int) -> int:
    result = await runtime().arun(graph(n))
    if not result.ok:
        raise RuntimeError(result.error)
    return int(result.output("sum")[0])


# --- competitors -------------------------------------------------------------------


async def aiostream_run(n: int) -> int:
    from aiostream import pipe, stream

    # aiostream has no broadcast (tee/share): a stream is cold and each branch
    # iterates the source again. For a range that is the cheapest possible way.
    branches = [stream.range(n) | pipe.map(double) for _ in range(BRANCHES)]
    xs = stream.merge(*branches) | pipe.accumulate(operator.add, initializer=0)
    return int(await xs)


def streamz_run(n: int) -> int:
    from streamz import Stream

    total = 0

    def add(x: int) -> None:
        nonlocal total
        total += x

    source = Stream()
    first, *rest = [source.map(double) for _ in range(BRANCHES)]
    first.union(*rest).sink(add)
    emit = source.emit
    for i in range(n):
        emit(i)
    return total


def reactivex_run(n: int) -> int:
    import reactivex as rx
    from reactivex import operators as ops

    source = rx.range(n).pipe(ops.publish())
    out: list[int] = []
    rx.merge(*(source.pipe(ops.map(double)) for _ in range(BRANCHES))).pipe(
        ops.reduce(operator.add, 0)
    ).subscribe(on_next=out.append)
    source.connect()
    return out[0]


def _bytewax(n: int, batched: bool) -> int:
    import bytewax.operators as op
    from bytewax.dataflow import Dataflow
    from bytewax.testing import TestingSink, TestingSource, run_main

    flow = Dataflow("fanout_batched" if batched else "fanout")
    s = op.input("inp", flow, TestingSource(range(n), batch_size=BYTEWAX_BATCH))
    if batched:
        branches = [
            op.flat_map_batch(f"map{i}", s, lambda b: list(map(double, b)))
            for i in range(BRANCHES)
        ]
        merged = op.merge("merge", *branches)
        keyed = op.flat_map_batch("partial", merged, lambda b: [("all", sum(b))])
    else:
        branches = [op.map(f"map{i}", s, double) for i in range(BRANCHES)]
        merged = op.merge("merge", *branches)
        keyed = op.key_on("key", merged, lambda _: "all")
    summed = op.reduce_final("sum", keyed, operator.add)
    out: list[tuple[str, int]] = []
    op.output("out", summed, TestingSink(out))
    run_main(flow)
    return out[0][1]


def bytewax_run(n: int) -> int:
    return _bytewax(n, batched=False)


def bytewax_batch_run(n: int) -> int:
    return _bytewax(n, batched=True)


def contenders(cfg: h.Config) -> list[h.Contender]:
    n = cfg.size(1_000_000, 100_000)
    slow = cfg.size(100_000, 10_000)
    slowest = slow // 5  # aiostream's merge: ~16k items/s
    c = h.Contender
    return [
        c("floor (generator chain)", "floor", floor, n),
        c(h.FLOWSTREAM, "flowstream", flowstream_run, n),
        c(
            "aiostream",
            "competitor",
            aiostream_run,
            slowest,
            note="no broadcast operator: each branch re-iterates the cold source",
            unavailable=available("aiostream"),
        ),
        c("streamz", "competitor", streamz_run, slow, unavailable=available("streamz")),
        c(
            "reactivex",
            "competitor",
            reactivex_run,
            slow,
            note="publish() + merge + reduce",
            unavailable=available("reactivex"),
        ),
        c(
            "bytewax",
            "competitor",
            bytewax_run,
            n,
            note=f"TestingSource batch_size={BYTEWAX_BATCH}",
            unavailable=available("bytewax"),
        ),
        c(
            "bytewax (flat_map_batch)",
            "competitor",
            bytewax_batch_run,
            n,
            unavailable=available("bytewax"),
        ),
    ]


def run(cfg: h.Config) -> h.Workload:
    h.log(f"[{NAME}] source -> {BRANCHES} x map -> merge -> sum")
    cs = contenders(cfg)
    times = h.measure(cs, expected, cfg.repeat)
    rows = h.throughput_rows(cs, times)
    h.apply_throughput_targets(
        rows, h.FLOWSTREAM, {h.FLOWSTREAM: 0.4}, COMPETITOR_TARGETS
    )
    w = h.Workload(
        name=NAME,
        title=f"(b) fan-out/fan-in: range -> {BRANCHES} x map(x*2) -> merge -> sum",
        unit="items/s",
        rows=rows,
    )
    w.notes.append(
        f"items/s counts source items; median of {cfg.repeat} interleaved rounds"
    )
    return w


if __name__ == "__main__":
    h.run_standalone(NAME, run, sys.argv[1:])
