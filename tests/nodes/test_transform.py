from __future__ import annotations

import asyncio
import inspect
import math
import re
from typing import TYPE_CHECKING, Any

import msgspec
import pytest
from hypothesis import given, settings, strategies as st

from flowstream import FlowRuntime, default_registry
from flowstream.core.events import NodeEvent
from flowstream.core.node import NodeSpec, node
from flowstream.core.values import Json
from flowstream.core.workflow import ContinueOnError, ErrorHandling, Workflow
from flowstream.errors import WorkflowValidationError
from flowstream.nodes import transform
from flowstream.runtime.validation import validate
from flowstream.testing import assert_emits, run_nodes, run_virtual, run_workflow
from tests.local import local

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from flowstream.runtime.registry import NodeRegistry
    from flowstream.runtime.result import RunResult

SPECS = [
    transform.flat_map,
    transform.select,
    transform.key_by,
    transform.scan,
    transform.reduce,
    transform.batch,
    transform.dedupe,
    transform.throttle,
    transform.json_parse,
    transform.json_stringify,
]


# --- test-only nodes and helpers -------------------------------------------------


class At(msgspec.Struct, frozen=True, kw_only=True):
    events: list[tuple[float, Any]]


@node("test.at", config=At)
async def at_times(*, config: At) -> AsyncIterator[Any]:
    """Emit each value at its absolute loop time (seconds)."""
    loop = asyncio.get_running_loop()
    for when, value in config.events:
        delay = when - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        yield value


@node("test.stamp")
async def stamp(inp: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """Pair each item with the loop time it passed at."""
    loop = asyncio.get_running_loop()
    async for x in inp:
        yield [loop.time(), x]


def registry() -> NodeRegistry:
    reg = default_registry(entry_points=False)
    for spec in [*SPECS, at_times, stamp]:
        reg.register(spec, replace=True)
    return reg


def pipeline(
    type_id: str,
    config: dict[str, Any],
    values: list[Any],
    *,
    handling: ErrorHandling | None = None,
) -> Workflow:
    return (
        Workflow("t")
        .node("src", "source.values", values=values)
        .node("n", type_id, config, error_handling=handling)
        .connect("src -> n")
    )


def timed_pipeline(type_id: str, config: dict[str, Any], events: list[Any]) -> Workflow:
    return (
        Workflow("t")
        .node("src", "test.at", events=events)
        .node("n", type_id, config)
        .node("stamp", "test.stamp")
        .connect("src -> n")
        .connect("n -> stamp")
    )


def run_timed(wf: Workflow, **options: Any) -> list[Any]:
    async def main() -> RunResult:
        return await run_workflow(wf, registry(), **options)

    result = run_virtual(main())
    assert result.status == "completed", result.error
    return result.output("stamp")


def problems(type_id: str, config: dict[str, Any]) -> list[str]:
    wf = pipeline(type_id, config, [1])
    with pytest.raises(WorkflowValidationError) as info:
        validate(wf, registry())
    found = [p for p in info.value.problems if p.node == "n"]
    assert found, info.value
    return [str(p) for p in found]


_EXAMPLE = re.compile(
    r"``(\{id:.*?\})``\s+turns\s+``(\[.*?\])``\s+into\s+``(\[.*?\])``"
)


def docstring_example(spec: NodeSpec) -> tuple[dict[str, Any], list[Any], list[Any]]:
    """The node declaration, input and output of a node type's ``Example:``."""
    doc = inspect.getdoc(spec.fn) or ""
    assert "Example:" in doc
    found = _EXAMPLE.search(" ".join(doc.split()))
    assert found is not None, f"{spec.type_id}: no runnable example"
    decl, inp, out = (msgspec.yaml.decode(g.encode()) for g in found.groups())
    assert decl["type"] == spec.type_id
    return decl, inp, out


@pytest.fixture(params=["fused", "unfused"])
def fuse(request: pytest.FixtureRequest) -> bool:
    return bool(request.param == "fused")


# user functions referenced as "tests.nodes.test_transform:..."


def words(text: str) -> list[str]:
    return text.split()


def words_lazily(text: str) -> Any:
    return (w for w in text.split())


def push(acc: list[Any], v: Any) -> list[Any]:
    return [*acc, v]


def push_in_place(acc: list[Any], v: Any) -> list[Any]:
    acc.append(v)
    return acc


# --- every node type ---------------------------------------------------------------


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.type_id)
def test_docstring_example_runs(spec: NodeSpec) -> None:
    decl, inp, out = docstring_example(spec)
    assert spec.description
    doc = inspect.getdoc(spec.fn) or ""
    assert "stream-safe" in doc.lower() or "needs end of input" in doc.lower()
    run_virtual(assert_emits(spec, inp, out, decl.get("config")))


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.type_id)
def test_example_in_stream_mode(spec: NodeSpec) -> None:
    decl, inp, out = docstring_example(spec)
    wf = (
        Workflow("s", mode="stream")
        .node("src", "source.values", values=inp)
        .node("n", spec.type_id, decl.get("config", {}))
        .node("sink", "sink.collect")
        .connect("src -> n")
        .connect("n -> sink")
    )
    result = run_virtual(run_workflow(wf, registry()))
    assert result.status == "completed", result.error
    assert result.output("sink") == out


