"""(a) Linear pipeline: source -> map(x*2) -> filter(x%3!=0) -> map(x+1) -> sum.

Floor: a bare synchronous chain of Python generators calling the same three
functions. flowstream runs it fused (the default: one task, batch kernels),
unfused (``fuse=False``: a task and a channel per node), with CEL expressions
instead of callables (compiled to Python: target 0.5x the floor), and with
the maps written as user
``@node`` async generators. Those are plain maps and a filter, so they run
lifted (as per-item functions in the batch kernels, `flowstream.runtime.lifting`);
rows with ``FLOWSTREAM_LIFT=0`` run the same generators as generators, and a
row with generators that keep a running local (never lifted) keeps the
generator path measured; the user rows are also run with a checkpoint store
and with a retry policy on every node. Competitors: aiostream, streamz,
reactivex, bytewax.

``python -m benchmarks.bench_linear --profile`` prints a pyinstrument profile
of one fused flowstream run instead.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import itertools
import operator
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flowstream import FlowRuntime
from flowstream.core.node import node
from flowstream.core.policies import RetryPolicy
from flowstream.core.workflow import Workflow
from flowstream.dataflow import Dataflow, range_source

from . import _harness as h, _nodes, funcs
from .funcs import double, inc, not_mult3

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterable, Iterator

    from flowstream.runtime.validation import Graph

NAME = "linear"
FN = {name: f"benchmarks.funcs:{name}" for name in ("double", "not_mult3", "inc")}
CEL_EXPRS = f"{funcs.CEL_DOUBLE!r}, {funcs.CEL_NOT_MULT3!r}, {funcs.CEL_INC!r}"


@functools.cache
def expected(n: int) -> int:
    return sum(map(inc, filter(not_mult3, map(double, range(n)))))


# --- floor ----------------------------------------------------------------------


def gen_map(f: Any, items: Iterable[Any]) -> Iterator[Any]:
    for x in items:
        yield f(x)


def gen_filter(f: Any, items: Iterable[Any]) -> Iterator[Any]:
    for x in items:
        if f(x):
            yield x


def floor(n: int) -> int:
    """The floor: a bare synchronous generator chain, same functions."""
    return sum(gen_map(inc, gen_filter(not_mult3, gen_map(double, range(n)))))


def floor_builtins(n: int) -> int:
    """The same chain with the C ``map``/``filter`` iterators (a stricter floor)."""
    return sum(map(inc, filter(not_mult3, map(double, range(n)))))


# --- flowstream -------------------------------------------------------------------


@node("bench.user_map")
async def user_double(inp: AsyncIterator[int]) -> AsyncIterator[int]:
    async for x in inp:
        yield double(x)


@node("bench.user_filter")
async def user_not_mult3(inp: AsyncIterator[int]) -> AsyncIterator[int]:
    async for x in inp:
        if not_mult3(x):
            yield x


@node("bench.user_inc")
async def user_inc(inp: AsyncIterator[int]) -> AsyncIterator[int]:
    async for x in inp:
        yield inc(x)


# The same steps keeping a running local: not plain maps, never lifted.


@node("bench.user_map_kept")
async def user_double_kept(inp: AsyncIterator[int]) -> AsyncIterator[int]:
    seen = 0
    async for x in inp:
        seen += 1
        yield double(x)


@node("bench.user_filter_kept")
async def user_not_mult3_kept(inp: AsyncIterator[int]) -> AsyncIterator[int]:
    seen = 0
    async for x in inp:
        seen += 1
        if not_mult3(x):
            yield x


@node("bench.user_inc_kept")
async def user_inc_kept(inp: AsyncIterator[int]) -> AsyncIterator[int]:
    seen = 0
    async for x in inp:
        seen += 1
        yield inc(x)


USER_NODES = (user_double, user_not_mult3, user_inc)
KEPT_NODES = (user_double_kept, user_not_mult3_kept, user_inc_kept)


@functools.cache
def runtime() -> FlowRuntime:
    reg = _nodes.registry()
    for spec in (*USER_NODES, *KEPT_NODES):
        reg.register(spec)
    return FlowRuntime(reg)


def workflow(n: int, style: str = "fn") -> Workflow:
    """The pipeline; ``style`` is ``fn``, ``live``, ``dataflow``, ``cel``, ``user``,
    ``user-retry``, ``kept`` or ``async``.

    ``user-retry`` is ``user`` with a retry policy on every step,
    ``user-stream`` with its sum collected for stream mode; ``kept``
    the user generators that keep a running local. ``live`` passes the
    functions themselves (live callables) where ``fn`` names them;
    ``dataflow`` builds the same with `flowstream.dataflow`.
    ``async`` is ``fn`` with the map step as ``transform.map_async`` over an
    async callable that never suspends.
    """
    if style == "dataflow":
        flow = Dataflow(f"linear-{style}", registry=runtime().registry)
        numbers = flow.source(range_source(n), name="src")
        chain = numbers.map(double).filter(not_mult3).map(inc)
        chain.then("bench.sum", name="sum")
        return flow.workflow
    wf = Workflow(f"linear-{style}").node("src", "source.range", stop=n)
    if style == "live":
        wf.node("double", "transform.map", fn=double)
        wf.node("filter", "transform.filter", fn=not_mult3)
        wf.node("inc", "transform.map", fn=inc)
    elif style == "fn":
        wf.node("double", "transform.map", fn=FN["double"])
        wf.node("filter", "transform.filter", fn=FN["not_mult3"])
        wf.node("inc", "transform.map", fn=FN["inc"])
    elif style == "async":
        wf.node("double", "transform.map_async", fn="benchmarks.funcs:adouble")
        wf.node("filter", "transform.filter", fn=FN["not_mult3"])
        wf.node("inc", "transform.map", fn=FN["inc"])
    elif style == "cel":
        wf.node("double", "transform.map", expr=funcs.CEL_DOUBLE)
        wf.node("filter", "transform.filter", expr=funcs.CEL_NOT_MULT3)
        wf.node("inc", "transform.map", expr=funcs.CEL_INC)
    elif style == "kept":
        wf.node("double", "bench.user_map_kept")
        wf.node("filter", "bench.user_filter_kept")
        wf.node("inc", "bench.user_inc_kept")
    else:
        retry = RetryPolicy(max_attempts=3) if style == "user-retry" else None
        wf.node("double", "bench.user_map", retry=retry)
        wf.node("filter", "bench.user_filter", retry=retry)
        wf.node("inc", "bench.user_inc", retry=retry)
    wf.node("sum", "bench.sum")
    for edge in ("src -> double", "double -> filter", "filter -> inc", "inc -> sum"):
        wf.connect(edge)
    if style == "user-stream":  # stream mode keeps sink.collect's items only
        wf.node("out", "sink.collect").connect("sum -> out")
    return wf


@functools.cache
def graph(n: int, style: str) -> Graph:
    return runtime().validate(workflow(n, style))


_STORES = Path(tempfile.mkdtemp(prefix="flowstream-bench-linear-"))
atexit.register(shutil.rmtree, _STORES, ignore_errors=True)
_STORE_NAMES = itertools.count()


@contextlib.contextmanager
def _lifting(on: bool) -> Any:
    """``FLOWSTREAM_LIFT=0`` for the duration of one run, when ``on`` is False."""
    before = os.environ.get("FLOWSTREAM_LIFT")
    if not on:
        os.environ["FLOWSTREAM_LIFT"] = "0"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("FLOWSTREAM_LIFT", None)
        else:
            os.environ["FLOWSTREAM_LIFT"] = before


def flowstream_run(
    style: str, *, lift: bool = True, checkpointed: bool = False, **options: Any
) -> Any:
    """A run of the pipeline; ``checkpointed``: a fresh store each run, in
    stream mode, epochs every second (creating it is part of the run)."""

    async def run(n: int) -> int:
        more = dict(options)
        if checkpointed:
            path = _STORES / f"{style}-{next(_STORE_NAMES)}.db"
            more.update(mode="stream", checkpoint=str(path))
        with _lifting(lift):
            result = await runtime().arun(graph(n, style), **more)
        if not result.ok:
            raise RuntimeError(result.error)
        return int(result.output("out" if style == "user-stream" else "sum")[0])

    return run


async def _items(n: int) -> AsyncIterator[int]:
    for i in range(n):
        yield i


async def user_chained_by_hand(n: int) -> int:
    """The three user generators chained directly, no engine: the ceiling."""
    chain = user_inc.fn(user_not_mult3.fn(user_double.fn(_items(n))))
    total = 0
    async for x in chain:
        total += x
    return total


# --- competitors -------------------------------------------------------------------


async def aiostream_run(n: int) -> int:
    from aiostream import pipe, stream

    xs = (
        stream.range(n)
        | pipe.map(double)
        | pipe.filter(not_mult3)
        | pipe.map(inc)
        | pipe.accumulate(operator.add, initializer=0)
    )
    return int(await xs)


def streamz_run(n: int) -> int:
    from streamz import Stream

    total = 0

    def add(x: int) -> None:
        nonlocal total
        total += x

    source = Stream()
    source.map(double).filter(not_mult3).map(inc).sink(add)
    emit = source.emit
    for i in range(n):
        emit(i)
    return total


def reactivex_run(n: int) -> int:
    import reactivex as rx
    from reactivex import operators as ops

    out: list[int] = []
    # from_iterable, as reactivex is used: rx.range schedules every item
    # through the trampoline scheduler and made reactivex look 25x slower.
    rx.from_iterable(range(n)).pipe(
        ops.map(double),
        ops.filter(not_mult3),
        ops.map(inc),
        ops.reduce(operator.add, 0),
    ).subscribe(on_next=out.append)
    return out[0]


BYTEWAX_BATCH = 1024


def bytewax_run(n: int) -> int:
    import bytewax.operators as op
    from bytewax.dataflow import Dataflow
    from bytewax.testing import TestingSink, TestingSource, run_main

    flow = Dataflow("linear")
    s = op.input("inp", flow, TestingSource(range(n), batch_size=BYTEWAX_BATCH))
    s = op.map("double", s, double)
    s = op.filter("filter", s, not_mult3)
    s = op.map("inc", s, inc)
    keyed = op.key_on("key", s, lambda _: "all")
    summed = op.reduce_final("sum", keyed, operator.add)
    out: list[tuple[str, int]] = []
    op.output("out", summed, TestingSink(out))
    run_main(flow)
    return out[0][1]


def bytewax_batch_run(n: int) -> int:
    import bytewax.operators as op
    from bytewax.dataflow import Dataflow
    from bytewax.testing import TestingSink, TestingSource, run_main

    flow = Dataflow("linear_batched")
    s = op.input("inp", flow, TestingSource(range(n), batch_size=BYTEWAX_BATCH))
    s = op.flat_map_batch("double", s, lambda b: list(map(double, b)))
    s = op.flat_map_batch("filter", s, lambda b: list(filter(not_mult3, b)))
    s = op.flat_map_batch("inc", s, lambda b: list(map(inc, b)))
    part = op.flat_map_batch("partial", s, lambda b: [("all", sum(b))])
    summed = op.reduce_final("sum", part, operator.add)
    out: list[tuple[str, int]] = []
    op.output("out", summed, TestingSink(out))
    run_main(flow)
    return out[0][1]


def available(module: str) -> str | None:
    """None if ``module`` imports, else why not (the row says n/a)."""
    try:
        __import__(module)
    except ImportError as exc:
        return f"not installed ({exc.name}); pip install -e '.[bench]'"
    return None


def contenders(cfg: h.Config) -> list[h.Contender]:
    n = cfg.size(1_000_000, 100_000)
    slow = cfg.size(200_000, 20_000)  # per-item engines: fewer items, same rate
    c = h.Contender
    return [
        c("floor (generator chain)", "floor", floor, n),
        c("floor (map/filter builtins)", "info", floor_builtins, n),
        c(h.FLOWSTREAM, "flowstream", flowstream_run("fn"), n, note="fused, fn refs"),
        c("flowstream unfused", "flowstream", flowstream_run("fn", fuse=False), n),
        c(
            "flowstream live callables",
            "flowstream",
            flowstream_run("live"),
            n,
            note="fused, the functions passed themselves (fn=double)",
        ),
        c(
            "flowstream dataflow API",
            "flowstream",
            flowstream_run("dataflow"),
            n,
            note="fused, DataStream.map/filter/map with the functions",
        ),
        c(
            "flowstream CEL",
            "flowstream",
            flowstream_run("cel"),
            n,
            note=f"fused, compiled CEL: {CEL_EXPRS}",
        ),
        c(
            "flowstream user nodes",
            "flowstream",
            flowstream_run("user"),
            n,
            note="fused, the maps/filter as @node async generators",
        ),
        c(
            "flowstream user nodes, lift off",
            "flowstream",
            flowstream_run("user", lift=False),
            n,
            note="FLOWSTREAM_LIFT=0: the same generators as generators (composed)",
        ),
        c(
            "flowstream user nodes, not liftable",
            "flowstream",
            flowstream_run("kept"),
            n,
            note="each generator keeps a running local: never lifted",
        ),
        c(
            "flowstream user nodes, checkpointed",
            "flowstream",
            flowstream_run("user-stream", checkpointed=True),
            n,
            note="stream mode, a fresh checkpoint store per run, epochs every 1 s",
        ),
        c(
            "flowstream user nodes, checkpointed, lift off",
            "flowstream",
            flowstream_run("user-stream", lift=False, checkpointed=True),
            n,
        ),
        c(
            "flowstream user nodes, retry",
            "flowstream",
            flowstream_run("user-retry"),
            n,
            note="RetryPolicy(max_attempts=3) on every step",
        ),
        c(
            "flowstream user nodes, retry, lift off",
            "flowstream",
            flowstream_run("user-retry", lift=False),
            n,
        ),
        c(
            "user nodes chained by hand",
            "info",
            user_chained_by_hand,
            n,
            note="the same generators composed directly, no engine: the ceiling",
        ),
        c(
            "flowstream map_async",
            "flowstream",
            flowstream_run("async"),
            n,
            note="the map step as transform.map_async (never suspends)",
        ),
        c(
            "aiostream",
            "competitor",
            aiostream_run,
            slow,
            unavailable=available("aiostream"),
        ),
        c("streamz", "competitor", streamz_run, slow, unavailable=available("streamz")),
        c(
            "reactivex",
            "competitor",
            reactivex_run,
            slow,
            unavailable=available("reactivex"),
        ),
        c(
            "bytewax",
            "competitor",
            bytewax_run,
            n,
            note=f"map/filter/map, TestingSource batch_size={BYTEWAX_BATCH}",
            unavailable=available("bytewax"),
        ),
        c(
            "bytewax (flat_map_batch)",
            "competitor",
            bytewax_batch_run,
            n,
            note="every step on whole batches",
            unavailable=available("bytewax"),
        ),
    ]


COMPETITOR_TARGETS = {
    "aiostream": 10.0,
    "streamz": 10.0,
    "reactivex": 2.0,
    "bytewax": 2.0,
}


def run(cfg: h.Config) -> h.Workload:
    h.log(f"[{NAME}] source -> map -> filter -> map -> sum")
    cs = contenders(cfg)
    times = h.measure(cs, expected, cfg.repeat)
    rows = h.throughput_rows(cs, times)
    h.apply_throughput_targets(
        rows,
        h.FLOWSTREAM,
        {
            h.FLOWSTREAM: 1.0,
            "flowstream unfused": 0.6,
            "flowstream CEL": 0.5,
            "flowstream user nodes": 0.4,
            "flowstream user nodes, retry": 0.4,
            "flowstream map_async": 0.3,
        },
        COMPETITOR_TARGETS,
    )
    w = h.Workload(
        name=NAME,
        title="(a) linear: range -> map(x*2) -> filter(x%3!=0) -> map(x+1) -> sum",
        unit="items/s",
        rows=rows,
    )
    w.notes.append(
        f"median of {cfg.repeat} interleaved rounds; items/s = n / wall time of one "
        "run (flowstream: validated once beforehand; loop start not timed)"
    )
    w.notes.append(
        "flowstream/x = flowstream (fused) items/s over the contender's; "
        "per-item engines ran fewer items (rates do not depend on n)"
    )
    return w


def profile(cfg: h.Config) -> None:
    """Print a pyinstrument profile of one fused flowstream run."""
    import asyncio

    from pyinstrument import Profiler

    n = cfg.size(1_000_000, 100_000)
    g = graph(n, "fn")
    asyncio.run(runtime().arun(graph(10_000, "fn")))  # warm up
    profiler = Profiler(interval=0.0005, async_mode="enabled")

    async def go() -> None:
        profiler.start()
        result = await runtime().arun(g)
        profiler.stop()
        assert result.output("sum") == [expected(n)]

    asyncio.run(go())
    print(profiler.output_text(unicode=False, color=False, show_all=False))


def main(argv: list[str] | None = None) -> None:
    p = h.parser("(a) linear pipeline")
    p.add_argument("--profile", action="store_true", help="profile flowstream only")
    args = p.parse_args(argv)
    cfg = h.config_from(args)
    if cfg.profile:
        profile(cfg)
        return
    w = run(cfg)
    h.print_workload(w)
    h.save_json([w], cfg, h.RESULTS_DIR / f"{NAME}.json")


if __name__ == "__main__":
    main(sys.argv[1:])
