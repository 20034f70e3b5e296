"""``join.interval``: pairs whose right time is in the left item's interval."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest

from flowstream import FlowRuntime, default_registry
from flowstream.core.workflow import Workflow
from flowstream.errors import WorkflowValidationError
from flowstream.nodes.join_interval import interval_join
from flowstream.testing import run_nodes, run_workflow
from tests.local import local

from .test_control import check_example

TIMES: dict[str, Any] = {
    "left_time": "x.t",
    "right_time": "x.t",
    "left_key": "x.k",
    "right_key": "x.k",
}


async def test_docstring_example() -> None:
    await check_example(interval_join)


def events(n: int, seed: int, disorder: int) -> tuple[list[Any], list[Any]]:
    """Items of both sides, each arriving up to ``disorder`` ms out of order."""
    rng = random.Random(seed)
    sides: tuple[list[Any], list[Any]] = ([], [])
    for i in range(n):
        t = i * 10
        item = {"k": rng.randrange(5), "t": t, "i": i, "end": t + rng.randrange(200)}
        sides[rng.randrange(2)].append((t + rng.randrange(disorder + 1), item))
    return tuple([x for _, x in sorted(s, key=lambda p: p[0])] for s in sides)  # type: ignore[return-value]


def nested_loop(
    lefts: list[Any], rights: list[Any], lower: int, upper: int
) -> Counter[Any]:
    return Counter(
        (a["i"], b["i"])
        for a in lefts
        for b in rights
        if a["k"] == b["k"]
        and a["t"] + lower <= b["t"] <= min(a["end"], a["t"] + upper)
    )


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize(
    ("lower", "disorder"), [(0, 0), (-50, 0), (0, 300), (-120, 300)]
)
async def test_pairs_are_the_nested_loop_join(
    seed: int, lower: int, disorder: int
) -> None:
    lefts, rights = events(400, seed, disorder)
    config = {
        **TIMES,
        "lower_ms": lower,
        "upper_ms": 200,
        "left_end": "x.end",
        "allowed_lateness_ms": disorder,
    }
    out = await run_nodes(interval_join, {"left": lefts, "right": rights}, config)
    got = Counter((p["left"]["i"], p["right"]["i"]) for p in out["out"])
    assert out.get("error", []) == []
    assert got == nested_loop(lefts, rights, lower, 200)
    assert got, "the workload must pair something"


async def test_state_holds_only_what_the_other_side_can_still_reach() -> None:
    # In order, with no lateness: a right item is gone once the left input
    # moved past it, a left item once the right input moved past its end.
    n = 5000
    lefts = [{"k": i % 7, "t": i * 10, "end": i * 10 + 50} for i in range(n)]
    rights = [{"k": i % 7, "t": i * 10 + 5} for i in range(n)]
    wf = (
        Workflow("j")
        .node("l", "source.values", values=lefts)
        .node("r", "source.values", values=rights)
        .node("j", "join.interval", **TIMES, upper_ms=1000, left_end="x.end")
        .node("out", "sink.null")
        .connect("l -> j.left")
        .connect("r -> j.right")
        .connect("j -> out")
    )
    executor = local(FlowRuntime(default_registry(entry_points=False)).executor(wf))
    result = await executor.run()
    assert result.ok, result.error
    state = executor.state.for_node("j")
    # Both inputs ended: nothing can pair any more, so nothing is kept.
    assert state["buckets"] == {}
    assert [
        len(q) - h for q, h in zip(state["queues"], state["heads"], strict=True)
    ] == [0, 0]
    # Queues are compacted as they go: never the whole input.
    assert all(len(q) < n for q in state["queues"])


async def test_bad_items_go_to_the_error_port_named() -> None:
    lefts = [
        {"k": 1, "t": 100, "end": 150},
        {"k": 1, "t": 110, "end": 5000},  # longer than upper_ms
        {"k": 1, "t": "soon", "end": 0},
        {"k": 1, "t": 10, "end": 20},  # late: 90 ms behind, lateness 50
    ]
    rights = [{"k": 1, "t": 120}]
    wf = (
        Workflow("j")
        .node("l", "source.values", values=lefts)
        .node("r", "source.values", values=rights)
        .node(
            "j",
            "join.interval",
            **TIMES,
            upper_ms=1000,
            left_end="x.end",
            allowed_lateness_ms=50,
        )
        .node("out", "sink.collect")
        .connect("l -> j.left")
        .connect("r -> j.right")
        .connect("j -> out")
    )
    result = await run_workflow(wf, default_registry(entry_points=False))
    assert result.ok, result.error
    assert [p["left"]["t"] for p in result.output("out")] == [100]
    letters = result.dead_letters
    assert [d.item for d in letters] == lefts[1:]
    assert all(d.node_id == "j" for d in letters)
    assert "left_end 5000 is not within" in letters[0].reason
    assert "left_time must be a number of epoch ms, got str" in letters[1].reason
    assert letters[2].reason.startswith("late: event time 10")


def test_upper_below_lower_is_refused() -> None:
    wf = (
        Workflow("j")
        .node("l", "source.values", values=[])
        .node("r", "source.values", values=[])
        .node("j", "join.interval", **TIMES, lower_ms=10, upper_ms=5)
        .connect("l -> j.left")
        .connect("r -> j.right")
    )
    with pytest.raises(WorkflowValidationError) as info:
        FlowRuntime(default_registry(entry_points=False)).validate(wf)
    (problem,) = info.value.problems
    assert problem.node == "j"
    assert "upper_ms (5) must be >= lower_ms (10)" in problem.message
