"""The wasm nodes: the ABI, the limits (time, memory, WASI) and failures."""

from __future__ import annotations

import base64
import math
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from connectors.wasm import NODES, open_sandbox, wasm_filter, wasm_flat_map, wasm_map
from flowstream import (
    ContinueOnError,
    FlowRuntime,
    Limits,
    NodeRegistry,
    RunResult,
    Workflow,
    default_registry,
)
from flowstream.errors import SandboxError, TimeLimitExceeded
from flowstream.testing import assert_emits

ROOT = Path(__file__).resolve().parents[3]
ARITH = str(ROOT / "examples" / "wasm" / "arith.wat")
HOSTILE = str(Path(__file__).with_name("hostile.wat"))
ARITH_INLINE = "base64:" + base64.b64encode(Path(ARITH).read_bytes()).decode()


def registry() -> NodeRegistry:
    reg = default_registry(entry_points=False)
    reg.register_all(NODES)
    return reg


async def run(
    function: str,
    items: list[Any],
    *,
    module: str = HOSTILE,
    node_type: str = "wasm.map",
    limits: dict[str, Any] | None = None,
    **options: Any,
) -> RunResult:
    config: dict[str, Any] = {"module": module, "function": function}
    if limits is not None:
        config["limits"] = limits
    wf = (
        Workflow("w")
        .node("src", "source.values", values=items)
        .node("f", node_type, config, error_handling=ContinueOnError())
        .connect("src -> f")
    )
    return await FlowRuntime(registry()).arun(wf, **options)


# --- the three node types ------------------------------------------------------


async def test_map_filter_flat_map_on_the_text_format_example():
    await assert_emits(
        wasm_map,
        [1, 2, -3, 2**40, 1.5],
        [3, 5, -5, 2**41 + 1, 4.0],
        {"module": ARITH, "function": "double_plus_one"},
        registry=registry(),
    )
    await assert_emits(
        wasm_filter,
        [1, 2, 3, -7],
        [1, 3, -7],
        {"module": ARITH, "function": "is_odd"},
        registry=registry(),
    )
    await assert_emits(
        wasm_flat_map,
        [1, 2],
        [1, 1, 2, 2],
        {"module": ARITH, "function": "twice"},
        registry=registry(),
    )


async def test_the_docstring_examples_run_through_the_raw_function():
    async def items(values: list[Any]) -> Any:
        for v in values:
            yield v

    cfg = wasm_map.config_type
    assert cfg is not None
    config = msgspec.convert({"module": ARITH, "function": "double_plus_one"}, cfg)
    assert [y async for y in wasm_map.fn(items([1, 2, 3]), config=config)] == [3, 5, 7]


async def test_an_inline_module_runs_like_a_file():
    result = await run("double", [1, 2], module=ARITH_INLINE)
    assert result.output("f") == [2, 4]


async def test_a_module_error_string_fails_the_item_with_its_message():
    result = await run("double", [1, "x", 3], module=ARITH)
    assert result.output("f") == [2, 6]
    [dead] = result.dead_letters
    assert dead.item == "x"
    assert "items must be numbers" in dead.reason


# --- traps and time --------------------------------------------------------------


@pytest.mark.parametrize("fuse", [True, False])
async def test_a_trap_goes_to_error_with_its_message(fuse: bool):
    result = await run("trap", [1, -1, 2], fuse=fuse)
    assert result.ok, result.error
    assert result.output("f") == [1, 2]
    [dead] = result.dead_letters
    assert dead.item == -1
    assert dead.reason.startswith("SandboxError: wasm trap in trap:")
    assert "unreachable" in dead.reason


async def test_an_endless_loop_is_stopped_at_the_time_limit_and_the_run_goes_on():
    started = time.perf_counter()
    result = await run("spin", [1, -1, 2, 3], limits={"time_limit_ms": 50})
    elapsed = time.perf_counter() - started
    assert result.ok, result.error
    assert result.output("f") == [1, 2, 3]
    [dead] = result.dead_letters
    assert dead.item == -1
    assert dead.reason == (
        "TimeLimitExceeded: time limit exceeded: the call ran over "
        "limits.time_limit_ms=50"
    )
    # The batch call and the item's own call each hit the limit: twice 50 ms,
    # never the endless loop (generous for a loaded machine).
    assert elapsed < 5.0


