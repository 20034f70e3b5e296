from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import TYPE_CHECKING, Any, cast

import msgspec
import pytest
from hypothesis import given, settings, strategies as st

from flowstream.core.node import node
from flowstream.core.workflow import Workflow
from flowstream.errors import WorkflowValidationError
from flowstream.nodes import join
from flowstream.runtime.validation import validate
from flowstream.testing import run_nodes, run_virtual, run_workflow

from .test_control import check_example, docstring_example, problems, registry

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from flowstream.core.node import NodeSpec
    from flowstream.runtime.registry import NodeRegistry
    from flowstream.runtime.result import RunResult


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


def join_registry() -> NodeRegistry:
    reg = registry()
    reg.register(at_times, replace=True)
    return reg


class FakeContext:
    """Just what the join nodes use of a NodeContext."""

    def __init__(self) -> None:
        self.state: dict[str, Any] = {}
        self.emitted: dict[str, list[Any]] = defaultdict(list)
        self.dead: list[tuple[Any, str]] = []

    def emit(self, port: str, item: Any) -> None:
        self.emitted[port].append(item)

    def dead_letter(self, item: Any, reason: str) -> None:
        self.dead.append((item, reason))


EVENT_TIME = {
    "left_key": "x.k",
    "right_key": "x.k",
    "left_time": "x.t",
    "right_time": "x.t",
}


def window_config(**fields: Any) -> join.Window:
    return msgspec.convert({**EVENT_TIME, **fields}, join.Window)


def pairs(out: list[Any]) -> list[tuple[Any, Any]]:
    return sorted((p["left"]["i"], p["right"]["i"]) for p in out)


# --- both node types ---------------------------------------------------------------


@pytest.mark.parametrize(
    "spec", [join.window_join, join.lookup_join], ids=lambda s: s.type_id
)
async def test_docstring_example_runs(spec: NodeSpec) -> None:
    assert spec.description
    await check_example(spec)


@pytest.mark.parametrize(
    "spec", [join.window_join, join.lookup_join], ids=lambda s: s.type_id
)
def test_unknown_config_field_is_named(spec: NodeSpec) -> None:
    example = docstring_example(spec)
    config = {**example.decl["config"], "bogus": 1}
    found = problems(spec.type_id, config, tuple(example.inputs))
    assert any("config.bogus" in p for p in found), found


# --- window: event time ------------------------------------------------------------


@pytest.mark.parametrize("fuse", [True, False])
async def test_window_joins_every_pair_within_the_window(fuse: bool) -> None:
    left = [
        {"k": "a", "t": 0, "i": "L0"},
        {"k": "a", "t": 1000, "i": "L1"},
        {"k": "b", "t": 1000, "i": "L2"},
        {"k": "a", "t": 10_000, "i": "L3"},
    ]
    right = [
        {"k": "a", "t": 2000, "i": "R0"},  # within 2 s of L0 (boundary) and L1
        {"k": "b", "t": 4000, "i": "R1"},  # 3 s from L2: too far
        {"k": "a", "t": 9000, "i": "R2"},  # pairs with L3
    ]
    got = await run_nodes(
        join.window_join,
        {"left": left, "right": right},
        {**EVENT_TIME, "window_ms": 2000},
        registry=registry(),
        fuse=fuse,
    )
    assert pairs(got["out"]) == [("L0", "R0"), ("L1", "R0"), ("L3", "R2")]
    assert all(p["key"] == "a" for p in got["out"])