def test_reduce_is_declared_as_needing_end_and_batch_as_timed() -> None:
    assert transform.reduce.needs_end
    assert not transform.scan.needs_end
    assert transform.batch.timed
    for spec in (transform.flat_map, transform.select, transform.key_by):
        assert spec.kernel is not None
    assert transform.json_parse.kernel is not None
    assert transform.json_stringify.kernel is not None


BAD_CONFIGS = [
    ("transform.flat_map", {}, "'expr'"),
    ("transform.flat_map", {"expr": "[x"}, "config.expr"),
    ("transform.select", {}, "'pick', 'rename' or 'fields'"),
    ("transform.select", {"pick": ["a"], "fields": {"a": "x.b"}}, "'a' is set twice"),
    ("transform.select", {"rename": {"b": "a", "c": "a"}}, "'a' is set twice"),
    ("transform.select", {"pick": ["a"], "keep_others": True}, "'pick'"),
    ("transform.select", {"fields": {"t": "x +"}}, "config.fields.t"),
    ("transform.select", {"pick": "a"}, "config.pick"),
    ("transform.select", {"pik": ["a"]}, "pik"),
    ("transform.key_by", {}, "'key'"),
    ("transform.key_by", {"key": "x", "field": "a"}, "'field'"),
    ("transform.key_by", {"key": "x.("}, "config.key"),
    ("transform.scan", {}, "'op'"),
    ("transform.scan", {"op": "avg"}, "op must be one of count, sum"),
    ("transform.scan", {"op": "sum", "fn": "operator:add"}, "'fn'"),
    ("transform.scan", {"op": "sum", "initial": 0}, "'initial'"),
    ("transform.scan", {"op": "sum", "key": "x", "keyed": True}, "'keyed"),
    ("transform.scan", {"op": "sum", "value": "x +"}, "config.value"),
    ("transform.scan", {"fn": "flowstream_no_such_mod:f"}, "config.fn"),
    ("transform.reduce", {"op": "median"}, "op must be one of"),
    ("transform.reduce", {"op": "sum", "key": "x )"}, "config.key"),
    ("transform.batch", {}, "'size', 'interval_ms'"),
    ("transform.batch", {"size": 0}, "size must be >= 1"),
    ("transform.batch", {"interval_ms": 0}, "interval_ms must be"),
    ("transform.batch", {"interval_ms": math.inf}, "interval_ms must be"),
    ("transform.batch", {"size": "ten"}, "config.size"),
    ("transform.dedupe", {}, "'max_keys', 'ttl_ms'"),
    ("transform.dedupe", {"max_keys": 0}, "max_keys must be >= 1"),
    ("transform.dedupe", {"ttl_ms": -5}, "ttl_ms must be"),
    ("transform.dedupe", {"ttl_ms": math.nan}, "ttl_ms must be"),
    ("transform.dedupe", {"key": "x +", "max_keys": 3}, "config.key"),
    ("transform.throttle", {}, "rate"),
    ("transform.throttle", {"rate": 0}, "rate must be >= 1"),
    ("transform.throttle", {"rate": 1, "per_ms": 0}, "per_ms must be"),
    ("transform.throttle", {"rate": 1, "burst": 0}, "burst must be >= 1"),
    ("transform.json_parse", {"strict": True}, "takes no config"),
    ("transform.json_stringify", {"as_bytes": "yes"}, "config.as_bytes"),
    ("transform.json_stringify", {"pretty": True}, "pretty"),
]