def test_the_limit_stops_a_call_close_to_its_time():
    box = open_sandbox(HOSTILE, "spin", Limits(time_limit_ms=100))
    started = time.perf_counter()
    with pytest.raises(TimeLimitExceeded, match="time limit exceeded"):
        box.call([-1])
    elapsed = time.perf_counter() - started
    assert 0.1 <= elapsed < 2.0
    assert box.call([5]) == [5]  # a fresh instance after the failure


# --- memory ---------------------------------------------------------------------


def test_a_memory_bomb_stops_at_the_page_limit():
    box = open_sandbox(HOSTILE, "bomb", Limits(memory_pages=8))
    with pytest.raises(SandboxError, match="bomb failed: pages 00008"):
        box.call([-1])
    assert box.call([1]) == [1]


def test_a_module_that_starts_bigger_than_the_limit_is_refused():
    wat = (
        '(module (memory (export "memory") 100)'
        ' (func (export "alloc") (param i32) (result i32) i32.const 0)'
        ' (func (export "dealloc") (param i32 i32))'
        ' (func (export "f") (param i32 i32) (result i64) i64.const 0))'
    )
    inline = "base64:" + base64.b64encode(wat.encode()).decode()
    with pytest.raises(SandboxError, match=r"cannot start .*memory_pages is 16"):
        open_sandbox(inline, "f", Limits(memory_pages=16))


def test_a_batch_bigger_than_the_memory_fails_the_call():
    box = open_sandbox(HOSTILE, "trap", Limits(memory_pages=2))
    with pytest.raises(SandboxError, match=r"alloc\(\d+\) failed"):
        box.call([b"x" * 200_000])
    assert box.call([1]) == [1]


# --- loading: imports and exports -----------------------------------------------


def _module(imports: str) -> str:
    wat = (
        f'(module {imports} (memory (export "memory") 1)'
        ' (func (export "alloc") (param i32) (result i32) i32.const 64)'
        ' (func (export "dealloc") (param i32 i32))'
        ' (func (export "f") (param $p i32) (param $n i32) (result i64)'
        "   local.get $p i64.extend_i32_u i64.const 32 i64.shl"
        "   local.get $n i64.extend_i32_u i64.or))"
    )
    return "base64:" + base64.b64encode(wat.encode()).decode()


FD_WRITE = (
    '(import "wasi_snapshot_preview1" "fd_write"'
    " (func (param i32 i32 i32 i32) (result i32)))"
)
CLOCK = (
    '(import "wasi_snapshot_preview1" "clock_time_get"'
    " (func (param i32 i64 i32) (result i32)))"
)


def test_a_wasi_import_that_was_not_granted_fails_the_load_naming_it():
    with pytest.raises(
        SandboxError,
        match=r"imports wasi_snapshot_preview1\.fd_write, which this node does "
        r"not grant \(limits\.wasi: none\)",
    ):
        open_sandbox(_module(FD_WRITE), "f", Limits())
    with pytest.raises(SandboxError, match=r"fd_write, .*limits\.wasi: clock"):
        open_sandbox(_module(FD_WRITE), "f", Limits(wasi=("clock",)))


def test_a_granted_wasi_import_loads():
    box = open_sandbox(_module(CLOCK), "f", Limits(wasi=("clock",)))
    assert box.call([1, "a"]) == [1, "a"]
    box = open_sandbox(_module(FD_WRITE), "f", Limits(wasi=("files",)))
    assert box.call([2]) == [2]


def test_an_import_that_is_not_wasi_fails_the_load_naming_it():
    imports = '(import "env" "abort" (func (param i32 i32 i32 i32)))'
    with pytest.raises(SandboxError, match=r"imports env\.abort, which flowstream"):
        open_sandbox(_module(imports), "f", Limits())


async def test_a_run_whose_module_cannot_load_fails_naming_the_import():
    result = await run("f", [1], module=_module(FD_WRITE))
    assert result.status == "failed"
    assert result.error is not None
    assert result.error.startswith("node 'f' (wasm.map) failed to start: ")
    assert "wasi_snapshot_preview1.fd_write" in result.error


def test_missing_or_mistyped_exports_are_named():
    with pytest.raises(SandboxError, match=r"no function 'nope' \(its functions: "):
        open_sandbox(ARITH, "nope", Limits())
    with pytest.raises(SandboxError, match=r"cannot read wasm module"):
        open_sandbox("/no/such/module.wasm", "f", Limits())


