from __future__ import annotations

import asyncio
import math
import re
import time
from collections import defaultdict
from typing import TYPE_CHECKING, Any

import msgspec
import pytest
import yaml
from hypothesis import given, settings, strategies as st

from flowstream import FlowRuntime, default_registry
from flowstream.core.node import NodeSpec, node
from flowstream.core.workflow import ContinueOnError, RetryPolicy, Workflow
from flowstream.errors import WorkflowValidationError
from flowstream.nodes.window import session_window, sliding_window, tumbling_window
from flowstream.runtime.validation import validate
from flowstream.testing import assert_emits, run_nodes, run_virtual, run_workflow

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from flowstream.runtime.registry import NodeRegistry
    from flowstream.runtime.result import RunResult

SPECS = (tumbling_window, sliding_window, session_window)
HERE = __name__  # for "module:attr" references to the reducers below


# --- helpers --------------------------------------------------------------------------


class Script(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    steps: list[tuple[float, Any]]
    """(seconds to wait first, item) pairs."""


@node("test.scripted", config=Script)
async def scripted(*, config: Script) -> AsyncIterator[Any]:
    for delay, item in config.steps:
        await asyncio.sleep(delay)
        yield item


@node("test.stamp")
async def stamp(inp: AsyncIterator[Any]) -> AsyncIterator[list[Any]]:
    """Pair each item with the (virtual) time it arrived."""
    loop = asyncio.get_running_loop()
    async for x in inp:
        yield [loop.time(), x]


class Quiet(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    items: list[Any]


@node("test.then_quiet", config=Quiet)
async def then_quiet(*, config: Quiet) -> AsyncIterator[Any]:
    """Emit the items, then nothing until the run is stopped: a quiet stream."""
    for x in config.items:
        yield x
    await asyncio.Event().wait()


SEEN: list[Any] = []
ARRIVED = asyncio.Event()


@node("test.seen")
async def seen(inp: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """Note each item as it arrives (the run's outputs come only at its end)."""
    async for x in inp:
        SEEN.append(x)
        ARRIVED.set()
        yield x


def registry() -> NodeRegistry:
    reg = default_registry(entry_points=False)
    for spec in (*SPECS, scripted, stamp, then_quiet, seen):
        reg.register(spec, replace=True)
    return reg


def window_flow(
    spec: NodeSpec, config: dict[str, Any], items: list[Any], **node_options: Any
) -> Workflow:
    """values -> window -> out, with the window's error port -> errors."""
    return (
        Workflow("w")
        .node("src", "source.values", values=items)
        .node("w", spec.type_id, config, **node_options)
        .node("out", "sink.collect")
        .node("errors", "sink.collect")
        .connect("src -> w")
        .connect("w -> out")
        .connect("w.error -> errors")
    )


async def run_flow(wf: Workflow) -> RunResult:
    result = await run_workflow(wf, registry())
    assert result.ok, result.error
    return result


def ev(ts: Any, **fields: Any) -> dict[str, Any]:
    return {"ts": ts, **fields}


def concat(acc: str, x: str) -> str:
    return acc + x


def push(acc: list[Any], x: Any) -> list[Any]:
    acc.append(x)  # mutates on purpose: each window must get its own initial
    return acc


def add_lists(a: list[Any], b: list[Any]) -> list[Any]:
    return a + b


def picky(acc: int, x: int) -> int:
    if x < 0:
        msg = f"negative value {x}"
        raise ValueError(msg)
    return acc + x


FLAKY_SEEN: set[int] = set()


def flaky(acc: int, x: int) -> int:
    """Fails the first time it sees each value, then works."""
    if x not in FLAKY_SEEN:
        FLAKY_SEEN.add(x)
        msg = f"first sight of {x}"
        raise RuntimeError(msg)
    return acc + x


# --- docstring examples ---------------------------------------------------------------

EXAMPLE = re.compile(r"config ``(.+?)``;\s*input ``(.+?)``;\s*output ``(.+?)``\.", re.S)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.type_id)
async def test_docstring_example(spec: NodeSpec) -> None:
    found = EXAMPLE.search(spec.fn.__doc__ or "")
    assert found, f"{spec.type_id} has no runnable example"
    config, items, expected = (yaml.safe_load(text) for text in found.groups())
    await assert_emits(spec, items, expected, config)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.type_id)
def test_spec_flags(spec: NodeSpec) -> None:
    assert spec.timed
    assert not spec.needs_end
    assert spec.inputs == ("in",)
    assert "Stream-safe" in (spec.fn.__doc__ or "")


# --- tumbling -------------------------------------------------------------------------

UNORDERED = [ev(100, v=3), ev(400, v=1), ev(200, v=2), ev(1500, v=7)]


@pytest.mark.parametrize(
    ("agg", "first_window"),
    [
        ("count", 3),
        ("sum", 6),
        ("min", 1),
        ("max", 3),
        ("mean", 2.0),
        ("first", 3),  # by timestamp: ts 100
        ("last", 1),  # by timestamp: ts 400
        ("collect", [3, 2, 1]),  # in timestamp order
    ],
)
async def test_tumbling_event_time_aggregates(agg: str, first_window: Any) -> None:
    config: dict[str, Any] = {
        "size_ms": 1000,
        "timestamp": "x.ts",
        "allowed_lateness_ms": 500,
        "op": agg,
    }
    if agg != "count":
        config["value"] = "x.v"
    second = 1 if agg == "count" else [7] if agg == "collect" else 7
    await assert_emits(
        tumbling_window,
        UNORDERED,
        [
            {"start": 0, "end": 1000, "value": first_window, "count": 3},
            {"start": 1000, "end": 2000, "value": second, "count": 1},
        ],
        config,
    )


async def test_tumbling_several_aggregates() -> None:
    config = {
        "size_ms": 1000,
        "timestamp_field": "ts",
        "allowed_lateness_ms": 500,
        "aggs": {
            "n": {"op": "count"},
            "total": {"op": "sum", "value": "x.v"},
            "top": {"op": "max", "value": "x.v * 10"},
            "items": {"op": "collect"},
        },
    }
    out = await run_nodes(tumbling_window, UNORDERED, config)
    assert out["out"][0] == {
        "start": 0,
        "end": 1000,
        "count": 3,
        "value": {
            "n": 3,
            "total": 6,
            "top": 30,
            "items": [ev(100, v=3), ev(200, v=2), ev(400, v=1)],
        },
    }


async def test_tumbling_keyed_emits_in_window_end_order() -> None:
    items = [
        ev(500, k="b"),
        ev(700, k="a"),
        ev(1200, k="a"),
        ev(900, k="b"),  # within the lateness
        ev(2100, k="c"),
    ]
    config = {
        "size_ms": 1000,
        "timestamp_field": "ts",
        "key_field": "k",
        "allowed_lateness_ms": 400,
    }
    await assert_emits(
        tumbling_window,
        items,
        [
            {"key": "b", "start": 0, "end": 1000, "value": 2, "count": 2},
            {"key": "a", "start": 0, "end": 1000, "value": 1, "count": 1},
            {"key": "a", "start": 1000, "end": 2000, "value": 1, "count": 1},
            {"key": "c", "start": 2000, "end": 3000, "value": 1, "count": 1},
        ],
        config,
    )


async def test_keys_of_any_plain_type_stay_distinct() -> None:
    keys: list[Any] = [1, "1", 1500, None, [1, 2], {"a": 1}, True, "\0x", "\0x"]
    items = [ev(100 * i, k=k) for i, k in enumerate(keys)]
    config = {"size_ms": 10_000, "timestamp": "x.ts", "key": "x.k"}
    out = await run_nodes(tumbling_window, items, config)
    assert [(r["key"], r["count"]) for r in out["out"]] == [
        (1, 1),
        ("1", 1),
        (1500, 1),
        (None, 1),
        ([1, 2], 1),
        ({"a": 1}, 1),
        (True, 1),
        ("\0x", 2),
    ]


async def test_custom_reducer_with_initial() -> None:
    config = {
        "size_ms": 1000,
        "timestamp_field": "ts",
        "fn": f"{HERE}:concat",
        "initial": ">",
        "value": "x.s",
    }
    items = [ev(100, s="a"), ev(200, s="b"), ev(1300, s="c")]
    await assert_emits(
        tumbling_window,
        items,
        [
            {"start": 0, "end": 1000, "value": ">ab", "count": 2},
            {"start": 1000, "end": 2000, "value": ">c", "count": 1},
        ],
        config,
    )


async def test_each_window_gets_its_own_copy_of_initial() -> None:
    config = {
        "size_ms": 1000,
        "timestamp_field": "ts",
        "key_field": "k",
        "fn": f"{HERE}:push",
        "initial": [],
        "value": "x.ts",
    }
    items = [ev(100, k="a"), ev(200, k="b"), ev(1300, k="a")]
    out = await run_nodes(tumbling_window, items, config)
    assert [r["value"] for r in out["out"]] == [[100], [200], [1300]]


async def test_late_item_goes_to_error_with_a_reason() -> None:
    items = [ev(200, v=1), ev(1500, v=2), ev(300, v=3), ev(2500, v=4)]
    config = {"size_ms": 1000, "timestamp_field": "ts", "allowed_lateness_ms": 200}
    result = await run_flow(window_flow(tumbling_window, config, items))
    assert [(r["start"], r["count"]) for r in result.output("out")] == [
        (0, 1),
        (1000, 1),
        (2000, 1),
    ]
    [letter] = result.output("errors")
    assert letter["node"] == "w"
    assert letter["item"] == ev(300, v=3)
    reason = letter["reason"]
    assert "timestamp 300 ms" in reason
    assert "watermark 1300 ms" in reason
    assert "window [0, 1000) already fired" in reason
    assert result.stats["w"].dead_letters == 1


async def test_late_items_without_error_connection_are_dead_letters() -> None:
    items = [ev(200), ev(1500), ev(300)]
    out = await run_nodes(
        tumbling_window, items, {"size_ms": 1000, "timestamp": "x.ts"}
    )
    assert out["error"] == [ev(300)]
    assert sum(r["count"] for r in out["out"]) == 2


async def test_late_update_reemits_the_window() -> None:
    items = [ev(200, v=1), ev(1500, v=2), ev(300, v=3), ev(2500, v=4)]
    config = {
        "size_ms": 1000,
        "timestamp_field": "ts",
        "late": "update",
        "op": "sum",
        "value": "x.v",
    }
    await assert_emits(
        tumbling_window,
        items,
        [
            {"start": 0, "end": 1000, "value": 1, "count": 1},
            {"start": 0, "end": 1000, "value": 4, "count": 2, "updated": True},
            {"start": 1000, "end": 2000, "value": 2, "count": 1},
            {"start": 2000, "end": 3000, "value": 4, "count": 1},
        ],
        config,
    )


async def test_late_update_past_retention_goes_to_error() -> None:
    items = [ev(200), ev(5000), ev(300), ev(4500)]
    config = {
        "size_ms": 1000,
        "timestamp_field": "ts",
        "late": "update",
        "retain_ms": 2000,
    }
    result = await run_flow(window_flow(tumbling_window, config, items))
    [letter] = result.output("errors")
    assert letter["item"] == ev(300)
    assert "no longer kept" in letter["reason"]
    assert [r["start"] for r in result.output("out")] == [0, 4000, 5000]
    assert result.output("out")[1] == {
        "start": 4000,
        "end": 5000,
        "value": 1,
        "count": 1,
        "updated": True,
    }


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ({"v": 1}, "cannot read the timestamp (field 'ts'): KeyError"),
        (ev("soon", v=1), "must be an int of epoch milliseconds, got 'soon'"),
        (ev(True, v=1), "got True"),
        (ev(math.nan, v=1), "got nan"),
        (ev(math.inf, v=1), "got inf"),
        # Float seconds are not epoch ms: refused, with a hint, never rounded.
        (ev(0.5, v=1), "got 0.5 (from seconds: int(ts * 1000))"),
        (ev(500, v="x"), "cannot aggregate the value: TypeError"),
        ("not a mapping", "cannot read the timestamp (field 'ts'): TypeError"),
    ],
)
async def test_bad_items_go_to_error(bad: Any, reason: str) -> None:
    items = [ev(100, v=1), bad, ev(200, v=2)]
    config = {"size_ms": 1000, "timestamp_field": "ts", "op": "sum", "value": "x.v"}
    result = await run_flow(window_flow(tumbling_window, config, items))
    assert result.output("out") == [{"start": 0, "end": 1000, "value": 3, "count": 2}]
    [letter] = result.output("errors")
    assert letter["item"] == bad
    assert reason in letter["reason"]


