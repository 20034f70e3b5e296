"""W1's map step (``x * 2``) as ``wasm.map`` against the Python floor.

W1 is the linear workload (`benchmarks.bench_linear`): map(x*2) ->
filter -> map(x+1). Its first step, run as a batch kernel, is
``list(map(double, batch))``: that is the floor. The contender is the
``wasm.map`` kernel on the same batch, calling ``double`` in the committed
AssemblyScript module (examples/wasm/assemblyscript): encode the batch as
MessagePack, write it into the module's memory, call, read the answer,
decode it. The text-format module's ``double`` is measured as well (info).

Paired rounds: in each round the floor and the contenders run the same
number of calls, one after the other in this process, so a burst of load
on the machine hits all of them alike; the table gives the median of the
rounds and [min..max]. For each batch size (1, 64, 1024):

* per item: a call's time divided by the batch size;
* vs floor: the floor's time over the contender's, per round (higher is
  faster; the target is >= 0.3x at batch 1024);
* crossing per call: what a call costs beyond the floor's work for the
  same batch (the contender's time minus the floor's).

The empty batch's call is the fixed crossing cost itself: encode ``[]``,
write one byte, call, read one byte, decode.

Then W1 end to end, as `benchmarks.bench_linear` runs it (fused, source to
sum), with its first step as ``transform.map`` (``fn: double``) and as
``wasm.map``: what the sandbox costs in a whole run (info).
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import _harness as h, _nodes, bench_linear
from .funcs import double

if TYPE_CHECKING:
    from collections.abc import Callable

NAME = "wasm"
ROOT = Path(__file__).resolve().parents[1]
AS_MODULE = str(ROOT / "examples" / "wasm" / "assemblyscript" / "arith.wasm")
WAT_MODULE = str(ROOT / "examples" / "wasm" / "arith.wat")
SIZES = (1, 64, 1024)
TARGET = 0.3  # wasm.map >= 0.3x the floor at batch 1024


def floor_kernel(batch: list[Any]) -> list[Any]:
    """transform.map's kernel with ``fn: benchmarks.funcs:double``."""
    return list(map(double, batch))


def wasm_kernel(module: str) -> Callable[[list[Any]], list[Any]]:
    """wasm.map's kernel, as the runtime builds it from the node's config."""
    from connectors.wasm import WasmFunction, wasm_map

    assert wasm_map.kernel is not None
    return wasm_map.kernel(WasmFunction(module=module, function="double"))


def _time_calls(
    kernel: Callable[[list[Any]], list[Any]], batch: list[Any], calls: int
) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        kernel(batch)
    return (time.perf_counter() - started) / calls


def _spread(values: list[float], scale: float, fmt: str) -> str:
    med = statistics.median(values) * scale
    return f"{med:{fmt}} [{min(values) * scale:{fmt}}..{max(values) * scale:{fmt}}]"