async def test_window_reads_epoch_ms_times() -> None:
    # Epoch-ms times read as they are: window_ms and the lateness are ms too.
    base = 1_704_067_200_000
    left = [{"k": "a", "t": base, "i": "L0"}, {"k": "a", "t": base + 5000, "i": "L1"}]
    right = [
        {"k": "a", "t": base + 1500, "i": "R0"},  # 1.5 s from L0: joins
        {"k": "a", "t": base + 2100, "i": "R1"},  # 2.1 s from L0, 2.9 from L1
        {"k": "a", "t": base + 4000, "i": "R2"},  # late by 1 s: allowed
    ]
    got = await run_nodes(
        join.window_join,
        {"left": left, "right": right},
        {
            **EVENT_TIME,
            "window_ms": 2000,
            "allowed_lateness_ms": 1000,
        },
        registry=registry(),
    )
    assert pairs(got["out"]) == [("L0", "R0"), ("L1", "R2")]
    assert "error" not in got


async def test_window_zero_joins_equal_times_only() -> None:
    got = await run_nodes(
        join.window_join,
        {
            "left": [{"k": 1, "t": 5, "i": 0}, {"k": 1, "t": 6, "i": 1}],
            "right": [{"k": 1, "t": 6, "i": 2}],
        },
        {**EVENT_TIME, "window_ms": 0},
        registry=registry(),
    )
    assert pairs(got["out"]) == [(1, 2)]


async def test_window_keys_compare_as_values() -> None:
    left = [
        {"k": {"a": 1, "b": 2}, "t": 0, "i": "dict"},
        {"k": 1, "t": 0, "i": "int"},
        {"k": "1", "t": 0, "i": "str"},
    ]
    right = [
        {"k": {"b": 2, "a": 1}, "t": 0, "i": "dict"},
        {"k": 1.0, "t": 0, "i": "float"},
        {"k": "1", "t": 0, "i": "str"},
    ]
    got = await run_nodes(
        join.window_join,
        {"left": left, "right": right},
        {**EVENT_TIME, "window_ms": 0},
        registry=registry(),
    )
    assert pairs(got["out"]) == [("dict", "dict"), ("str", "str")]


async def test_window_sends_late_items_to_error_unless_lateness_allows() -> None:
    left = [{"k": "a", "t": 10, "i": 0}, {"k": "a", "t": 7, "i": 1}]
    right = [{"k": "a", "t": 7, "i": 2}]
    config = {**EVENT_TIME, "window_ms": 0}
    got = await run_nodes(
        join.window_join, {"left": left, "right": right}, config, registry=registry()
    )
    assert pairs(got["out"]) == []
    assert got["error"] == [{"k": "a", "t": 7, "i": 1}]
    got = await run_nodes(
        join.window_join,
        {"left": left, "right": right},
        {**config, "allowed_lateness_ms": 3000},
        registry=registry(),
    )
    assert pairs(got["out"]) == [(1, 2)]
    assert "error" not in got


async def test_window_dead_letters_items_whose_key_or_time_fails() -> None:
    wf = (
        Workflow("w")
        .node("l", "source.values", values=[{"k": "a", "t": 0}, {"t": 1}, {"k": "a"}])
        .node("r", "source.values", values=[{"k": "a", "t": "soon"}])
        .node("j", "join.window", {**EVENT_TIME, "window_ms": 10})
        .connect("l -> j.left")
        .connect("r -> j.right")
    )
    result = await run_workflow(wf, registry())
    assert result.ok, result.error
    reasons = sorted(d.reason for d in result.dead_letters)
    assert len(reasons) == 3
    assert reasons[0].startswith("cannot compute left_key: CelError")
    assert reasons[1].startswith("cannot compute left_time: CelError")
    assert reasons[2].startswith("cannot compute right_time: TypeError")
    assert "number of epoch milliseconds, got str" in reasons[2]


async def test_window_emits_unmatched_items_on_their_port() -> None:
    got = await run_nodes(
        join.window_join,
        {
            "left": [{"k": "a", "t": 0, "i": 0}, {"k": "b", "t": 0, "i": 1}],
            "right": [{"k": "a", "t": 1000, "i": 2}, {"k": "a", "t": 50_000, "i": 3}],
        },
        {**EVENT_TIME, "window_ms": 1000, "emit_unmatched": True},
        registry=registry(),
    )
    assert pairs(got["out"]) == [(0, 2)]
    unmatched = sorted(got["unmatched"], key=lambda u: u["item"]["i"])
    assert unmatched == [
        {"side": "left", "key": "b", "item": {"k": "b", "t": 0, "i": 1}},
        {"side": "right", "key": "a", "item": {"k": "a", "t": 50_000, "i": 3}},
    ]