async def test_key_and_value_expressions_that_fail_go_to_error() -> None:
    items = [ev(100, k="a", v=1), ev(200, v=2), ev(300, k="a")]
    config = {
        "size_ms": 1000,
        "timestamp_field": "ts",
        "key": "x.k",
        "op": "sum",
        "value": "x.v",
    }
    result = await run_flow(window_flow(tumbling_window, config, items))
    assert [r["count"] for r in result.output("out")] == [1]
    reasons = [e["reason"] for e in result.output("errors")]
    assert reasons[0].startswith("cannot read the key ('x.k')")
    assert reasons[1].startswith("cannot evaluate the value 'x.v'")


async def test_failing_fn_is_a_node_failure_and_state_survives_the_restart() -> None:
    items = [ev(100, v=1), ev(200, v=-5), ev(300, v=2), ev(1100, v=-1), ev(1200, v=4)]
    config = {
        "size_ms": 1000,
        "timestamp_field": "ts",
        "fn": f"{HERE}:picky",
        "initial": 0,
        "value": "x.v",
    }
    wf = window_flow(tumbling_window, config, items, error_handling=ContinueOnError())
    result = await run_flow(wf)
    assert result.output("out") == [
        {"start": 0, "end": 1000, "value": 3, "count": 2},
        {"start": 1000, "end": 2000, "value": 4, "count": 1},
    ]
    errors = result.output("errors")
    assert [e["item"]["v"] for e in errors] == [-5, -1]
    assert errors[0]["reason"] == "ValueError: negative value -5"
    # Stopping the workflow is the default.
    failed = await run_workflow(window_flow(tumbling_window, config, items), registry())
    assert failed.status == "failed"
    assert "negative value -5" in (failed.error or "")