@pytest.mark.parametrize(("type_id", "config", "expected"), BAD_CONFIGS)
def test_bad_config_is_a_validation_problem_naming_node_and_field(
    type_id: str, config: dict[str, Any], expected: str
) -> None:
    found = problems(type_id, config)
    assert any(expected in p for p in found), found
    assert all(p.startswith("node 'n'") for p in found)


# Per-item failures: (type, config, inputs, what gets through, dead letters).
ITEM_FAILURES = [
    ("transform.flat_map", {"expr": "[x + 1]"}, [1, "a", 2], [2, 3], ["a"]),
    ("transform.flat_map", {"expr": "x"}, [[1], "ab", [2]], [1, 2], ["ab"]),
    (
        "transform.select",
        {"fields": {"y": "x.n + 1"}},
        [{"n": 1}, {"n": "s"}, {"n": 2}],
        [{"y": 2}, {"y": 3}],
        [{"n": "s"}],
    ),
    (
        "transform.key_by",
        {"key": "x.k"},
        [{"k": 1}, {"j": 1}],
        [{"key": 1, "value": {"k": 1}}],
        [{"j": 1}],
    ),
    (
        "transform.scan",
        {"op": "sum", "value": "x.n"},
        [{"n": 1}, {}, {"n": 2}],
        [{"key": None, "value": 1}, {"key": None, "value": 3}],
        [{}],
    ),
    (
        "transform.reduce",
        {"op": "sum", "key": "x.k", "value": "x.n"},
        [{"k": "a", "n": 1}, {"k": "a"}, {"k": "a", "n": 2}],
        [{"key": "a", "value": 3}],
        [{"k": "a"}],
    ),
    (
        "transform.dedupe",
        {"key": "x.k", "max_keys": 10},
        [{"k": 1}, {}, {"k": 1}, {"k": 2}],
        [{"k": 1}, {"k": 2}],
        [{}],
    ),
    (
        "transform.json_parse",
        {},
        ['{"a": 1}', "{bad", "[1]"],
        [{"a": 1}, [1]],
        ["{bad"],
    ),
    ("transform.json_stringify", {}, [1, Json(b"{"), 2], ["1", "{", "2"], []),
]


@pytest.mark.parametrize(
    ("type_id", "config", "inputs", "ok", "dead"),
    ITEM_FAILURES,
    ids=[f"{c[0]}-{i}" for i, c in enumerate(ITEM_FAILURES)],
)
async def test_failing_item_goes_to_dead_letters_with_continue_on_error(
    type_id: str,
    config: dict[str, Any],
    inputs: list[Any],
    ok: list[Any],
    dead: list[Any],
    fuse: bool,
) -> None:
    wf = pipeline(type_id, config, inputs, handling=ContinueOnError())
    result = await run_workflow(wf, registry(), fuse=fuse)
    assert result.status == "completed", result.error
    assert result.output("n") == ok
    assert [d.item for d in result.dead_letters] == dead
    assert all(d.node_id == "n" for d in result.dead_letters)
    assert result.stats["n"].dead_letters == len(dead)


@pytest.mark.parametrize(
    ("type_id", "config", "inputs", "ok", "dead"),
    [c for c in ITEM_FAILURES if c[4]],
    ids=[c[0] for c in ITEM_FAILURES if c[4]],
)
async def test_failing_item_fails_the_run_with_stop_workflow(
    type_id: str,
    config: dict[str, Any],
    inputs: list[Any],
    ok: list[Any],
    dead: list[Any],
    fuse: bool,
) -> None:
    result = await run_workflow(
        pipeline(type_id, config, inputs), registry(), fuse=fuse
    )
    assert result.status == "failed"
    assert result.error is not None
    assert "node 'n'" in result.error
    assert type_id in result.error


# --- flat_map -----------------------------------------------------------------------


async def test_flat_map_with_python_function_and_empty_results() -> None:
    ref = "tests.nodes.test_transform:words"
    await assert_emits(
        transform.flat_map, ["a b", "", "c"], ["a", "b", "c"], {"fn": ref}
    )


