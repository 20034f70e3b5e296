"""``top``: the n best items of each window, against a plain Python reference."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from flowstream import FlowRuntime, Workflow, default_registry
from flowstream.errors import WorkflowValidationError


def run(node_type: str, config: dict[str, Any], items: list[Any]) -> Any:
    wf = (
        Workflow("top")
        .node("src", "source.values", values=items)
        .node("w", node_type, config)
        .node("out", "sink.collect")
        .connect("src -> w")
        .connect("w -> out")
    )
    return FlowRuntime(default_registry(entry_points=False)).run(wf)


def reference(
    items: list[dict[str, Any]], size: int, slide: int, n: int, desc: bool
) -> list[dict[str, Any]]:
    """Per key and window: the n best by price (ties: earlier ts, then arrival)."""
    groups: dict[tuple[int, str], list[tuple[int, dict[str, Any]]]] = {}
    for i, x in enumerate(items):
        first = (x["ts"] - size) // slide + 1
        for w in range(first, x["ts"] // slide + 1):
            groups.setdefault((w, x["k"]), []).append((i, x))
    out = []
    for (w, k), members in groups.items():

        def rank(m: tuple[int, dict[str, Any]]) -> tuple[int, int, int]:
            i, x = m
            return (-x["p"] if desc else x["p"], x["ts"], i)

        best = [x for _, x in sorted(members, key=rank)[:n]]
        out.append(
            {
                "key": k,
                "start": w * slide,
                "end": w * slide + size,
                "value": best,
                "count": len(members),
            }
        )
    return out


def canonical(records: list[dict[str, Any]]) -> list[Any]:
    return sorted(records, key=lambda r: (r["start"], r["key"]))


items_strategy = st.lists(
    st.fixed_dictionaries(
        {
            "k": st.sampled_from(["a", "b"]),
            # Few timestamps too: equal (price, ts) pairs, decided by arrival.
            "ts": st.integers(0, 30).map(lambda v: v * 100),
            # Few prices: many ties, so the tie rule is exercised.
            "p": st.integers(0, 5) | st.floats(0, 5, allow_nan=False),
        }
    ),
    max_size=60,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    items=items_strategy,
    n=st.integers(1, 4),
    desc=st.booleans(),
    sliding=st.booleans(),
)
def test_top_matches_a_plain_python_reference(
    items: list[dict[str, Any]], n: int, desc: bool, sliding: bool
) -> None:
    # Items equal in everything else still differ by their id.
    items = [{**x, "id": i} for i, x in enumerate(items)]
    size, slide = (1000, 500) if sliding else (1000, 1000)
    config: dict[str, Any] = {
        "size_ms": size,
        "timestamp_field": "ts",
        "key_field": "k",
        # Out of order within the lateness: nothing is late.
        "allowed_lateness_ms": 10_000,
        "top": {"n": n, "by": "x.p", "order": "desc" if desc else "asc"},
    }
    node_type = "window.tumbling"
    if sliding:
        node_type = "window.sliding"
        config["slide_ms"] = slide
    result = run(node_type, config, items)
    assert result.ok, result.error
    want = reference(items, size, slide, n, desc)
    assert canonical(result.output("out")) == canonical(want)


def test_a_bridging_item_merges_two_sessions_tops() -> None:
    items = [
        {"k": "a", "ts": 0, "p": 5},
        {"k": "a", "ts": 100, "p": 7},
        {"k": "a", "ts": 1000, "p": 7},  # a second session (gap 500)
        {"k": "a", "ts": 1100, "p": 9},
        {"k": "a", "ts": 550, "p": 1},  # late: bridges both
    ]
    config = {
        "gap_ms": 500,
        "timestamp_field": "ts",
        "key_field": "k",
        "allowed_lateness_ms": 5000,
        "top": {"n": 3, "by": "x.p"},
    }
    result = run("window.session", config, items)
    assert result.ok, result.error
    [record] = result.output("out")
    assert record["count"] == 5
    # Ties (7 and 7) go to the earlier timestamp.
    assert record["value"] == [items[3], items[1], items[2]]


def test_an_item_without_a_number_to_rank_goes_to_error() -> None:
    items = [{"ts": 0, "p": 1}, {"ts": 1, "p": "high"}, {"ts": 2, "p": 3}]
    config = {"size_ms": 10, "timestamp_field": "ts", "top": {"n": 1, "by": "x.p"}}
    result = run("window.tumbling", config, items)
    assert result.ok, result.error
    assert [r["value"] for r in result.output("out")] == [[items[2]]]
    [dead] = result.dead_letters
    assert dead.item == items[1]
    assert "top needs a number to rank by" in dead.reason


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        ({"op": "max"}, "set one of 'op', 'aggs', 'fn' or 'top', not op and top"),
        ({"value": "x.p"}, "items are ranked by 'top.by'"),
        ({"top": {"n": 0, "by": "x.p"}}, "top.n"),
        ({"top": {"n": 1, "by": "x.p +"}}, "top.by"),
    ],
)
def test_bad_top_configs_are_refused_naming_the_field(
    extra: dict[str, Any], problem: str
) -> None:
    config = {"size_ms": 10, "timestamp_field": "ts", "top": {"n": 1, "by": "x.p"}}
    with pytest.raises(WorkflowValidationError, match="w") as info:
        run("window.tumbling", {**config, **extra}, [])
    assert problem in str(info.value)


def test_a_record_keeps_at_most_n_items_whatever_the_window_holds() -> None:
    from flowstream.nodes._window_aggregate import Aggregator
    from flowstream.nodes.window import Top, Tumbling

    agg = Aggregator(Tumbling(size_ms=10, top=Top(n=3, by="x.p")))
    rec = agg.new(None)
    for i in range(1000):
        x = {"p": i % 97}
        vals = agg.evaluate(x)
        agg.commit(rec, agg.step(rec, vals, i), vals, i)
        assert len(rec[2][1]) <= 3
    out = agg.output(rec, 0, 10)
    assert out["count"] == 1000
    assert out["value"] == [{"p": 96}] * 3