async def test_retried_item_is_counted_once() -> None:
    FLAKY_SEEN.clear()
    items = [ev(100, v=1), ev(200, v=2), ev(1500, v=3)]
    config = {
        "size_ms": 1000,
        "timestamp_field": "ts",
        "fn": f"{HERE}:flaky",
        "initial": 0,
        "value": "x.v",
    }
    # The executor resets its attempt count only when the node yields, and a
    # window yields rarely: allow one retry per item in all.
    retry = RetryPolicy(max_attempts=len(items) + 1, delay_ms=0)
    wf = window_flow(tumbling_window, config, items, retry=retry)
    result = await run_flow(wf)
    assert result.output("out") == [
        {"start": 0, "end": 1000, "value": 3, "count": 2},
        {"start": 1000, "end": 2000, "value": 3, "count": 1},
    ]
    assert result.output("errors") == []


# --- sliding --------------------------------------------------------------------------


async def test_sliding_keyed_event_time() -> None:
    items = [ev(500, k="a"), ev(1200, k="b"), ev(2700, k="a")]
    config = {
        "size_ms": 2000,
        "slide_ms": 1000,
        "timestamp_field": "ts",
        "key_field": "k",
        "op": "collect",
        "value": "x.ts",
    }

    def w(key: str, start: float, values: list[float]) -> dict[str, Any]:
        end = start + 2000
        return {
            "key": key,
            "start": start,
            "end": end,
            "value": values,
            "count": len(values),
        }

    await assert_emits(
        sliding_window,
        items,
        [
            w("a", -1000, [500]),
            w("a", 0, [500]),
            w("b", 0, [1200]),
            w("b", 1000, [1200]),
            w("a", 1000, [2700]),
            w("a", 2000, [2700]),
        ],
        config,
    )


async def test_sliding_size_not_a_multiple_of_slide() -> None:
    config = {"size_ms": 1500, "slide_ms": 1000, "timestamp_field": "ts"}
    out = await run_nodes(sliding_window, [ev(200), ev(1400), ev(1600)], config)
    assert [(r["start"], r["end"], r["count"]) for r in out["out"]] == [
        (-1000, 500, 1),
        (0, 1500, 2),
        (1000, 2500, 2),
    ]


async def test_sliding_item_late_for_some_windows() -> None:
    items = [ev(500), ev(2200), ev(1500)]
    config = {"size_ms": 2000, "slide_ms": 1000, "timestamp_field": "ts"}
    result = await run_flow(window_flow(sliding_window, config, items))
    # 1500 belongs to [0, 2) (fired when 2200 came) and [1, 3) (still open).
    assert [(r["start"], r["count"]) for r in result.output("out")] == [
        (-1000, 1),
        (0, 1),
        (1000, 2),
        (2000, 1),
    ]
    [letter] = result.output("errors")
    assert letter["item"] == ev(1500)
    assert "window [0, 2000) already fired" in letter["reason"]


# --- session --------------------------------------------------------------------------


async def test_session_bridging_item_merges_sessions() -> None:
    items = [
        ev(0, k="a"),
        ev(2000, k="a"),
        ev(1000, k="a"),
        ev(1200, k="b"),
        ev(9000, k="a"),
    ]
    config = {
        "gap_ms": 1500,
        "timestamp_field": "ts",
        "key_field": "k",
        "allowed_lateness_ms": 1500,
        "op": "collect",
        "value": "x.ts",
    }
    await assert_emits(
        session_window,
        items,
        [
            {"key": "b", "start": 1200, "end": 2700, "value": [1200], "count": 1},
            {
                "key": "a",
                "start": 0,
                "end": 3500,
                "value": [0, 1000, 2000],
                "count": 3,
            },
            {"key": "a", "start": 9000, "end": 10500, "value": [9000], "count": 1},
        ],
        config,
    )


async def test_session_gap_exactly_reached_continues_the_session() -> None:
    # Sessions that touch merge (as Flink's do): an item exactly a gap after
    # the last continues its session, even with no allowed lateness (the
    # session must not fire when the watermark reaches its end, only past it).
    # 100 + 200 > 300 in floats; microseconds make the gap exact.
    config = {"gap_ms": 200, "timestamp_field": "ts"}
    out = await run_nodes(session_window, [ev(100), ev(300), ev(450), ev(700)], config)
    assert [(r["start"], r["end"], r["count"]) for r in out["out"]] == [
        (100, 650, 3),
        (700, 900, 1),
    ]


async def test_session_custom_reducer_with_merge() -> None:
    items = [ev(0, s="a"), ev(2000, s="c"), ev(1000, s="b")]
    config = {
        "gap_ms": 1500,
        "timestamp_field": "ts",
        "allowed_lateness_ms": 2000,
        "fn": f"{HERE}:push",
        "merge": f"{HERE}:add_lists",
        "initial": [],
        "value": "x.s",
    }
    out = await run_nodes(session_window, items, config)
    assert out["out"] == [
        {"start": 0, "end": 3500, "value": ["a", "c", "b"], "count": 3}
    ]


async def test_session_late_drop_and_update() -> None:
    items = [ev(0), ev(500), ev(5000), ev(800), ev(9000)]
    drop = {"gap_ms": 1000, "timestamp_field": "ts"}
    result = await run_flow(window_flow(session_window, drop, items))
    assert [(r["start"], r["end"], r["count"]) for r in result.output("out")] == [
        (0, 1500, 2),
        (5000, 6000, 1),
        (9000, 10000, 1),
    ]
    [letter] = result.output("errors")
    assert letter["item"] == ev(800)
    assert "its session [800, 1800) would already have closed" in letter["reason"]

    update = {**drop, "late": "update"}
    out = await run_nodes(session_window, items, update)
    assert [
        (r["start"], r["end"], r["count"], r.get("updated")) for r in out["out"]
    ] == [
        (0, 1500, 2, None),
        (0, 1800, 3, True),
        (5000, 6000, 1, None),
        (9000, 10000, 1, None),
    ]


async def test_session_reopened_by_a_late_item_is_emitted_as_updated() -> None:
    # 900 joins the fired session [0, 1) and bridges it to the open [1500, 2500).
    items = [ev(0), ev(1500), ev(900)]
    config = {"gap_ms": 1000, "timestamp_field": "ts", "late": "update"}
    out = await run_nodes(session_window, items, config)
    assert out["out"] == [
        {"start": 0, "end": 1000, "value": 1, "count": 1},
        {"start": 0, "end": 2500, "value": 3, "count": 3, "updated": True},
    ]