async def test_flat_map_accepts_any_iterable_from_python() -> None:
    ref = "tests.nodes.test_transform:words_lazily"
    await assert_emits(transform.flat_map, ["a b", "c"], ["a", "b", "c"], {"fn": ref})


async def test_flat_map_refuses_a_mapping_with_a_clear_reason() -> None:
    wf = pipeline(
        "transform.flat_map", {"expr": "{'a': x}"}, [1], handling=ContinueOnError()
    )
    result = await run_workflow(wf, registry())
    [letter] = result.dead_letters
    assert "flat_map needs a list" in letter.reason
    assert "dict" in letter.reason


# --- select -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"pick": ["b", "a"]}, {"b": 2, "a": 1}),
        ({"rename": {"a": "z"}}, {"z": 1}),
        ({"rename": {"a": "z"}, "keep_others": True}, {"b": 2, "c": {"d": 4}, "z": 1}),
        ({"fields": {"d": "x.c.d", "s": "x.a + x.b"}}, {"d": 4, "s": 3}),
        (
            {"pick": ["a"], "rename": {"b": "bee"}, "fields": {"d": "x.c.d * 2"}},
            {"a": 1, "bee": 2, "d": 8},
        ),
        (
            {"keep_others": True, "fields": {"a": "x.a * 10"}},
            {"a": 10, "b": 2, "c": {"d": 4}},
        ),
    ],
)
async def test_select_builds_the_described_record(
    config: dict[str, Any], expected: dict[str, Any]
) -> None:
    record = {"a": 1, "b": 2, "c": {"d": 4}}
    await assert_emits(transform.select, [record], [expected], config)
    assert record == {"a": 1, "b": 2, "c": {"d": 4}}


async def test_select_never_changes_or_reuses_its_input() -> None:
    record = {"a": 1, "b": 2}
    f = transform.select.kernel
    assert f is not None
    config = msgspec.convert({"keep_others": True}, transform.Select)
    [out] = f(config)([record])
    assert out == record
    assert out is not record


async def test_select_missing_field_and_non_record_are_item_failures(
    fuse: bool,
) -> None:
    wf = pipeline(
        "transform.select",
        {"pick": ["a"]},
        [{"a": 1}, {"b": 2}, 5],
        handling=ContinueOnError(),
    )
    result = await run_workflow(wf, registry(), fuse=fuse)
    assert result.output("n") == [{"a": 1}]
    missing, scalar = result.dead_letters
    assert "has no field 'a'" in missing.reason
    assert "needs a record" in scalar.reason


# --- key_by -------------------------------------------------------------------------


async def test_key_by_field_and_expression() -> None:
    items = [{"user": "ada", "n": 1}, {"user": "bob", "n": 2}]
    await assert_emits(
        transform.key_by,
        items,
        [{"key": "ada", "value": items[0]}, {"key": "bob", "value": items[1]}],
        {"field": "user"},
    )
    await assert_emits(
        transform.key_by,
        items,
        [{"key": 2, "value": items[0]}, {"key": 4, "value": items[1]}],
        {"key": "x.n * 2"},
    )


async def test_key_by_missing_field_names_it(fuse: bool) -> None:
    wf = pipeline(
        "transform.key_by", {"field": "user"}, [{"u": 1}, 3], handling=ContinueOnError()
    )
    result = await run_workflow(wf, registry(), fuse=fuse)
    assert [d.item for d in result.dead_letters] == [{"u": 1}, 3]
    assert all("no field 'user'" in d.reason for d in result.dead_letters)


# --- scan and reduce ----------------------------------------------------------------

NUMBERS = [3, 1, 4, 1, 5]


@pytest.mark.parametrize(
    ("op", "running"),
    [
        ("count", [1, 2, 3, 4, 5]),
        ("sum", [3, 4, 8, 9, 14]),
        ("min", [3, 1, 1, 1, 1]),
        ("max", [3, 3, 4, 4, 5]),
        ("mean", [3.0, 2.0, 8 / 3, 2.25, 2.8]),
        ("first", [3, 3, 3, 3, 3]),
        ("last", [3, 1, 4, 1, 5]),
        ("collect", [NUMBERS[: i + 1] for i in range(5)]),
    ],
)
async def test_scan_and_reduce_ops(op: str, running: list[Any]) -> None:
    await assert_emits(
        transform.scan,
        NUMBERS,
        [{"key": None, "value": v} for v in running],
        {"op": op},
    )
    await assert_emits(
        transform.reduce, NUMBERS, [{"key": None, "value": running[-1]}], {"op": op}
    )


