"""The keyed-aggregate table (``nodes/_aggregates``) behind scan/reduce/aggregate.

``transform.reduce`` folds whole batches (count/sum/min/max inlined, other
ops through their step); an item that fails is set aside alone. Checked
against plain Python on random input with bad items mixed in.
"""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from flowstream import FlowRuntime, Workflow, default_registry
from flowstream.core.workflow import ContinueOnError
from flowstream.nodes._aggregates import KeyTable, key_of, slot_of

if TYPE_CHECKING:
    from collections.abc import Callable

OPS = ["count", "sum", "min", "max", "mean", "first", "last", "collect"]


def reference(op: str, items: list[Any]) -> tuple[list[Any], list[Any]]:
    """(records, bad items) of reduce by ``x.k`` over ``x.n``; no ``k``: bad."""
    groups: dict[str | int, list[Any]] = {}
    bad = []
    for x in items:
        if "k" not in x:
            bad.append(x)
        else:
            groups.setdefault(slot_of(x["k"]), []).append(x["n"])
    fold: Callable[[list[Any]], Any] = {  # type: ignore[assignment]
        "count": len,
        "sum": sum,
        "min": min,
        "max": max,
        "mean": lambda v: sum(v) / len(v),
        "first": lambda v: v[0],
        "last": lambda v: v[-1],
        "collect": list,
    }[op]
    records = [{"key": key_of(s), "value": fold(v)} for s, v in groups.items()]
    return records, bad


def config(op: str) -> dict[str, Any]:
    return {"op": op, "key": "x.k", **({} if op == "count" else {"value": "x.n"})}


item = st.fixed_dictionaries(
    {
        # Composite keys take the list slot path; ints their own.
        "k": st.sampled_from([1, 2, "a", ["b", 3], None]),
        "n": st.integers(-5, 5),
    }
)
# An item without "k": its key cannot be computed, whatever the op.
bad_item = st.fixed_dictionaries({"n": st.integers(-5, 5)})


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(items=st.lists(item | bad_item, max_size=40), op=st.sampled_from(OPS))
def test_reduce_matches_plain_python_and_sets_aside_only_bad_items(
    items: list[dict[str, Any]], op: str
) -> None:
    want, bad = reference(op, items)
    wf = (
        Workflow("reduce")
        .node("src", "source.values", values=items)
        .node("r", "transform.reduce", config(op), error_handling=ContinueOnError())
        .node("out", "sink.collect")
        .connect("src -> r")
        .connect("r -> out")
    )
    result = FlowRuntime(default_registry(entry_points=False)).run(wf)
    assert result.ok, result.error
    assert result.output("out") == want
    assert [d.item for d in result.dead_letters] == bad


@pytest.mark.parametrize("op", ["count", "sum", "max", "collect"])
def test_a_new_key_past_max_keys_fails_in_every_fold(op: str) -> None:
    items = [{"k": i, "n": i} for i in range(5)]
    wf = (
        Workflow("bounded")
        .node("src", "source.values", values=items)
        .node("r", "transform.reduce", {**config(op), "max_keys": 3})
        .connect("src -> r")
    )
    result = FlowRuntime(default_registry(entry_points=False)).run(wf)
    assert result.status == "failed"
    assert "max_keys=3 reached" in str(result.error)
    assert "'r'" in str(result.error)


def test_the_table_evicts_the_least_recently_updated_key() -> None:
    ctx: Any = SimpleNamespace(state={}, logger=logging.getLogger("test"))
    table = KeyTable({}, 2, "evict_oldest", ctx, "values", "key")
    assert table.put("a", 1) is None
    assert table.put("b", 2) is None
    assert table.put("a", 3) is None  # a is now the latest
    assert table.put("c", 4) == ("b", 2)
    assert table.entries == {"a": 3, "c": 4}
    assert ctx.state["evicted"] == 1