async def test_late_item_within_retention_opens_a_closed_session() -> None:
    items = [ev(5000), ev(1000), ev(900)]
    config = {"gap_ms": 1000, "timestamp_field": "ts", "late": "update"}
    out = await run_nodes(session_window, items, config)
    assert out["out"] == [
        {"start": 1000, "end": 2000, "value": 1, "count": 1, "updated": True},
        {"start": 900, "end": 2000, "value": 2, "count": 2, "updated": True},
        {"start": 5000, "end": 6000, "value": 1, "count": 1},
    ]


# --- processing time (virtual clock) --------------------------------------------------


def approx(x: float) -> Any:
    return pytest.approx(x, abs=1e-9)


def run_timed(
    steps: list[tuple[float, Any]], window_type: str, config: dict[str, Any]
) -> list[Any]:
    """scripted source -> window -> stamp; returns [arrival time, record] pairs."""
    wf = (
        Workflow("timed")
        .node("src", "test.scripted", steps=steps)
        .node("w", window_type, config)
        .node("out", "test.stamp")
        .connect("src -> w")
        .connect("w -> out")
    )

    async def main() -> list[Any]:
        result = await run_workflow(wf, registry())
        assert result.ok, result.error
        return result.output("out")

    return run_virtual(main())


def test_processing_time_windows_fire_on_time_without_input() -> None:
    steps = [(0.25, "a"), (0.25, "b"), (3600.0, "c")]
    got = run_timed(steps, "window.tumbling", {"size_ms": 1000})
    assert got == [
        [1.0, {"start": 0, "end": 1000, "value": 2, "count": 2}],
        # The last window fires at the end of input, when "c" ended the source.
        [3600.5, {"start": 3_600_000, "end": 3_601_000, "value": 1, "count": 1}],
    ]


def test_processing_time_keyed_tumbling_on_a_timer() -> None:
    steps = [(0.3, {"k": "a"}), (0.3, {"k": "b"}), (0.3, {"k": "a"}), (0.3, {"k": "a"})]
    got = run_timed(steps, "window.tumbling", {"size_ms": 1000, "key_field": "k"})
    # Virtual time adds up 0.3 s steps in floats: compare the stamps loosely.
    assert got == [
        [approx(1.0), {"key": "a", "start": 0, "end": 1000, "value": 2, "count": 2}],
        [approx(1.0), {"key": "b", "start": 0, "end": 1000, "value": 1, "count": 1}],
        [approx(1.2), {"key": "a", "start": 1000, "end": 2000, "value": 1, "count": 1}],
    ]


def test_processing_time_sliding() -> None:
    steps = [(0.5, "a"), (1.0, "b"), (10.0, "c")]
    got = run_timed(steps, "window.sliding", {"size_ms": 2000, "slide_ms": 1000})
    assert [(t, r["start"], r["end"], r["count"]) for t, r in got] == [
        (1.0, -1000, 1000, 1),
        (2.0, 0, 2000, 2),
        (3.0, 1000, 3000, 1),
        (11.5, 10_000, 12_000, 1),
        (11.5, 11_000, 13_000, 1),
    ]


def test_processing_time_sessions_close_after_the_gap() -> None:
    steps = [
        (1.0, {"u": "a"}),
        (0.5, {"u": "b"}),
        (0.5, {"u": "a"}),
        (100.0, {"u": "a"}),
    ]
    config = {"gap_ms": 2000, "key_field": "u"}
    got = run_timed(steps, "window.session", config)
    assert [(t, r["key"], r["start"], r["end"], r["count"]) for t, r in got] == [
        (3.5, "b", 1500, 3500, 1),
        (4.0, "a", 1000, 4000, 2),
        (102.0, "a", 102_000, 104_000, 1),
    ]


# --- validation -----------------------------------------------------------------------

VALIDATION_CASES = [
    # (type, config, text that must name the field)
    ("window.tumbling", {}, "size_ms"),
    ("window.tumbling", {"size_ms": 0}, "size_ms"),
    ("window.tumbling", {"size_ms": -5}, "size_ms"),
    ("window.tumbling", {"size_ms": 0.0001}, "size_ms"),
    ("window.tumbling", {"size_ms": "1s"}, "size_ms"),
    ("window.tumbling", {"size_ms": 1000, "size": 3}, "size"),
    ("window.tumbling", {"size_ms": 1000, "merge": "m:f"}, "merge"),
    ("window.sliding", {"size_ms": 1000}, "slide_ms"),
    ("window.sliding", {"size_ms": 1000, "slide_ms": 2000}, "slide_ms"),
    ("window.sliding", {"size_ms": 100_000, "slide_ms": 1}, "size_ms / slide_ms"),
    ("window.session", {"gap_ms": 0}, "gap_ms"),
    (
        "window.tumbling",
        {"size_ms": 1, "timestamp": "x.t", "timestamp_field": "t"},
        "timestamp_field",
    ),
    ("window.tumbling", {"size_ms": 1, "key": "x.k", "key_field": "k"}, "key_field"),
    ("window.tumbling", {"size_ms": 1, "time": "event"}, "timestamp"),
    (
        "window.tumbling",
        {"size_ms": 1, "time": "processing", "timestamp": "x.t"},
        "timestamp",
    ),
    ("window.tumbling", {"size_ms": 1, "time": "sundial"}, "time"),
    (
        "window.tumbling",
        {"size_ms": 1, "allowed_lateness_ms": 5},
        "allowed_lateness_ms",
    ),
    (
        "window.tumbling",
        {"size_ms": 1, "timestamp": "x.t", "allowed_lateness_ms": -1},
        "allowed_lateness_ms",
    ),
    ("window.tumbling", {"size_ms": 1, "late": "update"}, "late"),
    ("window.tumbling", {"size_ms": 1, "timestamp": "x.t", "late": "ignore"}, "late"),
    (
        "window.tumbling",
        {"size_ms": 1, "timestamp": "x.t", "retain_ms": 5},
        "retain_ms",
    ),
    ("window.tumbling", {"size_ms": 1, "op": "median"}, "op"),
    ("window.tumbling", {"size_ms": 1, "value": "x.v"}, "value"),
    (
        "window.tumbling",
        {"size_ms": 1, "op": "sum", "fn": f"{HERE}:concat", "initial": ""},
        "fn",
    ),
    ("window.tumbling", {"size_ms": 1, "fn": f"{HERE}:concat"}, "initial"),
    ("window.tumbling", {"size_ms": 1, "initial": 0}, "initial"),
    (
        "window.tumbling",
        {"size_ms": 1, "fn": f"{HERE}:nothing_here", "initial": 0},
        "fn",
    ),
    ("window.tumbling", {"size_ms": 1, "timestamp": "x.ts +"}, "timestamp"),
    ("window.tumbling", {"size_ms": 1, "key": "x..k"}, "key"),
    ("window.tumbling", {"size_ms": 1, "op": "sum", "value": "(x"}, "value"),
    ("window.tumbling", {"size_ms": 1, "aggs": {}}, "aggs"),
    (
        "window.tumbling",
        {"size_ms": 1, "aggs": {"t": {"op": "sum"}}, "value": "x"},
        "aggs",
    ),
    (
        "window.tumbling",
        {"size_ms": 1, "aggs": {"t": {"op": "sum", "value": "x +"}}},
        "aggs.t.value",
    ),
    (
        "window.tumbling",
        {"size_ms": 1, "aggs": {"n": {"op": "count", "value": "x"}}},
        "aggs.n",
    ),
    ("window.tumbling", {"size_ms": 1, "aggs": {"t": {"op": "avg"}}}, "aggs"),
    ("window.session", {"gap_ms": 1, "fn": f"{HERE}:concat", "initial": ""}, "merge"),
    ("window.session", {"gap_ms": 1, "merge": f"{HERE}:add_lists"}, "merge"),
    ("window.tumbling", {"size_ms": 1.5}, "size_ms"),
    ("window.sliding", {"size_ms": 10, "slide_ms": 2.5}, "slide_ms"),
    ("window.session", {"gap_ms": 0.5}, "gap_ms"),
    ("window.tumbling", {"size_ms": 1, "idle_timeout_ms": 100}, "idle_timeout_ms"),
    (
        "window.tumbling",
        {"size_ms": 1, "timestamp": "x.t", "idle_timeout_ms": 0},
        "idle_timeout_ms",
    ),
    (
        "window.tumbling",
        {"size_ms": 1, "timestamp": "x.t", "idle_timeout_ms": 2.5},
        "idle_timeout_ms",
    ),
]