async def test_scan_groups_by_key_and_value_expressions() -> None:
    items = [{"k": "a", "n": 1}, {"k": "b", "n": 10}, {"k": "a", "n": 2}]
    await assert_emits(
        transform.scan,
        items,
        [
            {"key": "a", "value": 1.0},
            {"key": "b", "value": 10.0},
            {"key": "a", "value": 1.5},
        ],
        {"op": "mean", "key": "x.k", "value": "x.n"},
    )


async def test_scan_and_reduce_accept_keyed_records_from_key_by(fuse: bool) -> None:
    items = [{"u": "ada", "n": 2}, {"u": "bob", "n": 3}, {"u": "ada", "n": 5}]
    for type_id, expected in [
        (
            "transform.scan",
            [
                {"key": "ada", "value": 2},
                {"key": "bob", "value": 3},
                {"key": "ada", "value": 7},
            ],
        ),
        ("transform.reduce", [{"key": "ada", "value": 7}, {"key": "bob", "value": 3}]),
    ]:
        wf = (
            Workflow("k")
            .node("src", "source.values", values=items)
            .node("by", "transform.key_by", field="u")
            .node("n", type_id, op="sum", keyed=True, value="x.n")
            .connect("src -> by")
            .connect("by -> n")
        )
        result = await run_workflow(wf, registry(), fuse=fuse)
        assert result.status == "completed", result.error
        assert result.output("n") == expected


async def test_keyed_mode_refuses_records_without_key_and_value() -> None:
    wf = pipeline(
        "transform.scan",
        {"op": "count", "keyed": True},
        [{"key": 1}],
        handling=ContinueOnError(),
    )
    result = await run_workflow(wf, registry())
    [letter] = result.dead_letters
    assert "keyed: true needs records" in letter.reason


async def test_keys_of_any_json_type_are_grouped_and_returned_unchanged() -> None:
    keys = ["a", 1, True, None, 1.0, [1, "x"], {"k": 1}, "\x00odd", "a", 1, True]
    items = [{"k": k} for k in keys]
    expected = [
        {"key": "a", "value": 2},
        {"key": 1, "value": 2},
        {"key": True, "value": 2},
        {"key": None, "value": 1},
        {"key": 1.0, "value": 1},
        {"key": [1, "x"], "value": 1},
        {"key": {"k": 1}, "value": 1},
        {"key": "\x00odd", "value": 1},
    ]
    out = await run_nodes(transform.reduce, items, {"op": "count", "key": "x.k"})
    assert out["out"] == expected
    # True and 1 (and 1.0) are distinct keys, as in JSON.
    assert [type(r["key"]) for r in out["out"][1:5]] == [int, bool, type(None), float]


async def test_scan_with_python_reducer_starts_each_key_from_a_copy_of_initial() -> (
    None
):
    ref = "tests.nodes.test_transform:push_in_place"
    out = await run_nodes(
        transform.reduce,
        [{"k": "a", "v": 1}, {"k": "b", "v": 2}, {"k": "a", "v": 3}],
        {"fn": ref, "initial": [0], "key": "x.k", "value": "x.v"},
    )
    assert out["out"] == [
        {"key": "a", "value": [0, 1, 3]},
        {"key": "b", "value": [0, 2]},
    ]


async def test_scan_python_reducer() -> None:
    await assert_emits(
        transform.scan,
        [1, 2],
        [{"key": None, "value": [1]}, {"key": None, "value": [1, 2]}],
        {"fn": "tests.nodes.test_transform:push", "initial": []},
    )


async def test_scan_never_changes_an_emitted_accumulator(fuse: bool) -> None:
    out = await run_nodes(transform.scan, [1, 2, 3], {"op": "collect"}, fuse=fuse)
    assert [r["value"] for r in out["out"]] == [[1], [1, 2], [1, 2, 3]]