def test_window_unmatched_port_exists_only_when_asked_for() -> None:
    wf = (
        Workflow("w")
        .node("src", "source.values", values=[1])
        .node("j", "join.window", {**EVENT_TIME, "window_ms": 10})
        .node("out", "sink.collect")
        .connect("src -> j.left")
        .connect("src -> j.right")
        .connect("j.unmatched -> out")
    )
    with pytest.raises(WorkflowValidationError, match="no output port 'unmatched'"):
        validate(wf, registry())


def test_window_state_expires_behind_the_watermark() -> None:
    # Two in-order inputs, 1 item per second each, a 5 s window: whatever the
    # length of the stream, each side keeps only about the last 5 s of items.
    ctx = FakeContext()
    state = join._WindowJoin(window_config(window_ms=5000), cast("Any", ctx))
    peak = joined = 0
    for t in range(2000):
        for side in (0, 1):
            item = {"k": t % 3, "t": t * 1000, "i": t}
            joined += len(state.push(side, [item]))
        peak = max(peak, *(len(h) for h in state.heaps))
    # Same key every 3 s: each item meets the other side's at dt 0 and 3.
    assert joined == 2000 + 2 * 1997
    assert peak <= 7
    assert (
        sum(len(b["entries"][0]) + len(b["entries"][1]) for b in state.buckets.values())
        <= 14
    )
    # The state is plain data: a checkpoint can encode it as it is.
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(ctx.state)) == ctx.state
    state.end(0)
    state.end(1)
    assert ctx.state["buckets"] == {}
    assert ctx.state["heaps"] == [[], []]


def test_window_state_waits_for_a_silent_input() -> None:
    # Nothing on the right yet: the left must keep everything (a right item
    # may still come at any time); once the right moves on, the left expires.
    ctx = FakeContext()
    state = join._WindowJoin(
        window_config(window_ms=1000, emit_unmatched=True), cast("Any", ctx)
    )
    state.push(0, [{"k": "a", "t": t * 1000} for t in range(100)])
    assert len(state.heaps[0]) == 100
    state.push(1, [{"k": "b", "t": 50_000}])
    assert len(state.heaps[0]) == 51  # 49..99 can still meet a right item

    def lost(side: str) -> int:
        return sum(u["side"] == side for u in ctx.emitted["unmatched"])

    assert lost("left") == 49
    # The right item is already 49 s behind the left: no left item to come
    # can be within 1 s of it.
    assert lost("right") == 1
    assert state.heaps[1] == []
    state.end(1)  # no right item will ever come: the rest is unmatched now
    assert state.heaps[0] == []
    assert lost("left") == 100


# --- window: processing time --------------------------------------------------------


def test_window_in_processing_time() -> None:
    wf = (
        Workflow("w", mode="stream")
        .node(
            "l",
            "test.at",
            events=[[0.0, {"k": 1, "i": "L0"}], [5.0, {"k": 2, "i": "L1"}]],
        )
        .node(
            "r",
            "test.at",
            events=[
                [0.5, {"k": 1, "i": "R0"}],
                [2.0, {"k": 1, "i": "R1"}],
                [9.0, {"k": 2, "i": "R2"}],
            ],
        )
        .node(
            "j",
            "join.window",
            left_key="x.k",
            right_key="x.k",
            window_ms=1000,
            emit_unmatched=True,
        )
        .node("out", "sink.collect")
        .node("lost", "sink.collect")
        .connect("l -> j.left")
        .connect("r -> j.right")
        .connect("j -> out")
        .connect("j.unmatched -> lost")
    )

    async def main() -> RunResult:
        return await run_workflow(wf, join_registry())

    result = run_virtual(main())
    assert result.ok, result.error
    assert pairs(result.output("out")) == [("L0", "R0")]
    lost = sorted(u["item"]["i"] for u in result.output("lost"))
    assert lost == ["L1", "R1", "R2"]