@pytest.mark.parametrize(("type_id", "config", "field"), VALIDATION_CASES)
def test_bad_config_names_node_and_field(
    type_id: str, config: dict[str, Any], field: str
) -> None:
    wf = (
        Workflow("bad")
        .node("src", "source.values", values=[])
        .node("win", type_id, config)
        .connect("src -> win")
    )
    with pytest.raises(WorkflowValidationError) as info:
        validate(wf, registry())
    [problem] = info.value.problems
    assert problem.node == "win"
    assert problem.field is not None
    assert problem.field.startswith("config")
    assert field in f"{problem.field} {problem.message}", str(problem)


def test_several_config_problems_are_reported_together() -> None:
    config = {"size_ms": 1, "key": "x.k", "key_field": "k", "initial": 0}
    wf = (
        Workflow("bad")
        .node("src", "source.values", values=[])
        .node("win", "window.tumbling", config)
    )
    wf.connect("src -> win")
    with pytest.raises(WorkflowValidationError) as info:
        validate(wf, registry())
    message = info.value.problems[0].message
    assert "'key' or 'key_field'" in message
    assert "'initial' applies only with 'fn'" in message


# --- properties -----------------------------------------------------------------------

KEYS = ("a", "b", "c")


@st.composite
def timed_items(draw: st.DrawFn, max_ms: int = 6000) -> list[dict[str, Any]]:
    """Items with unique ids, millisecond event times and a key, by id."""
    times = draw(st.lists(st.integers(0, max_ms), max_size=40))
    keys = draw(
        st.lists(st.sampled_from(KEYS), min_size=len(times), max_size=len(times))
    )
    return [
        {"id": i, "ms": ms, "ts": ms, "k": k}
        for i, (ms, k) in enumerate(zip(times, keys, strict=True))
    ]


@st.composite
def within_lateness(
    draw: st.DrawFn, items: list[dict[str, Any]], lateness: int
) -> list[dict[str, Any]]:
    """An arrival order where no item is more than ``lateness`` ms behind the max."""
    delays = draw(
        st.lists(st.integers(0, lateness), min_size=len(items), max_size=len(items))
    )
    ranks = draw(st.permutations(range(len(items))))
    order = sorted(
        range(len(items)), key=lambda i: (items[i]["ms"] + delays[i], ranks[i])
    )
    return [items[i] for i in order]