def test_an_answer_outside_the_memory_or_of_the_wrong_length_fails():
    with pytest.raises(SandboxError, match="outside its memory"):
        open_sandbox(HOSTILE, "escape", Limits()).call([1])
    with pytest.raises(SandboxError, match="answered a list of 0 for a batch of 2"):
        open_sandbox(HOSTILE, "short", Limits()).call([1, 2])


# --- config -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "field", "message"),
    [
        ({"module": "base64:%%%", "function": "f"}, "config.module", "base64"),
        (
            {"module": "m.wat", "function": "f", "limits": {"time_limit_ms": 0}},
            "config.limits",
            "time_limit_ms must be a finite number > 0",
        ),
        (
            {"module": "m.wat", "function": "f", "limits": {"wasi": ["network"]}},
            "config.limits.wasi[0]",
            "",
        ),
        (
            {"module": "m.wat", "function": "f", "limits": {"dirs": ["/tmp"]}},
            "config.limits",
            "dirs needs the 'files' grant",
        ),
    ],
)
def test_bad_configs_are_refused_naming_the_field(config, field, message):
    from flowstream import validate
    from flowstream.errors import WorkflowValidationError

    wf = (
        Workflow("w")
        .node("src", "source.values", values=[1])
        .node("f", "wasm.map", config)
        .connect("src -> f")
    )
    with pytest.raises(WorkflowValidationError) as info:
        validate(wf, registry())
    [problem] = info.value.problems
    assert problem.node == "f"
    assert problem.field == field
    assert message in problem.message


# --- the ABI round trip -------------------------------------------------------

VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary(),
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=20,
)
ECHO = open_sandbox(ARITH, "echo", Limits())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(VALUES, max_size=40))
def test_every_value_type_round_trips_through_the_abi(batch: list[Any]):
    assert ECHO.call(batch) == batch


def test_nan_round_trips():
    [x] = ECHO.call([math.nan])
    assert math.isnan(x)


# --- the crossing -------------------------------------------------------------


def test_the_raw_crossing_is_taken_with_the_tested_wasmtime():
    from connectors.wasm._crossing import RawCrossing

    assert isinstance(open_sandbox(ARITH, "echo", Limits())._crossing, RawCrossing)


def test_the_public_crossing_gives_the_same_answers_and_failures(monkeypatch):
    from connectors.wasm import _crossing

    monkeypatch.setattr(_crossing, "FORCE_PUBLIC", True)
    box = open_sandbox(HOSTILE, "trap", Limits())
    assert isinstance(box._crossing, _crossing.PublicCrossing)
    assert box.call([1, "a", [2]]) == [1, "a", [2]]
    with pytest.raises(SandboxError, match="unreachable"):
        box.call([-1])
    spin = open_sandbox(HOSTILE, "spin", Limits(time_limit_ms=20))
    with pytest.raises(TimeLimitExceeded):
        spin.call([-1])
    with pytest.raises(SandboxError, match="outside its memory"):
        open_sandbox(HOSTILE, "escape", Limits()).call([1])


def test_the_clock_parks_when_idle_and_a_call_after_is_still_limited():
    from connectors.wasm import _engine

    box = open_sandbox(HOSTILE, "spin", Limits(time_limit_ms=50))
    assert box.call([1]) == [1]
    clock = _engine.clock()
    deadline = time.monotonic() + 10.0
    while not clock.parked:  # parks PARK_AFTER_S after the last call
        assert time.monotonic() < deadline, "the epoch clock never parked"
        time.sleep(0.01)
    started = time.perf_counter()
    with pytest.raises(TimeLimitExceeded):
        box.call([-1])
    assert time.perf_counter() - started < 5.0
    assert clock.busy == 0


async def test_without_wasmtime_only_the_wasm_nodes_fail_naming_the_extra(
    monkeypatch: pytest.MonkeyPatch,
):
    import sys

    monkeypatch.setitem(sys.modules, "wasmtime", None)  # import fails
    assert "wasm.map" in registry()
    result = await run("double", [1], module=ARITH)
    assert result.status == "failed"
    assert result.error is not None
    assert result.error.startswith("node 'f' (wasm.map) failed to start: ")
    assert "pip install 'flowstream[wasm]'" in result.error
    wf = Workflow("w").node("a", "source.values", values=[1]).node("b", "sink.collect")
    assert (await FlowRuntime(registry()).arun(wf.connect("a -> b"))).ok