def test_window_config_problems() -> None:
    ports = ("left", "right")
    base = {"left_key": "x", "right_key": "x"}
    found = problems("join.window", {**base, "window_ms": -1}, ports)
    assert any("window_ms must be a finite number >= 0, got -1.0" in p for p in found)
    found = problems("join.window", {**base, "window_ms": 1, "left_time": "x"}, ports)
    assert any("set both left_time and right_time" in p for p in found)
    found = problems(
        "join.window", {**base, "window_ms": 1, "allowed_lateness_ms": 5}, ports
    )
    assert any("allowed_lateness_ms needs event time" in p for p in found)
    found = problems("join.window", {**base, "window_ms": 1, "right_key": "x."}, ports)
    assert any("config.right_key" in p and "invalid CEL" in p for p in found)
    found = problems("join.window", {"left_key": "x", "right_key": "x"}, ports)
    assert any("config.window_ms" in p for p in found)


# --- window equals the nested-loop join (hypothesis) -------------------------------


@st.composite
def window_cases(draw: st.DrawFn) -> dict[str, Any]:
    keys = st.sampled_from(["a", "b", 1])
    times = st.integers(min_value=0, max_value=30).map(lambda s: s * 1000)
    sides = {}
    for side in ("L", "R"):
        drawn = draw(st.lists(st.tuples(keys, times), max_size=25))
        if draw(st.booleans()):
            drawn.sort(key=lambda kt: kt[1])
        sides[side] = [
            {"k": k, "t": t, "i": f"{side}{n}"} for n, (k, t) in enumerate(drawn)
        ]
    return {
        "left": sides["L"],
        "right": sides["R"],
        "window_ms": draw(st.sampled_from([0, 1000, 2500, 7000])),
        "lateness_ms": draw(st.sampled_from([0, 2000, 100_000])),
        "pauses": [
            draw(st.lists(st.integers(0, 3), min_size=1, max_size=4)) for _ in "LR"
        ],
    }


def on_time(items: list[dict[str, Any]], lateness: float) -> list[dict[str, Any]]:
    """The items that are not late: not behind the latest time before minus lateness."""
    kept, top = [], None
    for x in items:
        if top is None or x["t"] >= top - lateness:
            kept.append(x)
            top = x["t"] if top is None else max(top, x["t"])
    return kept


def key_of(x: dict[str, Any]) -> tuple[str, Any]:
    return (type(x["k"]).__name__, x["k"])


@settings(max_examples=80, deadline=None)
@given(case=window_cases())
def test_window_equals_the_nested_loop_join(case: dict[str, Any]) -> None:
    window, lateness = case["window_ms"], case["lateness_ms"]
    wf = (
        Workflow("w")
        .node("l", "test.drip", values=case["left"], pauses=case["pauses"][0])
        .node("r", "test.drip", values=case["right"], pauses=case["pauses"][1])
        .node(
            "j",
            "join.window",
            {
                **EVENT_TIME,
                "window_ms": case["window_ms"],
                "allowed_lateness_ms": case["lateness_ms"],
                "emit_unmatched": True,
            },
        )
        .connect("l -> j.left")
        .connect("r -> j.right")
    )
    result = run_virtual(run_workflow(wf, registry()))
    assert result.ok, result.error
    left = on_time(case["left"], lateness)
    right = on_time(case["right"], lateness)
    expected = sorted(
        (lx["i"], rx["i"])
        for lx in left
        for rx in right
        if key_of(lx) == key_of(rx) and abs(lx["t"] - rx["t"]) <= window
    )
    assert pairs(result.output("j")) == expected
    late = [x for x in case["left"] + case["right"] if x not in left + right]
    assert sorted(d.item["i"] for d in result.dead_letters) == sorted(
        x["i"] for x in late
    )
    matched = {i for pair in expected for i in pair}
    unmatched = sorted(u["item"]["i"] for u in result.output("j", "unmatched"))
    assert unmatched == sorted(x["i"] for x in left + right if x["i"] not in matched)