def fixed_reference(
    items: list[dict[str, Any]], size: int, slide: int, keyed: bool
) -> dict[tuple[Any, float, float], list[int]]:
    """Each window (key, start, end) with the ids of its items, computed directly."""
    windows: dict[tuple[Any, float, float], list[int]] = defaultdict(list)
    for it in items:
        ms = it["ms"]
        for n in range((ms - size) // slide + 1, ms // slide + 1):
            assert n * slide <= ms < n * slide + size
            windows[
                (
                    it["k"] if keyed else None,
                    n * slide,
                    n * slide + size,
                )
            ].append(it["id"])
    return {k: sorted(v) for k, v in windows.items()}


def emitted(records: list[dict[str, Any]]) -> dict[tuple[Any, float, float], list[int]]:
    """Each emitted window's ids; a window emitted twice fails."""
    out: dict[tuple[Any, float, float], list[int]] = {}
    for r in records:
        ident = (r.get("key"), r["start"], r["end"])
        assert ident not in out, f"window emitted twice: {ident}"
        assert r["count"] == len(r["value"])
        out[ident] = sorted(r["value"])
    return out


def run_window(
    spec: NodeSpec, items: list[Any], config: dict[str, Any]
) -> dict[str, list[Any]]:
    return run_virtual(run_nodes(spec, items, config))


def assert_in_end_order(records: list[dict[str, Any]]) -> None:
    ends = [r["end"] for r in records if not r.get("updated")]
    assert ends == sorted(ends)


fixed_shapes = st.sampled_from(
    [(1000, 1000), (250, 250), (1000, 500), (1000, 300), (700, 700), (900, 200)]
)


@settings(max_examples=120, deadline=None)
@given(st.data(), timed_items(), fixed_shapes, st.integers(0, 3000), st.booleans())
def test_fixed_windows_match_a_direct_computation_for_any_order_within_lateness(
    data: st.DataObject,
    items: list[dict[str, Any]],
    shape: tuple[int, int],
    lateness: int,
    keyed: bool,
) -> None:
    size, slide = shape
    arrival = data.draw(within_lateness(items, lateness))
    spec = tumbling_window if size == slide else sliding_window
    config: dict[str, Any] = {
        "size_ms": size,
        "timestamp_field": "ts",
        "allowed_lateness_ms": lateness,
        "op": "collect",
        "value": "x.id",
    }
    if spec is sliding_window:
        config["slide_ms"] = slide
    if keyed:
        config["key_field"] = "k"
    out = run_window(spec, arrival, config)
    assert not out.get("error")
    assert emitted(out["out"]) == fixed_reference(items, size, slide, keyed)
    assert_in_end_order(out["out"])


@settings(max_examples=120, deadline=None)
@given(st.data(), timed_items(), fixed_shapes, st.integers(0, 1000), st.booleans())
def test_late_items_are_all_accounted_for(
    data: st.DataObject,
    items: list[dict[str, Any]],
    shape: tuple[int, int],
    lateness: int,
    keyed: bool,
) -> None:
    size, slide = shape
    arrival = data.draw(st.permutations(items))
    spec = tumbling_window if size == slide else sliding_window
    config: dict[str, Any] = {
        "size_ms": size,
        "timestamp_field": "ts",
        "allowed_lateness_ms": lateness,
        "op": "collect",
        "value": "x.id",
    }
    if spec is sliding_window:
        config["slide_ms"] = slide
    if keyed:
        config["key_field"] = "k"
    out = run_window(spec, arrival, config)
    got = emitted(out["out"])
    want = fixed_reference(items, size, slide, keyed)
    late = [e["id"] for e in out.get("error", [])]
    assert len(late) == len(set(late))
    for ident, ids in got.items():
        assert set(ids) <= set(want[ident])  # nothing invented or misplaced
    placed: dict[int, int] = defaultdict(int)
    for ids in got.values():
        for i in ids:
            placed[i] += 1
    for it in items:
        i, ms = it["id"], it["ms"]
        windows = len(range((ms - size) // slide + 1, ms // slide + 1))
        if i in late:
            assert placed[i] < windows  # it missed a window, and says so
        else:
            assert placed[i] == windows  # in every one of its windows
    if spec is tumbling_window:
        assert len(late) + sum(r["count"] for r in out["out"]) == len(items)
    assert_in_end_order(out["out"])


@settings(max_examples=80, deadline=None)
@given(st.data(), timed_items(), fixed_shapes)
def test_late_update_converges_to_the_direct_computation(
    data: st.DataObject, items: list[dict[str, Any]], shape: tuple[int, int]
) -> None:
    size, slide = shape
    arrival = data.draw(st.permutations(items))
    spec = tumbling_window if size == slide else sliding_window
    config: dict[str, Any] = {
        "size_ms": size,
        "timestamp_field": "ts",
        "key_field": "k",
        "late": "update",
        "op": "collect",
        "value": "x.id",
    }
    if spec is sliding_window:
        config["slide_ms"] = slide
    out = run_window(spec, arrival, config)
    assert not out.get("error")
    final = {(r["key"], r["start"], r["end"]): sorted(r["value"]) for r in out["out"]}
    assert final == fixed_reference(items, size, slide, keyed=True)


def sessions_reference(
    items: list[dict[str, Any]], gap_ms: int
) -> dict[tuple[Any, float, float], list[int]]:
    by_key: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for it in items:
        by_key[it["k"]].append(it)
    out: dict[tuple[Any, float, float], list[int]] = {}
    for key, group in by_key.items():
        group.sort(key=lambda it: it["ms"])
        current = [group[0]]
        for it in group[1:]:
            if it["ms"] > current[-1]["ms"] + gap_ms:
                out[(key, current[0]["ms"], current[-1]["ms"] + gap_ms)] = sorted(
                    c["id"] for c in current
                )
                current = []
            current.append(it)
        out[(key, current[0]["ms"], current[-1]["ms"] + gap_ms)] = sorted(
            c["id"] for c in current
        )
    return out


@settings(max_examples=120, deadline=None)
@given(
    st.data(),
    timed_items(),
    st.sampled_from([100, 300, 500, 1000]),
    st.integers(0, 3000),
)
def test_sessions_match_a_reference_sessionization(
    data: st.DataObject, items: list[dict[str, Any]], gap: int, lateness: int
) -> None:
    arrival = data.draw(within_lateness(items, lateness))
    config = {
        "gap_ms": gap,
        "timestamp_field": "ts",
        "key_field": "k",
        "allowed_lateness_ms": lateness,
        "op": "collect",
        "value": "x.id",
    }
    out = run_window(session_window, arrival, config)
    assert not out.get("error")
    assert emitted(out["out"]) == sessions_reference(items, gap)
    assert_in_end_order(out["out"])


@settings(max_examples=80, deadline=None)
@given(st.data(), timed_items(), st.sampled_from([100, 500, 1000]), st.integers(0, 500))
def test_sessions_account_for_every_item_in_any_order(
    data: st.DataObject, items: list[dict[str, Any]], gap: int, lateness: int
) -> None:
    arrival = data.draw(st.permutations(items))
    config = {
        "gap_ms": gap,
        "timestamp_field": "ts",
        "key_field": "k",
        "allowed_lateness_ms": lateness,
        "op": "collect",
        "value": "x.id",
    }
    out = run_window(session_window, arrival, config)
    placed = [i for r in out["out"] for i in r["value"]]
    late = [e["id"] for e in out.get("error", [])]
    assert sorted(placed + late) == [it["id"] for it in items]
    assert_in_end_order(out["out"])


@settings(max_examples=80, deadline=None)
@given(st.data(), timed_items(), st.sampled_from([100, 500, 1000]))
def test_session_updates_converge_to_the_reference_in_any_order(
    data: st.DataObject, items: list[dict[str, Any]], gap: int
) -> None:
    arrival = data.draw(st.permutations(items))
    config = {
        "gap_ms": gap,
        "timestamp_field": "ts",
        "key_field": "k",
        "late": "update",
        "op": "collect",
        "value": "x.id",
    }
    out = run_window(session_window, arrival, config)
    assert not out.get("error")
    # Each emission replaces the emitted sessions of its key that it covers.
    current: dict[tuple[Any, float, float], list[int]] = {}
    for r in out["out"]:
        for ident in [i for i in current if i[0] == r["key"]]:
            if r["start"] <= ident[1] and ident[2] <= r["end"]:
                del current[ident]
        current[(r["key"], r["start"], r["end"])] = sorted(r["value"])
    assert current == sessions_reference(items, gap)


# --- state: plain values that survive a checkpoint ------------------------------------


class Interrupted(Exception):
    pass


class FakeContext:
    """The NodeContext a node sees, with a given state and collected dead letters."""

    run_id = "run"
    node_id = "w"
    node_type = "window"

    def __init__(self, state: dict[str, Any]) -> None:
        self.state = state
        self.letters: list[Any] = []

    def emit(self, port: str, item: Any) -> None:
        raise AssertionError(port)

    def dead_letter(self, item: Any, reason: str) -> None:
        self.letters.append(item)

    def event(self, name: str, data: Any = None) -> None:
        pass


async def drive_raw(
    spec: NodeSpec, config: Any, items: list[Any], ctx: FakeContext, *, end: bool
) -> list[Any]:
    """Run the node function on items; without ``end``, stop as if interrupted."""

    async def feed() -> AsyncIterator[Any]:
        for x in items:
            yield x
        if not end:
            raise Interrupted

    out: list[Any] = []
    try:
        async for record in spec.fn(feed(), config=config, ctx=ctx):
            out.append(record)
    except Interrupted:
        pass
    return out


WINDOW_CONFIGS = [
    (tumbling_window, {"size_ms": 700}),
    (sliding_window, {"size_ms": 900, "slide_ms": 200}),
    (session_window, {"gap_ms": 400}),
]


@settings(max_examples=60, deadline=None)
@given(
    st.data(),
    timed_items(max_ms=3000),
    st.sampled_from(WINDOW_CONFIGS),
    st.sampled_from(["drop", "update"]),
    st.sampled_from([msgspec.msgpack, msgspec.json]),
)
def test_state_round_trips_through_a_codec_mid_stream(
    data: st.DataObject,
    items: list[dict[str, Any]],
    window: tuple[NodeSpec, dict[str, Any]],
    late: str,
    codec: Any,
) -> None:
    spec, shape = window
    arrival = data.draw(within_lateness(items, 800))
    split = data.draw(st.integers(0, len(arrival)))
    raw = {
        **shape,
        "timestamp_field": "ts",
        "key": "x.k",
        "allowed_lateness_ms": 300,
        "late": late,
        "aggs": {"ids": {"op": "collect", "value": "x.id"}, "last": {"op": "last"}},
    }
    assert spec.config_type is not None
    config = msgspec.convert(raw, spec.config_type)

    async def main() -> tuple[list[Any], list[Any], list[Any], list[Any]]:
        whole_ctx = FakeContext({})
        whole = await drive_raw(spec, config, arrival, whole_ctx, end=True)
        first_ctx = FakeContext({})
        first = await drive_raw(spec, config, arrival[:split], first_ctx, end=False)
        state = codec.decode(codec.encode(first_ctx.state))
        second_ctx = FakeContext(state)
        second = await drive_raw(spec, config, arrival[split:], second_ctx, end=True)
        letters = first_ctx.letters + second_ctx.letters
        return whole, first + second, whole_ctx.letters, letters

    whole, resumed, whole_letters, letters = run_virtual(main())
    assert resumed == whole
    assert letters == whole_letters


# --- epoch milliseconds ---------------------------------------------------------------


async def test_reads_epoch_ms_and_emits_int_ms_bounds() -> None:
    base = 1_704_067_200_000
    items = [{"t": base + 1}, {"t": base + 9_999}, {"t": base + 10_000}]
    config = {"size_ms": 10_000, "timestamp_field": "t"}
    out = await run_nodes(tumbling_window, items, config)
    got = [(r["start"], r["end"], r["count"]) for r in out["out"]]
    assert got == [(base, base + 10_000, 2), (base + 10_000, base + 20_000, 1)]
    assert all(type(r["start"]) is int and type(r["end"]) is int for r in out["out"])


async def test_sessions_end_a_gap_after_the_last_item_in_epoch_ms() -> None:
    base = 1_704_067_203_597  # not a multiple of anything: no float rounding
    items = [{"t": base}, {"t": base + 10_000}, {"t": base + 20_001}]
    config = {"gap_ms": 10_000, "timestamp_field": "t"}
    out = await run_nodes(session_window, items, config)
    assert [(r["start"], r["end"], r["count"]) for r in out["out"]] == [
        (base, base + 20_000, 2),
        (base + 20_001, base + 30_001, 1),
    ]


# --- op: max_rows (arg-max, all ties) -------------------------------------------------


async def test_max_rows_keeps_every_item_at_the_window_maximum() -> None:
    items = [
        {"t": 0, "id": "a", "p": 5},
        {"t": 1, "id": "b", "p": 9},
        {"t": 2, "id": "c", "p": 9},
        {"t": 3, "id": "d", "p": 1},
        {"t": 12, "id": "e", "p": 2},
    ]
    config = {
        "size_ms": 10,
        "timestamp_field": "t",
        "op": "max_rows",
        "value": "x.p",
    }
    out = await run_nodes(tumbling_window, items, config)
    assert [([r["id"] for r in w["value"]], w["count"]) for w in out["out"]] == [
        (["b", "c"], 4),
        (["e"], 1),
    ]


async def test_max_rows_in_sliding_windows_and_merged_sessions() -> None:
    items = [{"t": 0, "p": 3}, {"t": 4, "p": 3}, {"t": 2, "p": 1}]
    sliding = {"size_ms": 4, "slide_ms": 2, "timestamp_field": "t"}
    out = await run_nodes(
        sliding_window,
        items,
        {**sliding, "op": "max_rows", "value": "x.p", "allowed_lateness_ms": 10},
    )
    got = [(w["start"], [r["t"] for r in w["value"]]) for w in out["out"]]
    assert got == [(-2, [0]), (0, [0]), (2, [4]), (4, [4])]
    # The item at 2 bridges the sessions of 0 and 4: their ties merge.
    session = {"gap_ms": 2, "timestamp_field": "t"}
    out = await run_nodes(
        session_window,
        items,
        {**session, "op": "max_rows", "value": "x.p", "allowed_lateness_ms": 10},
    )
    assert [[r["t"] for r in w["value"]] for w in out["out"]] == [[0, 4]]


async def test_max_rows_sends_incomparable_values_to_error() -> None:
    items = [{"t": 0, "p": 3}, {"t": 1, "p": "x"}, {"t": 2, "p": 4}]
    config = {"size_ms": 10, "timestamp_field": "t"}
    out = await run_nodes(
        tumbling_window, items, {**config, "op": "max_rows", "value": "x.p"}
    )
    assert [[r["p"] for r in w["value"]] for w in out["out"]] == [[4]]
    assert out["error"] == [{"t": 1, "p": "x"}]


async def test_whole_float_timestamps_and_durations_are_taken_as_ints() -> None:
    # JSON decoders may give 1.7e12 as a float: a whole number is accepted.
    items = [{"t": 1_000.0}, {"t": 1_999}, {"t": 2_000.0}]
    config = {"size_ms": 1e3, "timestamp_field": "t", "allowed_lateness_ms": 0.0}
    out = await run_nodes(tumbling_window, items, config)
    assert out["out"] == [
        {"start": 1000, "end": 2000, "value": 2, "count": 2},
        {"start": 2000, "end": 3000, "value": 1, "count": 1},
    ]
    assert all(type(r["start"]) is int and type(r["end"]) is int for r in out["out"])


async def test_processing_time_bounds_are_epoch_ms_of_the_wall_clock() -> None:
    # On a real loop, processing time reads as the wall clock in epoch ms.
    before = time.time_ns() // 1_000_000
    out = await run_nodes(tumbling_window, ["a", "b"], {"size_ms": 60_000})
    after = time.time_ns() // 1_000_000
    assert out["out"]  # two windows if the run crossed a minute's end
    for record in out["out"]:
        assert type(record["start"]) is int
        assert record["end"] - record["start"] == 60_000
        assert record["start"] % 60_000 == 0
        assert before - 60_000 < record["start"] <= after
    assert sum(r["count"] for r in out["out"]) == 2


# --- idle inputs: idle_timeout_ms -----------------------------------------------------


def run_idle(
    steps: list[tuple[float, Any]], window_type: str, config: dict[str, Any]
) -> tuple[list[Any], list[Any]]:
    """scripted source -> window -> stamp, error -> errors; virtual time.

    Returns the [arrival time, record] pairs and the late items.
    """
    wf = (
        Workflow("idle")
        .node("src", "test.scripted", steps=steps)
        .node("w", window_type, config)
        .node("out", "test.stamp")
        .node("errors", "sink.collect")
        .connect("src -> w")
        .connect("w -> out")
        .connect("w.error -> errors")
    )

    async def main() -> tuple[list[Any], list[Any]]:
        result = await run_workflow(wf, registry())
        assert result.ok, result.error
        return result.output("out"), result.output("errors")

    return run_virtual(main())


# Two items close together, an hour of quiet, then one more (older) item.
QUIET = [(0.0, ev(100)), (0.5, ev(1500)), (3600.0, ev(1200))]


def test_without_idle_timeout_a_quiet_input_holds_its_last_window() -> None:
    config = {"size_ms": 1000, "timestamp_field": "ts"}
    got, late = run_idle(QUIET, "window.tumbling", config)
    assert [(t, r["start"], r["count"]) for t, r in got] == [
        (0.5, 0, 1),  # the item at 1500 moved the watermark past 1000
        (3600.5, 1000, 2),  # only the end of input closes [1000, 2000)
    ]
    assert late == []


def test_idle_timeout_moves_the_watermark_with_the_clock() -> None:
    config = {"size_ms": 1000, "timestamp_field": "ts", "idle_timeout_ms": 300}
    got, late = run_idle(QUIET, "window.tumbling", config)
    # At 0.5 s the watermark is 1500. Quiet for 300 ms (idle), it follows the
    # clock from there: it reaches 2000, the end of [1000, 2000), at 1.0 s.
    assert [(t, r["start"], r["count"]) for t, r in got] == [
        (0.5, 0, 1),
        (1.0, 1000, 1),
    ]
    # The watermark went on moving: the item at 1200 came too late, and says so.
    [letter] = late
    assert letter["item"] == ev(1200)
    assert "behind the watermark 3601500 ms" in letter["reason"]
    assert "while the input was idle" in letter["reason"]
    assert "window [1000, 2000) already fired" in letter["reason"]


def test_idle_timeout_waits_for_the_timeout_before_moving_the_watermark() -> None:
    # The window's end is 1 ms ahead of the watermark, but nothing moves
    # before the input has been quiet for idle_timeout_ms.
    steps = [(0.0, ev(999)), (10.0, ev(20_000))]
    config = {"size_ms": 1000, "timestamp_field": "ts", "idle_timeout_ms": 2000}
    got, _ = run_idle(steps, "window.tumbling", config)
    assert [(t, r["start"]) for t, r in got] == [(2.0, 0), (10.0, 20_000)]


def test_idle_timeout_allows_for_the_lateness() -> None:
    # The watermark trails the largest time by the allowed lateness, idle or not.
    steps = [(0.0, ev(500)), (10.0, ev(9000))]
    config = {
        "size_ms": 1000,
        "timestamp_field": "ts",
        "allowed_lateness_ms": 2000,
        "idle_timeout_ms": 100,
    }
    got, _ = run_idle(steps, "window.tumbling", config)
    # 500 + elapsed - 2000 >= 1000 when elapsed = 2.5 s.
    assert [(t, r["start"]) for t, r in got] == [(2.5, 0), (10.0, 9000)]


def test_idle_timeout_closes_sessions_of_a_quiet_key() -> None:
    steps = [(0.0, ev(0, k="a")), (0.2, ev(200, k="b")), (60.0, ev(60_000, k="a"))]
    config = {
        "gap_ms": 1000,
        "timestamp_field": "ts",
        "key_field": "k",
        "idle_timeout_ms": 500,
    }
    got, _ = run_idle(steps, "window.session", config)
    # A session closes once the watermark is past its end (1 ms past).
    assert [(approx(t), r["key"], r["start"], r["end"]) for t, r in got] == [
        (approx(1.001), "a", 0, 1000),
        (approx(1.201), "b", 200, 1200),
        (approx(60.2), "a", 60_000, 61_000),  # the end of input
    ]


def test_idle_timeout_applies_to_sliding_windows() -> None:
    steps = [(0.0, ev(0)), (30.0, ev(30_000))]
    config = {
        "size_ms": 2000,
        "slide_ms": 1000,
        "timestamp_field": "ts",
        "idle_timeout_ms": 100,
    }
    got, _ = run_idle(steps, "window.sliding", config)
    assert [(t, r["start"]) for t, r in got][:2] == [(1.0, -1000), (2.0, 0)]


async def test_a_quiet_stream_run_emits_its_last_window_without_being_stopped() -> None:
    # A real stream run on the real clock: two items, then silence. The last
    # window reaches the sink about 0.5 s later (the watermark, 1500 after the
    # items, follows the clock to 2000), while the run is still going.
    SEEN.clear()
    ARRIVED.clear()
    config = {"size_ms": 1000, "timestamp_field": "ts", "idle_timeout_ms": 100}
    wf = (
        Workflow("quiet", mode="stream")
        .node("src", "test.then_quiet", items=[ev(1200), ev(1500)])
        .node("w", "window.tumbling", config)
        .node("out", "test.seen")
        .connect("src -> w")
        .connect("w -> out")
    )
    executor = FlowRuntime(registry()).executor(wf)
    run = asyncio.ensure_future(executor.run())
    arrived = asyncio.ensure_future(ARRIVED.wait())
    # Generous: the machine may be busy.
    await asyncio.wait({run, arrived}, timeout=30, return_when="FIRST_COMPLETED")
    arrived.cancel()
    before_stop = list(SEEN)
    executor.stop()
    result = await run
    assert result.ok, result.error
    assert before_stop == [{"start": 1000, "end": 2000, "value": 2, "count": 2}]
    assert SEEN == before_stop  # nothing was left for the stop to flush


@settings(max_examples=30, deadline=None)
@given(
    timed_items(max_ms=3000),
    st.lists(st.integers(0, 99), min_size=40, max_size=40),
    st.sampled_from(
        [(tumbling_window, {"size_ms": 500}), (session_window, {"gap_ms": 300})]
    ),
)
def test_an_input_never_quiet_for_the_timeout_gives_the_same_windows(
    items: list[dict[str, Any]],
    pauses_ms: list[int],
    window: tuple[NodeSpec, dict[str, Any]],
) -> None:
    # Pauses under idle_timeout_ms: the clock never moves the watermark.
    spec, shape = window
    steps = [(p / 1000, x) for p, x in zip(pauses_ms, items, strict=False)]
    config = {**shape, "timestamp_field": "ts", "key_field": "k", "op": "collect"}
    plain, plain_late = run_idle(steps, spec.type_id, config)
    idle, idle_late = run_idle(steps, spec.type_id, {**config, "idle_timeout_ms": 100})
    assert [r for _, r in idle] == [r for _, r in plain]
    assert [e["item"] for e in idle_late] == [e["item"] for e in plain_late]