async def test_scan_mean_refuses_non_numbers() -> None:
    wf = pipeline(
        "transform.scan", {"op": "mean"}, [1, "2", 3], handling=ContinueOnError()
    )
    result = await run_workflow(wf, registry())
    assert [r["value"] for r in result.output("n")] == [1.0, 2.0]
    [letter] = result.dead_letters
    assert "mean needs numbers" in letter.reason


@pytest.mark.parametrize("type_id", ["transform.scan", "transform.reduce"])
async def test_running_totals_survive_the_restart_after_a_failed_item(
    type_id: str, fuse: bool
) -> None:
    # Bad items in the middle of a batch and of a key: each one restarts the
    # node's generator, and the totals carry on from the node state.
    items: list[Any] = []
    for i in range(1, 301):
        items.append({"k": i % 3, "n": i})
        if i % 50 == 0:
            items.append({"k": i % 3, "n": "bad"})
    wf = pipeline(
        type_id,
        {"op": "sum", "key": "x.k", "value": "x.n"},
        items,
        handling=ContinueOnError(),
    )
    result = await run_workflow(wf, registry(), fuse=fuse)
    assert result.status == "completed", result.error
    assert len(result.dead_letters) == 6
    totals = {k: sum(i for i in range(1, 301) if i % 3 == k) for k in range(3)}
    final = {r["key"]: r["value"] for r in result.output("n")}
    assert final == totals
    if type_id == "transform.scan":
        assert len(result.output("n")) == 300
        assert result.output("n")[-1] == {"key": 0, "value": totals[0]}


async def test_reduce_of_nothing_emits_nothing() -> None:
    await assert_emits(transform.reduce, [], [], {"op": "count"})


async def test_scan_state_is_plain_encodable_values() -> None:
    items = [{"k": k, "n": 1.5} for k in ["a", None, 2, [1]]]
    wf = pipeline("transform.scan", {"op": "mean", "key": "x.k", "value": "x.n"}, items)
    executor = local(FlowRuntime(registry()).executor(wf))
    result = await executor.run()
    assert result.status == "completed"
    state = executor.state.snapshot()["n"]
    # Int keys stay ints in MessagePack (the checkpoint format).
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(state)) == state


# --- batch --------------------------------------------------------------------------


async def test_batch_by_size_with_remainder(fuse: bool) -> None:
    out = await run_nodes(transform.batch, range(7), {"size": 3}, fuse=fuse)
    assert out["out"] == [[0, 1, 2], [3, 4, 5], [6]]


async def test_batch_of_nothing_emits_nothing() -> None:
    await assert_emits(transform.batch, [], [], {"size": 3})


async def test_batch_larger_than_a_channel_batch() -> None:
    out = await run_nodes(transform.batch, range(5000), {"size": 2048})
    assert [len(b) for b in out["out"]] == [2048, 2048, 904]
    assert [x for b in out["out"] for x in b] == list(range(5000))


def test_batch_by_interval_flushes_on_time_without_new_input() -> None:
    events = [[0, "a"], [0, "b"], [1, "c"], [5, "d"], [5.5, "e"], [9, "f"]]
    got = run_timed(timed_pipeline("transform.batch", {"interval_ms": 2000}, events))
    assert got == [[2.0, ["a", "b", "c"]], [7.0, ["d", "e"]], [9.0, ["f"]]]


def test_batch_by_size_or_interval_whichever_first() -> None:
    events = [[0, 1], [0, 2], [0, 3], [4, 4], [4.5, 5], [4.5, 6], [9, 7]]
    got = run_timed(
        timed_pipeline("transform.batch", {"size": 2, "interval_ms": 3000}, events)
    )
    assert got == [[0.0, [1, 2]], [3.0, [3]], [4.5, [4, 5]], [7.5, [6]], [9.0, [7]]]


# --- dedupe -------------------------------------------------------------------------


async def test_dedupe_keeps_the_first_of_each_key() -> None:
    items = [{"id": 1, "v": "first"}, {"id": 2, "v": "x"}, {"id": 1, "v": "second"}]
    await assert_emits(
        transform.dedupe, items, [items[0], items[1]], {"key": "x.id", "max_keys": 10}
    )