def run(cfg: h.Config) -> h.Workload:
    w = h.Workload(
        name=NAME,
        title="wasm: W1's map step (x*2) as wasm.map vs the Python floor",
        unit="ns/item",
    )
    try:
        kernels = {
            "floor (Python map)": floor_kernel,
            "wasm.map AssemblyScript": wasm_kernel(AS_MODULE),
            "wasm.map text format": wasm_kernel(WAT_MODULE),
        }
    except Exception as exc:  # wasmtime missing: say so instead of failing
        w.notes.append(f"wasm unavailable: {exc}")
        return w
    rounds = cfg.repeat * (2 if cfg.quick else 4)
    items_per_round = cfg.size(400_000, 40_000)
    for size in (0, *SIZES):
        batch = list(range(size))
        want = floor_kernel(batch)
        for name, kernel in kernels.items():
            got = kernel(batch)
            assert got == want, f"{name} computed {got[:5]}... for batch {size}"
        # Enough calls to time, few enough that batch 1 does not take minutes.
        calls = min(max(20, items_per_round // max(size, 1)), 4000)
        times: dict[str, list[float]] = {name: [] for name in kernels}
        for _ in range(rounds):
            for name, kernel in kernels.items():
                times[name].append(_time_calls(kernel, batch, calls))
        floor = times["floor (Python map)"]
        h.log(
            f"  batch {size}: "
            + ", ".join(
                f"{n} {statistics.median(t) * 1e6:.2f} us/call"
                for n, t in times.items()
            )
        )
        for name, per_call in times.items():
            row = h.Row(
                name=f"{name}, batch {size}", role="info", n=size, unit="ns/item"
            )
            row.times_s = per_call
            row.value = statistics.median(per_call) / max(size, 1) * 1e9
            row.extra["per_call_us"] = _spread(per_call, 1e6, ".2f")
            row.extra["per_item_ns"] = (
                _spread(per_call, 1e9 / size, ".0f") if size else ""
            )
            if name.startswith("floor"):
                row.role = "floor"
            else:
                ratios = [f / c for f, c in zip(floor, per_call, strict=True)]
                crossing = [c - f for f, c in zip(floor, per_call, strict=True)]
                row.vs_floor = statistics.median(ratios)
                row.extra["vs_floor"] = _spread(ratios, 1, ".2f")
                row.extra["crossing_us"] = _spread(crossing, 1e6, ".2f")
                if size == 1024 and "AssemblyScript" in name:
                    row.target = f">= {TARGET}x floor"
                    row.status = "PASS" if row.vs_floor >= TARGET else "MISS"
                else:
                    row.status = "info"
            w.rows.append(row)
    _end_to_end(cfg, w)
    w.notes.append(
        f"{rounds} paired rounds per batch size; median [min..max]. Batch 0 is "
        "the fixed crossing cost (an empty batch). A negative crossing: the "
        "module's work on the batch costs less than the floor's by more than "
        "the crossing."
    )
    w.extra["columns"] = COLUMNS
    return w


def _end_to_end(cfg: h.Config, w: h.Workload) -> None:
    """W1 whole, with its map step in Python and in wasm, paired rounds."""
    import asyncio

    from connectors.wasm import NODES
    from flowstream import FlowRuntime

    reg = _nodes.registry()
    reg.register_all(NODES)
    runtime = FlowRuntime(reg)
    n = cfg.size(200_000, 20_000)
    python_wf = bench_linear.workflow(n)
    wasm_wf = bench_linear.workflow(n)
    double_node = wasm_wf.get_node("double")
    double_node.type = "wasm.map"
    double_node.config = {"module": AS_MODULE, "function": "double"}
    graphs = {
        "W1, map step in Python (fn)": runtime.validate(python_wf),
        "W1, map step as wasm.map": runtime.validate(wasm_wf),
    }
    want = bench_linear.expected(n)

    async def once(graph: Any) -> float:
        started = time.perf_counter()
        result = await runtime.arun(graph)
        elapsed = time.perf_counter() - started
        assert result.ok, result.error
        assert result.output("sum") == [want]
        return elapsed

    times: dict[str, list[float]] = {name: [] for name in graphs}
    for _ in range(cfg.repeat * 2):
        for name, graph in graphs.items():
            times[name].append(asyncio.run(once(graph)))
    base = times["W1, map step in Python (fn)"]
    for name, per_run in times.items():
        row = h.Row(name=name, role="info", n=n, unit="ns/item")
        row.times_s = per_run
        row.value = statistics.median(per_run) / n * 1e9
        row.extra["per_call_us"] = "whole run: " + _spread(per_run, 1e3, ".1f") + " ms"
        row.extra["per_item_ns"] = _spread(per_run, 1e9 / n, ".0f")
        if per_run is not base:
            ratios = [b / t for b, t in zip(base, per_run, strict=True)]
            row.vs_floor = statistics.median(ratios)
            row.extra["vs_floor"] = _spread(ratios, 1, ".2f") + " of Python"
        row.status = "info"
        w.rows.append(row)


COLUMNS: list[tuple[str, Callable[[h.Row], str]]] = [
    ("contender", lambda r: r.name),
    ("per call (us)", lambda r: r.extra.get("per_call_us", "")),
    ("per item (ns)", lambda r: r.extra.get("per_item_ns", "")),
    ("vs floor", lambda r: r.extra.get("vs_floor", "")),
    ("crossing per call (us)", lambda r: r.extra.get("crossing_us", "")),
    ("target", lambda r: r.target),
    ("result", lambda r: r.status),
]


if __name__ == "__main__":
    h.run_standalone(NAME, run)
