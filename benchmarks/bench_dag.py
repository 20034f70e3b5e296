"""(c) DAG mode: 10,000 one-shot nodes, each with 2 random earlier dependencies.

The graph (seed 42): nodes ``0..SOURCES-1`` are sources (``one() -> 1``), every
later node ``i`` adds the results of two distinct random nodes before it
(``add(a, b)``, modulo a prime). The result is the value of every terminal node
(nothing depends on it), checked against the floor for every contender.

Floor: plain Python calling the same functions in topological order. flowstream
runs the node functions as ``@node`` one-shot nodes, both as plain ``def`` and
as ``async def`` that never awaits. Every figure is paired: in each round the
floor and every contender run once, in the same process, and flowstream's
overhead is its run minus the floor's run *of the same round*; the table shows
the median over rounds and [min..max].

flowstream's setup is split: building the ``Workflow``, then validating it
and planning it (``validate + plan``); "all-in" is build + validate + plan +
run, the cost of one DAG run from scratch. Targets: overhead of a run of a
validated graph <= 3 us/node, validate + plan <= 5 us/node, all-in <= 10
us/node. dask's synchronous scheduler runs the same task graph (a
reference: its setup is building the dict), when dask is installed.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import random
import statistics
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from flowstream import FlowRuntime
from flowstream.core.workflow import Workflow
from flowstream.runtime.plan import plan

from . import _harness as h, _nodes, funcs
from .bench_linear import available

if TYPE_CHECKING:
    from collections.abc import Callable

NAME = "dag"
SEED = 42
SOURCES = 10
OVERHEAD_TARGET_US = 3.0
VALIDATE_PLAN_TARGET_US = 5.0
ALL_IN_TARGET_US = 10.0
Deps = list[tuple[int, ...]]


@functools.cache
def dag(n: int) -> Deps:
    """``deps[i]`` is () for a source, else the two nodes ``i`` depends on."""
    rng = random.Random(SEED)
    k = min(SOURCES, n)
    return [()] * k + [tuple(rng.sample(range(i), 2)) for i in range(k, n)]


@functools.cache
def terminals(n: int) -> tuple[int, ...]:
    used = {d for ds in dag(n) for d in ds}
    return tuple(i for i in range(n) if i not in used)


@functools.cache
def expected(n: int) -> dict[int, int]:
    values = floor_values(dag(n))
    return {i: values[i] for i in terminals(n)}


# --- floor ----------------------------------------------------------------------


def floor_values(deps: Deps) -> list[int]:
    one, add = funcs.one, funcs.add
    values = [0] * len(deps)
    for i, d in enumerate(deps):
        values[i] = add(values[d[0]], values[d[1]]) if d else one()
    return values


async def floor_values_async(deps: Deps) -> list[int]:
    one, aadd = funcs.one, funcs.aadd
    values = [0] * len(deps)
    for i, d in enumerate(deps):
        values[i] = await aadd(values[d[0]], values[d[1]]) if d else one()
    return values


# --- contenders -------------------------------------------------------------------


@dataclass
class DagContender:
    """``setup(n)`` builds what ``run(state)`` executes; each is timed apart."""

    name: str
    role: str
    setup: Callable[[int], Any] | None
    run: Callable[[Any], Any] | None
    note: str = ""
    unavailable: str | None = None
    floor: str | None = None  # the floor this row's overhead is measured against


def _floor_contender(name: str, asynchronous: bool) -> DagContender:
    def run(n: int) -> Any:
        if asynchronous:
            return _values_to_result(n, asyncio.run(floor_values_async(dag(n))))
        return _values_to_result(n, floor_values(dag(n)))

    return DagContender(name, "floor", setup=lambda n: n, run=run)


def _values_to_result(n: int, values: list[int]) -> dict[int, int]:
    return {i: values[i] for i in terminals(n)}


@functools.cache
def runtime() -> FlowRuntime:
    return FlowRuntime(_nodes.registry())


def workflow(n: int, node_type: str) -> Workflow:
    wf = Workflow(f"dag-{n}")
    for i, d in enumerate(dag(n)):
        if not d:
            wf.node(f"n{i}", "bench.one")
            continue
        wf.node(f"n{i}", node_type)
        wf.connect(f"n{d[0]} -> n{i}.a").connect(f"n{d[1]} -> n{i}.b")
    return wf


def _flowstream(node_type: str) -> tuple[Callable[[int], Any], Callable[[Any], Any]]:
    def setup(n: int) -> Any:
        t0 = time.perf_counter()
        wf = workflow(n, node_type)
        t1 = time.perf_counter()
        graph = runtime().validate(wf)
        plan(graph)
        return graph, time.perf_counter() - t1, t1 - t0

    async def run(state: Any) -> dict[int, int]:
        graph, _, _ = state
        result = await runtime().arun(graph)
        if not result.ok:
            raise RuntimeError(result.error)
        return {int(k[1:]): v["out"][0] for k, v in result.outputs.items()}

    return setup, run


def _dask() -> tuple[Callable[[int], Any], Callable[[Any], Any]]:
    def setup(n: int) -> Any:
        graph: dict[str, tuple[Any, ...]] = {}
        for i, d in enumerate(dag(n)):
            graph[f"n{i}"] = (funcs.add, f"n{d[0]}", f"n{d[1]}") if d else (funcs.one,)
        return graph, [f"n{i}" for i in terminals(n)]

    def run(state: Any) -> dict[int, int]:
        from dask.local import get_sync

        graph, keys = state
        values = get_sync(graph, keys)
        return {int(k[1:]): v for k, v in zip(keys, values, strict=True)}

    return setup, run


def _streamz() -> tuple[Callable[[int], Any], Callable[[Any], Any]]:
    def setup(n: int) -> Any:
        from streamz import Stream

        sources: list[Any] = []
        nodes: list[Any] = []
        for d in dag(n):
            if d:
                nodes.append(nodes[d[0]].zip(nodes[d[1]]).starmap(funcs.add))
            else:
                s = Stream()
                sources.append(s)
                nodes.append(s)
        out: dict[int, int] = {}
        for i in terminals(n):
            nodes[i].sink(functools.partial(out.__setitem__, i))
        return sources, out

    def run(state: Any) -> dict[int, int]:
        sources, out = state
        for s in sources:
            s.emit(funcs.one())
        return out

    return setup, run


def _reactivex() -> tuple[Callable[[int], Any], Callable[[Any], Any]]:
    def setup(n: int) -> Any:
        import reactivex as rx
        from reactivex import operators as ops
        from reactivex.subject import AsyncSubject

        # AsyncSubject is rx's one-shot value: it emits its last item on completion.
        subjects = [AsyncSubject() for _ in range(n)]
        for i, d in enumerate(dag(n)):
            if d:
                rx.zip(subjects[d[0]], subjects[d[1]]).pipe(
                    ops.starmap(funcs.add)
                ).subscribe(subjects[i])
        out: dict[int, int] = {}
        for i in terminals(n):
            subjects[i].subscribe(on_next=functools.partial(out.__setitem__, i))
        return [s for s, d in zip(subjects, dag(n), strict=True) if not d], out

    def run(state: Any) -> dict[int, int]:
        sources, out = state
        for s in sources:
            s.on_next(funcs.one())
            s.on_completed()
        return out

    return setup, run


def contenders() -> list[DagContender]:
    d = DagContender
    fs_sync = _flowstream("bench.add")
    fs_async = _flowstream("bench.aadd")
    cs = [
        _floor_contender("floor (sync calls)", asynchronous=False),
        _floor_contender("floor (awaits)", asynchronous=True),
        d(
            h.FLOWSTREAM,
            "flowstream",
            *fs_sync,
            note="def nodes",
            floor="floor (sync calls)",
        ),
        d(
            "flowstream async",
            "flowstream",
            *fs_async,
            note="async def nodes that never await",
            floor="floor (awaits)",
        ),
        d("dask", "info", *_dask(), note="dask.local.get_sync, a reference"),
        d("streamz", "competitor", *_streamz(), note="zip + starmap per node"),
        d(
            "reactivex",
            "competitor",
            *_reactivex(),
            note="an AsyncSubject per node, zip + starmap",
        ),
        d(
            "aiostream",
            "competitor",
            None,
            None,
            unavailable="cannot express it: streams are cold and re-run per consumer "
            "(no share/broadcast), so a node read by k dependents runs k times",
        ),
        d(
            "bytewax",
            "competitor",
            None,
            None,
            unavailable="cannot express it idiomatically: no one-shot tasks; each "
            "node would be a keyed join step in a 10,000-step dataflow",
        ),
    ]
    for c, module in ((cs[4], "dask"), (cs[5], "streamz"), (cs[6], "reactivex")):
        c.unavailable = c.unavailable or available(module)
    return cs


def _timed(fn: Callable[[Any], Any], arg: Any) -> tuple[float, Any]:
    gc.collect()
    if asyncio.iscoroutinefunction(fn):

        async def inner() -> tuple[float, Any]:
            t0 = time.perf_counter()
            result = await fn(arg)
            return time.perf_counter() - t0, result

        return asyncio.run(inner())
    t0 = time.perf_counter()
    result = fn(arg)
    return time.perf_counter() - t0, result


def measure(cs: list[DagContender], n: int, repeat: int) -> dict[str, Any]:
    live = [c for c in cs if c.unavailable is None]
    timings: dict[str, dict[str, list[float]]] = {
        c.name: {"setup": [], "run": [], "validate": []} for c in live
    }
    want = expected(n)
    for i in range(repeat + 1):  # round 0 is the warm-up
        for c in live:
            assert c.setup is not None
            assert c.run is not None
            setup_s, state = _timed(c.setup, n)
            run_s, result = _timed(c.run, state)
            if result != want:
                msg = f"{c.name}: wrong values for {n} nodes"
                raise AssertionError(msg)
            if i == 0:
                continue
            t = timings[c.name]
            t["setup"].append(setup_s)
            t["run"].append(run_s)
            if c.role == "flowstream":
                t["validate"].append(state[1])
                t.setdefault("build", []).append(state[2])
            del state, result
        if i:
            h.log(
                f"  round {i}/{repeat}: "
                + ", ".join(f"{c.name} {timings[c.name]['run'][-1]:.3f}s" for c in live)
            )
    return timings


COMPETITOR_TARGETS = {
    "streamz": 10.0,
    "reactivex": 2.0,
    "aiostream": 10.0,
    "bytewax": 2.0,
}


def _us(seconds: list[float], n: int) -> float | None:
    return statistics.median(seconds) / n * 1e6 if seconds else None


def run(cfg: h.Config) -> h.Workload:
    n = cfg.size(10_000, 2_000)
    h.log(f"[{NAME}] {n} one-shot nodes, 2 deps each, seed {SEED}")
    cs = contenders()
    timings = measure(cs, n, cfg.repeat)
    rows: list[h.Row] = []
    for c in cs:
        row = h.Row(name=c.name, role=c.role, n=n, unit="us/node", note=c.note)
        if c.unavailable is not None:
            row.status, row.note, row.n = "n/a", c.unavailable, None
            rows.append(row)
            continue
        t = timings[c.name]
        row.value = _us(t["run"], n)
        row.times_s = t["run"]
        setup = _us(t["setup"], n)
        row.extra = {
            "setup_us": setup,
            "total_us": (row.value or 0) + (setup or 0),
            "setup_times_s": t["setup"],
        }
        if t["validate"]:
            row.extra["validate_us"] = _us(t["validate"], n)
        rows.append(row)
    extra_rows: list[h.Row] = []
    for c, r in zip(cs, rows, strict=True):
        if r.status == "n/a":
            continue
        if c.floor is not None:
            # Paired: each round's run minus the same round's floor.
            floor_runs = timings[c.floor]["run"]
            t = timings[c.name]
            per_round = [
                (a - b) / n * 1e6 for a, b in zip(t["run"], floor_runs, strict=True)
            ]
            r.extra["overhead_us"] = statistics.median(per_round)
            r.extra["overhead_spread_us"] = [min(per_round), max(per_round)]
            r.target = f"overhead <= {OVERHEAD_TARGET_US:g} us"
            r.status = h.verdict_max(r.extra["overhead_us"], OVERHEAD_TARGET_US)
            vp = [v / n * 1e6 for v in t["validate"]]
            all_in = [
                (b + v + run) / n * 1e6
                for b, v, run in zip(t["build"], t["validate"], t["run"], strict=True)
            ]
            for label, values, limit in (
                ("validate + plan", vp, VALIDATE_PLAN_TARGET_US),
                ("all-in", all_in, ALL_IN_TARGET_US),
            ):
                row = h.Row(
                    name=f"{c.name}: {label}",
                    role="flowstream",
                    n=n,
                    unit="us/node",
                    value=statistics.median(values),
                    note=f"{label} per node, {c.note}",
                )
                row.extra["spread_us"] = [min(values), max(values)]
                row.target = f"<= {limit:g} us"
                row.status = h.verdict_max(row.value, limit)
                extra_rows.append(row)
        elif c.role in ("competitor", "info"):
            # Paired: each round's setup + run against flowstream's same round.
            mine, ours = timings[c.name], timings[h.FLOWSTREAM]
            per_round = [
                (ms + mr) / (os_ + or_)
                for ms, mr, os_, or_ in zip(
                    mine["setup"], mine["run"], ours["setup"], ours["run"], strict=True
                )
            ]
            r.fs_speedup = statistics.median(per_round)
            r.fs_speedup_range = (min(per_round), max(per_round))
            runs = [a / b for a, b in zip(mine["run"], ours["run"], strict=True)]
            r.extra["fs_speedup_run"] = statistics.median(runs)
            need = COMPETITOR_TARGETS.get(c.name) if c.role == "competitor" else None
            if need is not None:
                r.target = f"flowstream >= {need:g}x"
                r.status = "PASS" if r.fs_speedup >= need else "MISS"
            else:
                r.status = "info"
    rows[2:2] = extra_rows
    w = h.Workload(
        name=NAME,
        title=f"(c) DAG mode: {n} one-shot nodes, ~2 deps each (seed {SEED})",
        unit="us/node",
        rows=rows,
    )
    w.extra["columns"] = DAG_COLUMNS
    w.extra["nodes"] = n
    w.extra["terminals"] = len(terminals(n))
    w.notes.append(
        "run = wall time of one run of a validated, planned graph / nodes; "
        "setup = building the graph (flowstream: Workflow + validate + plan); "
        f"median of {cfg.repeat} interleaved rounds"
    )
    w.notes.append(
        "overhead = flowstream run - floor run of the same round (paired), "
        "median [min..max]; all-in = build + validate + plan + run; "
        "flowstream/x: the contender's setup+run over flowstream's in the same "
        "round (one DAG run from scratch), median [min..max] of rounds"
    )
    return w


def _fmt_us(value: Any) -> str:
    return "" if value is None else f"{value:.2f}"


def _fmt_range(spread: Any) -> str:
    return "" if not spread else f"[{spread[0]:.2f}..{spread[1]:.2f}]"


def _fmt_spread(extra: dict[str, Any], key: str, spread_key: str) -> str:
    value = extra.get(key)
    if value is None:
        return ""
    return f"{value:.2f} {_fmt_range(extra.get(spread_key))}"


DAG_COLUMNS: list[tuple[str, Callable[[h.Row], str]]] = [
    ("contender", lambda r: r.name),
    ("nodes", lambda r: "" if r.n is None else str(r.n)),
    ("run us/node", lambda r: _fmt_us(r.value) or "n/a"),
    ("setup us/node", lambda r: _fmt_us(r.extra.get("setup_us"))),
    ("validate us/node", lambda r: _fmt_us(r.extra.get("validate_us"))),
    (
        "overhead us/node",
        lambda r: _fmt_spread(r.extra, "overhead_us", "overhead_spread_us"),
    ),
    ("spread", lambda r: _fmt_range(r.extra.get("spread_us"))),
    (
        "flowstream/x [min..max]",
        lambda r: (
            ""
            if r.fs_speedup is None
            else f"{r.fs_speedup:.2f}x {_fmt_range(r.fs_speedup_range)}"
        ),
    ),
    ("target", lambda r: r.target),
    ("result", lambda r: r.status),
]


if __name__ == "__main__":
    h.run_standalone(NAME, run, sys.argv[1:])