async def test_dedupe_of_records_by_whole_value() -> None:
    items = [{"a": [1]}, {"a": [1]}, {"a": [2]}, 1, 1.0, True]
    await assert_emits(
        transform.dedupe, items, [{"a": [1]}, {"a": [2]}, 1, 1.0, True], {"max_keys": 9}
    )


async def test_dedupe_forgets_the_oldest_key_past_max_keys() -> None:
    await assert_emits(
        transform.dedupe,
        ["a", "b", "c", "a", "c", "b"],
        ["a", "b", "c", "a", "b"],
        {"max_keys": 2},
    )


async def test_dedupe_counts_what_it_dropped() -> None:
    runtime = FlowRuntime(registry())
    events: list[Any] = []
    runtime.bus.add_listener(events.append)
    wf = pipeline("transform.dedupe", {"max_keys": 5}, ["a", "a", "b", "a"])
    executor = local(runtime.executor(wf))
    result = await executor.run()
    assert result.output("n") == ["a", "b"]
    assert executor.state.snapshot()["n"]["dropped"] == 2
    custom = [(e.node_id, e.name, e.data) for e in events if isinstance(e, NodeEvent)]
    assert custom == [("n", "duplicates_dropped", {"count": 2})]


def test_dedupe_forgets_keys_after_ttl() -> None:
    events = [[0, "a"], [1, "a"], [2, "b"], [3, "a"], [4, "b"], [4.5, "a"], [6, "b"]]
    got = run_timed(timed_pipeline("transform.dedupe", {"ttl_ms": 3000}, events))
    # "a" kept at 0 is forgotten at 3 (exactly ttl later); "b" kept at 2 at 5.
    assert got == [[0.0, "a"], [2.0, "b"], [3.0, "a"], [6.0, "b"]]


def reference_dedupe(
    events: list[tuple[int, int, int]], max_keys: int | None, ttl: float | None
) -> list[tuple[int, int, int]]:
    """Keep an item unless an item kept for its key is still remembered.

    Remembered: among the last ``max_keys`` kept items, and kept less than
    ``ttl`` seconds ago.
    """
    kept: list[tuple[int, int, int]] = []
    for event in events:
        t, key, _ = event
        live = kept[-max_keys:] if max_keys is not None else kept
        if ttl is not None:
            live = [e for e in live if t - e[0] < ttl]
        if all(e[1] != key for e in live):
            kept.append(event)
    return kept


@settings(max_examples=60, deadline=None)
@given(
    keys=st.lists(st.integers(0, 6), max_size=40),
    max_keys=st.integers(1, 5),
)
def test_dedupe_matches_reference_with_max_keys(keys: list[int], max_keys: int) -> None:
    items = [{"k": k, "i": i} for i, k in enumerate(keys)]

    async def main() -> dict[str, list[Any]]:
        return await run_nodes(
            transform.dedupe, items, {"key": "x.k", "max_keys": max_keys}
        )

    got = run_virtual(main())["out"]
    want = reference_dedupe([(0, k, i) for i, k in enumerate(keys)], max_keys, None)
    assert got == [{"k": k, "i": i} for _, k, i in want]


@settings(max_examples=60, deadline=None)
@given(
    steps=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 5)), max_size=30),
    ttl_s=st.integers(1, 5),
    max_keys=st.none() | st.integers(1, 4),
)
def test_dedupe_matches_reference_with_ttl_on_virtual_time(
    steps: list[tuple[int, int]], ttl_s: int, max_keys: int | None
) -> None:
    events: list[tuple[int, int, int]] = []
    now = 0
    for i, (gap, key) in enumerate(steps):
        now += gap
        events.append((now, key, i))
    config: dict[str, Any] = {"key": "x.k", "ttl_ms": ttl_s * 1000}
    if max_keys is not None:
        config["max_keys"] = max_keys
    wf = timed_pipeline(
        "transform.dedupe", config, [[t, {"k": k, "i": i}] for t, k, i in events]
    )
    got = run_timed(wf)
    want = reference_dedupe(events, max_keys, ttl_s)
    assert got == [[float(t), {"k": k, "i": i}] for t, k, i in want]


# --- throttle -----------------------------------------------------------------------


