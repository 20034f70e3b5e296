"""``transform.aggregate`` (updating results) and changelog input to aggregates."""

from __future__ import annotations

import random
import sqlite3
from typing import TYPE_CHECKING, Any

import pytest

from connectors.sqlite import sqlite_sink
from flowstream import FlowRuntime, NodeRegistry, Workflow, default_registry
from flowstream.errors import WorkflowValidationError
from flowstream.nodes import transform
from flowstream.nodes.transform._shared import _slot, _unslot
from flowstream.testing import assert_emits, run_nodes, run_workflow

if TYPE_CHECKING:
    from pathlib import Path


def registry() -> NodeRegistry:
    reg = default_registry(entry_points=False)
    reg.register(sqlite_sink)
    return reg


def bids(n: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [
        {"auction": rng.randrange(20), "category": rng.randrange(3), "price": p}
        for p in (rng.randrange(1000) for _ in range(n))
    ]


async def test_aggregate_emits_only_changes_with_the_old_value_retracted() -> None:
    await assert_emits(
        transform.aggregate,
        [
            {"k": "a", "n": 1},
            {"k": "a", "n": 0},
            {"k": "a", "n": 2},
            {"k": "b", "n": 5},
        ],
        [
            {"key": "a", "value": 1, "op": "upsert"},
            {"key": "a", "value": 1, "op": "retract"},
            {"key": "a", "value": 2, "op": "upsert"},
            {"key": "b", "value": 5, "op": "upsert"},
        ],
        {"op": "max", "key": "x.k", "value": "x.n"},
    )


async def test_aggregate_without_retract_emits_upserts_only() -> None:
    out = await run_nodes(
        transform.aggregate,
        [{"k": 1, "n": 1}, {"k": 1, "n": 3}],
        {"op": "sum", "key": "x.k", "value": "x.n", "retract": False},
    )
    assert out["out"] == [
        {"key": 1, "value": 1, "op": "upsert"},
        {"key": 1, "value": 4, "op": "upsert"},
    ]


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize(
    "downstream", ["transform.reduce", "transform.aggregate", "transform.scan"]
)
async def test_updating_max_then_changelog_mean_gives_the_final_answer(
    seed: int, downstream: str
) -> None:
    # q4's shape: the max per auction, then the mean of those per category.
    # Fed the changelog of the running maxima, the mean must end where the
    # mean of the final maxima is.
    items = bids(300, seed)
    finals: dict[tuple[int, int], int] = {}
    for b in items:
        k = (b["auction"], b["category"])
        finals[k] = max(finals.get(k, -1), b["price"])
    per_category: dict[int, list[int]] = {}
    for (_, category), price in finals.items():
        per_category.setdefault(category, []).append(price)
    want = {c: sum(v) / len(v) for c, v in per_category.items()}
    wf = (
        Workflow("q4")
        .node("src", "source.values", values=items)
        .node(
            "best",
            "transform.aggregate",
            op="max",
            key="[x.auction, x.category]",
            value="x.price",
        )
        .node(
            "mean",
            downstream,
            op="mean",
            key="x.key[1]",
            value="x.value",
            changelog=True,
        )
        .connect("src -> best")
        .connect("best -> mean")
    )
    result = await run_workflow(wf, registry())
    assert result.status == "completed", result.error
    got: dict[int, float] = {}
    for r in result.output("mean"):
        if r.get("op", "upsert") == "upsert":
            got[r["key"]] = r["value"]
    assert got == pytest.approx(want)


async def test_a_changelog_taking_every_value_back_forgets_the_key() -> None:
    changes = [
        {"key": "a", "value": 2, "op": "upsert"},
        {"key": "b", "value": 4, "op": "upsert"},
        {"key": "a", "value": 2, "op": "retract"},
    ]
    out = await run_nodes(
        transform.aggregate, changes, {"op": "count", "keyed": True, "changelog": True}
    )
    assert out["out"] == [
        {"key": "a", "value": 1, "op": "upsert"},
        {"key": "b", "value": 1, "op": "upsert"},
        {"key": "a", "value": 1, "op": "retract"},
    ]
    final = await run_nodes(
        transform.reduce, changes, {"op": "sum", "keyed": True, "changelog": True}
    )
    assert final["out"] == [{"key": "b", "value": 4}]


async def test_scan_over_a_changelog_takes_retracted_values_back() -> None:
    changes = [
        {"key": "a", "value": 2, "op": "upsert"},
        {"key": "b", "value": 4, "op": "upsert"},
        {"key": "a", "value": 2, "op": "retract"},
        {"key": "a", "value": 5, "op": "upsert"},
        {"key": "b", "value": 4, "op": "retract"},
    ]
    config = {"keyed": True, "changelog": True}
    out = await run_nodes(transform.scan, changes, {"op": "sum", **config})
    # A retract emits the key's new running value; a key all taken back is
    # forgotten (the sum of nothing, 0) and starts afresh.
    assert out["out"] == [
        {"key": "a", "value": 2},
        {"key": "b", "value": 4},
        {"key": "a", "value": 0},
        {"key": "a", "value": 5},
        {"key": "b", "value": 0},
    ]
    counts = await run_nodes(transform.scan, changes, {"op": "count", **config})
    assert [r["value"] for r in counts["out"]] == [1, 1, 0, 1, 0]
    means = await run_nodes(transform.scan, changes, {"op": "mean", **config})
    assert [r["value"] for r in means["out"]] == [2, 4, None, 5, None]


async def test_scan_without_changelog_adds_retract_records_like_any_other() -> None:
    changes = [
        {"key": "a", "value": 2, "op": "upsert"},
        {"key": "a", "value": 2, "op": "retract"},
    ]
    out = await run_nodes(transform.scan, changes, {"op": "count", "keyed": True})
    assert [r["value"] for r in out["out"]] == [1, 2]


async def test_a_retract_of_what_was_never_added_fails_naming_the_node() -> None:
    wf = (
        Workflow("t")
        .node("src", "source.values", values=[{"key": 1, "value": 3, "op": "retract"}])
        .node("n", "transform.reduce", op="sum", keyed=True, changelog=True)
        .connect("src -> n")
    )
    result = await run_workflow(wf, registry())
    assert result.status == "failed"
    assert result.error is not None
    assert "node 'n'" in result.error
    assert "never added" in result.error


def test_changelog_needs_an_op_that_can_take_values_back() -> None:
    wf = (
        Workflow("t")
        .node("src", "source.values", values=[])
        .node("n", "transform.aggregate", op="max", changelog=True)
        .connect("src -> n")
    )
    with pytest.raises(WorkflowValidationError) as info:
        FlowRuntime(registry()).validate(wf)
    (problem,) = info.value.problems
    assert problem.node == "n"
    assert "count, sum, mean" in problem.message


async def test_a_keyed_sqlite_sink_applies_the_upserts(tmp_path: Path) -> None:
    items = bids(200, 9)
    path = tmp_path / "best.db"
    wf = (
        Workflow("best")
        .node("src", "source.values", values=items)
        .node(
            "best",
            "transform.aggregate",
            op="max",
            key="x.auction",
            value="x.price",
            retract=False,
        )
        .node("db", "sqlite.sink", path=str(path), table="best", key="key")
        .connect("src -> best")
        .connect("best -> db")
    )
    result = await run_workflow(wf, registry())
    assert result.status == "completed", result.error
    want: dict[int, int] = {}
    for b in items:
        want[b["auction"]] = max(want.get(b["auction"], -1), b["price"])
    conn = sqlite3.connect(path)
    try:
        got = dict(conn.execute("SELECT key, value FROM best").fetchall())
    finally:
        conn.close()
    assert got == want


def test_list_keys_take_the_fast_slot_and_come_back_equal() -> None:
    for key in ([1000, 10], ["a", 2], [], [True], [1.5], [[1]], ["\x00"]):
        assert _unslot(_slot(key)) == key
    assert _slot([1, 2]) != _slot([1, "2"])