# --- lookup ---------------------------------------------------------------------------


def test_lookup_table_updates_apply_to_later_items_only() -> None:
    wf = (
        Workflow("l", mode="stream")
        .node(
            "users",
            "test.at",
            events=[[0.0, {"id": "ann", "v": 1}], [2.0, {"id": "ann", "v": 2}]],
        )
        .node(
            "events",
            "test.at",
            events=[[1.0, {"user": "ann", "n": 1}], [3.0, {"user": "ann", "n": 2}]],
        )
        .node("j", "join.lookup", key="x.user", table_key="x.id")
        .node("out", "sink.collect")
        .connect("events -> j.in")
        .connect("users -> j.table")
        .connect("j -> out")
    )

    async def main() -> RunResult:
        return await run_workflow(wf, join_registry())

    result = run_virtual(main())
    assert result.ok, result.error
    assert result.output("out") == [
        {"item": {"user": "ann", "n": 1}, "match": {"id": "ann", "v": 1}},
        {"item": {"user": "ann", "n": 2}, "match": {"id": "ann", "v": 2}},
    ]


@pytest.mark.parametrize("fuse", [True, False])
async def test_lookup_table_first_reads_the_whole_table(fuse: bool) -> None:
    table = [{"id": i, "name": f"n{i}", "v": 0} for i in range(500)]
    table += [{"id": 7, "name": "seven", "v": 1}]
    items = [{"id": i % 600, "seq": i} for i in range(3000)]
    got = await run_nodes(
        join.lookup_join,
        {"in": items, "table": table},
        {"key": "x.id", "table_key": "x.id", "table_first": True, "merge": True},
        registry=registry(),
        fuse=fuse,
    )
    out = got["out"]
    assert [x["seq"] for x in out] == list(range(3000))
    for x in out:
        if x["id"] == 7:
            assert x["name"] == "seven"
        elif x["id"] < 500:
            assert x["name"] == f"n{x['id']}"
        else:
            assert "name" not in x  # a miss emits the item unchanged


def one_source_lookup(n: int, max_pending: int | None) -> Workflow:
    """One source feeds both inputs; the table's entries come last.

    Small channels on the ``in`` side: they fill long before the table ends.
    """
    values: list[dict[str, Any]] = [{"kind": "click", "user": i % 10} for i in range(n)]
    values += [{"kind": "user", "id": i, "name": f"u{i}"} for i in range(10)]
    lookup: dict[str, Any] = {
        "key": "x.user",
        "table_key": "x.id",
        "table_first": True,
        "merge": True,
    }
    if max_pending is not None:
        lookup["max_pending"] = max_pending
    return (
        Workflow("one-source")
        .node("src", "source.values", values=values)
        .node("clicks", "transform.filter", expr='x.kind == "click"')
        .node("users", "transform.filter", expr='x.kind == "user"')
        .node("j", "join.lookup", lookup)
        .node("out", "sink.collect")
        .connect("src -> clicks", capacity=1)
        .connect("src -> users")
        .connect("clicks -> j.in", capacity=1)
        .connect("users -> j.table")
        .connect("j -> out")
    )


async def test_lookup_table_first_with_both_inputs_from_one_source() -> None:
    # It used to read only the table until it ended: the source, blocked on
    # the full 'in' channel, never sent the table's end (a deadlock).
    async with asyncio.timeout(30):
        result = await run_workflow(one_source_lookup(20_000, None), registry())
    assert result.ok, result.error
    out = result.output("out")
    assert len(out) == 20_000
    assert all(x["name"] == f"u{x['user']}" for x in out)