def test_throttle_spaces_items_after_a_burst() -> None:
    events = [[0, i] for i in range(6)]
    got = run_timed(
        timed_pipeline("transform.throttle", {"rate": 2, "per_ms": 1000}, events)
    )
    assert got == [[0.0, 0], [0.0, 1], [0.5, 2], [1.0, 3], [1.5, 4], [2.0, 5]]


def test_throttle_refills_while_idle_up_to_burst() -> None:
    events = [[0, 0], [10, 1], [10, 2], [10, 3], [10, 4]]
    got = run_timed(
        timed_pipeline(
            "transform.throttle", {"rate": 4, "per_ms": 1000, "burst": 2}, events
        )
    )
    assert got == [[0.0, 0], [10.0, 1], [10.0, 2], [10.25, 3], [10.5, 4]]


def test_throttle_never_drops_under_load_and_keeps_order() -> None:
    got = run_timed(
        timed_pipeline(
            "transform.throttle",
            {"rate": 100, "per_ms": 10},
            [[0, i] for i in range(3000)],
        ),
        fuse=False,
    )
    assert [x for _, x in got] == list(range(3000))
    # 100 at once, then one every 0.1 ms.
    assert got[-1][0] == pytest.approx(2900 * 0.0001)


# --- JSON ---------------------------------------------------------------------------


async def test_json_parse_accepts_str_bytes_and_json() -> None:
    await assert_emits(
        transform.json_parse,
        ['{"a": 1}', b"[1, 2]", Json(b'"s"'), b'{"b": {"$bytes": "AAE="}}'],
        [{"a": 1}, [1, 2], "s", {"b": b"\x00\x01"}],
    )


async def test_json_parse_reports_msgspec_reason_and_bad_types(fuse: bool) -> None:
    wf = pipeline(
        "transform.json_parse", {}, ['{"a": 1,}', 42, "[1]"], handling=ContinueOnError()
    )
    result = await run_workflow(wf, registry(), fuse=fuse)
    assert result.output("n") == [[1]]
    malformed, number = result.dead_letters
    assert malformed.error_type == "DecodeError"
    assert "invalid JSON: JSON is malformed" in malformed.reason
    assert "json_parse needs bytes, str or Json" in number.reason


async def test_json_stringify_str_and_bytes() -> None:
    values = [{"a": [1, 2.5, None, True]}, "é", b"\x00"]
    await assert_emits(
        transform.json_stringify,
        values,
        ['{"a":[1,2.5,null,true]}', '"é"', '{"$bytes":"AA=="}'],
    )
    await assert_emits(
        transform.json_stringify,
        values[:2],
        [b'{"a":[1,2.5,null,true]}', '"é"'.encode()],
        {"as_bytes": True},
    )


async def test_json_round_trip() -> None:
    wf = (
        Workflow("rt")
        .node("src", "source.values", values=[{"x": [1, {"y": b"z"}]}])
        .node("s", "transform.json_stringify")
        .node("p", "transform.json_parse")
        .connect("src -> s")
        .connect("s -> p")
    )
    result = await run_workflow(wf, registry())
    assert result.output("p") == [{"x": [1, {"y": b"z"}]}]


async def test_json_stringify_refuses_nan(fuse: bool) -> None:
    wf = pipeline(
        "transform.json_stringify", {}, [1.0, math.nan, 2], handling=ContinueOnError()
    )
    result = await run_workflow(wf, registry(), fuse=fuse)
    assert result.output("n") == ["1.0", "2"]
    [letter] = result.dead_letters
    assert math.isnan(letter.item)
    assert letter.error_type == "EncodeError"


def half_then_fail(n: int) -> Any:
    yield n
    if n == 2:
        msg = "broke halfway"
        raise RuntimeError(msg)
    yield n * 10


async def test_flat_map_item_failing_halfway_emits_none_of_its_elements(
    fuse: bool,
) -> None:
    wf = pipeline(
        "transform.flat_map",
        {"fn": "tests.nodes.test_transform:half_then_fail"},
        [1, 2, 3],
        handling=ContinueOnError(),
    )
    result = await run_workflow(wf, registry(), fuse=fuse)
    assert result.output("n") == [1, 10, 3, 30]
    assert [d.item for d in result.dead_letters] == [2]