async def test_lookup_table_first_bounds_the_items_waiting_for_the_table() -> None:
    async with asyncio.timeout(30):
        result = await run_workflow(one_source_lookup(20_000, 5_000), registry())
    assert not result.ok
    assert "more than max_pending=5000 'in' items" in (result.error or "")
    assert "'j'" in (result.error or "")


async def test_lookup_merge_keeps_the_items_own_fields() -> None:
    got = await run_nodes(
        join.lookup_join,
        {"in": [{"k": "a", "v": "mine"}]},
        {"key": "x.k", "table": {"a": {"v": "table", "extra": True}}, "merge": True},
        registry=registry(),
    )
    assert got["out"] == [{"k": "a", "v": "mine", "extra": True}]


async def test_lookup_sends_misses_and_bad_items_to_error() -> None:
    wf = (
        Workflow("l")
        .node("src", "source.values", values=[{"k": "a"}, {"k": "zzz"}, {"no": 1}, 5])
        .node(
            "j",
            "join.lookup",
            key="x.k",
            table={"a": {"hit": 1}},
            miss="drop_to_error",
            merge=True,
        )
        .node("out", "sink.collect")
        .connect("src -> j")
        .connect("j -> out")
    )
    result = await run_workflow(wf, registry())
    assert result.ok, result.error
    assert result.output("out") == [{"k": "a", "hit": 1}]
    letters = {msgspec.json.encode(d.item): d.reason for d in result.dead_letters}
    assert letters[b'{"k":"zzz"}'] == "no table entry for key 'zzz'"
    assert letters[b'{"no":1}'].startswith("cannot compute key: CelError")
    assert letters[b"5"].startswith("cannot compute key:")


async def test_lookup_merge_needs_mappings() -> None:
    wf = (
        Workflow("l")
        .node("src", "source.values", values=[{"k": "a"}])
        .node("j", "join.lookup", key="x.k", table={"a": "just text"}, merge=True)
        .connect("src -> j")
    )
    result = await run_workflow(wf, registry())
    assert result.ok, result.error
    assert result.output("j") == []
    assert "merge: true needs mappings" in result.dead_letters[0].reason


async def test_lookup_dead_letters_table_items_without_a_key() -> None:
    got = await run_nodes(
        join.lookup_join,
        {"in": [{"k": 1}], "table": [{"id": 1, "v": "x"}, {"nope": 0}]},
        {"key": "x.k", "table_key": "x.id", "table_first": True},
        registry=registry(),
    )
    assert got["out"] == [{"item": {"k": 1}, "match": {"id": 1, "v": "x"}}]
    assert got["error"] == [{"nope": 0}]


def test_lookup_config_problems() -> None:
    found = problems("join.lookup", {"key": "x"})
    assert any(
        "set table_key (to read the table input) or a static table" in p for p in found
    )
    found = problems("join.lookup", {"key": "x", "table_key": "x", "table": {}})
    assert any("not both" in p for p in found)
    found = problems("join.lookup", {"key": "x", "table": {}, "table_first": True})
    assert any("table_first needs the table input" in p for p in found)
    found = problems("join.lookup", {"key": "x", "table": {}, "miss": "ignore"})
    assert any("config.miss" in p for p in found)


def test_lookup_table_port_follows_the_config() -> None:
    wf = (
        Workflow("l")
        .node("src", "source.values", values=[1])
        .node("dynamic", "join.lookup", key="x", table_key="x")
        .node("static", "join.lookup", key="x", table={})
        .connect("src -> dynamic.in")
        .connect("src -> static.in")
        .connect("src -> static.table")
    )
    with pytest.raises(WorkflowValidationError) as info:
        validate(wf, registry())
    text = str(info.value)
    assert "node 'dynamic', table: input port 'table' is not connected" in text
    assert "no input port 'table'" in text
