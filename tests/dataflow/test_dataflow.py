"""The fluent dataflow API: the issue's snippet, every node type, ports, @node."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sqlite3
import typing
from typing import TYPE_CHECKING, Any

import msgspec
import pytest

import flowstream.dataflow as df
from flowstream import (
    ContinueOnError,
    FlowRuntime,
    NodeContext,
    RunOptions,
    Workflow,
    default_registry,
    node,
)
from flowstream.dataflow import (
    NODE_TYPES,
    Dataflow,
    count,
    file_source,
    fold,
    range_source,
    sqlite_sink,
    sum_of,
    tumbling,
    values_source,
)
from flowstream.errors import UnknownNodeType, WorkflowValidationError
from flowstream.runtime.options import RunSettings

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path


class Click(msgspec.Struct):
    user: str
    page: str
    ts: int  # epoch ms


def write_clicks(path: Path) -> None:
    rows = [
        {"user": "ann", "page": "/a", "ts": 1_000},
        {"user": "bot", "page": "/a", "ts": 2_000},
        {"user": "bob", "page": "/b", "ts": 3_000},
        {"user": "ann", "page": "/a", "ts": 4_000},
        {"user": "bob", "page": "/a", "ts": 12_000},
        {"user": 5},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_the_issue_snippet_runs_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write_clicks(tmp_path / "clicks.jsonl")

    flow = Dataflow("clicks")
    clicks = flow.source(file_source("clicks.jsonl"), schema=Click)  # DataStream[Click]
    counts = (
        clicks.filter(lambda c: c.user != "bot")
        .key_by(lambda c: c.page)
        .window(tumbling(seconds=10), count(), timestamp=lambda c: c.ts)
    )
    counts.sink(sqlite_sink("clicks.db", table="counts", key=("key", "start")))
    bad = clicks.error.collect()
    result = flow.run()

    assert result.ok, result.error
    with sqlite3.connect(tmp_path / "clicks.db") as db:
        rows = db.execute("SELECT key, start, value FROM counts ORDER BY start, key")
        assert rows.fetchall() == [("/a", 0, 2), ("/b", 0, 1), ("/a", 10_000, 1)]
    # The record that is not a Click is a dead letter with the reason, not lost.
    (letter,) = bad.items(result)
    assert letter["item"] == {"user": 5}
    assert "$.user" in letter["reason"]


def test_every_registered_node_type_has_a_typed_way() -> None:
    registered = {spec.type_id for spec in default_registry()}
    missing = registered - set(NODE_TYPES)
    assert not missing, f"no typed method or function for {sorted(missing)}"
    for type_id, where in NODE_TYPES.items():
        owner, _, name = where.rpartition(".")
        holder = df if owner == "flowstream.dataflow" else getattr(df, owner)
        built = getattr(holder, name).__node_type__
        assert type_id in ((built,) if isinstance(built, str) else built)


@pytest.mark.parametrize("mode", ["dag", "stream"])
@pytest.mark.parametrize("fuse", [True, False])
def test_a_chain_of_lambdas(mode: str, fuse: bool) -> None:
    flow = Dataflow("chain")
    numbers = flow.source(range_source(10))
    words = (
        numbers.filter(lambda n: n % 3 == 0)
        .map(lambda n: n * 10)
        .flat_map(lambda n: [n, n + 1])
        .map(str)
    )
    out = words.collect()
    total = numbers.reduce(lambda acc, n: acc + n, 0).collect()
    result = flow.run(mode=mode, fuse=fuse)
    assert result.ok, result.error
    assert out.items(result) == ["0", "1", "30", "31", "60", "61", "90", "91"]
    assert total.items(result) == [{"key": None, "value": 45}]


def test_keyed_windows_folds_and_reduces_see_the_items() -> None:
    events: list[dict[str, Any]] = [{"u": "a", "t": 1.0, "v": 2}]
    events += [{"u": "b", "t": 2.0, "v": 3}, {"u": "a", "t": 3.0, "v": 5}]
    flow = Dataflow("keyed")
    by_user = flow.source(values_source(events)).key_by(lambda e: e["u"])
    sums = by_user.window(
        tumbling(seconds=10), sum_of(lambda e: e["v"]), timestamp=lambda e: e["t"]
    ).collect()
    empty: list[int] = []
    folded = by_user.window(
        tumbling(seconds=10), fold(lambda acc, e: [*acc, e["v"]], empty)
    ).collect()
    totals = by_user.reduce(lambda acc, e: acc + e["v"], 0).collect()
    result = flow.run()
    assert result.ok, result.error
    assert [(w["key"], w["value"]) for w in sums.items(result)] == [("a", 7), ("b", 3)]
    assert sorted((w["key"], w["value"]) for w in folded.items(result)) == [
        ("a", [2, 5]),
        ("b", [3]),
    ]
    assert totals.items(result) == [{"key": "a", "value": 7}, {"key": "b", "value": 3}]


def test_route_ports_error_port_and_fan_in() -> None:
    flow = Dataflow("ports")
    numbers = flow.source(values_source([1, 0, 5, 20]))
    routes = numbers.route({"small": lambda n: n < 5, "big": lambda n: n >= 10})
    small, big, other = (
        routes["small"].collect(),
        routes["big"].collect(),
        routes.default.collect(),
    )
    inverse = numbers.map(lambda n: 1 / n).with_settings(
        error_handling=ContinueOnError()
    )
    failed = inverse.error.collect()
    both = routes["small"].merge(routes["big"]).collect()
    result = flow.run()
    assert result.ok, result.error
    assert (small.items(result), big.items(result), other.items(result)) == (
        [1, 0],
        [20],
        [5],
    )
    assert [f["item"] for f in failed.items(result)] == [0]
    assert sorted(both.items(result)) == [0, 1, 20]
    with pytest.raises(KeyError, match="has no route 'huge'"):
        routes["huge"]


def test_joins_lookups_zips_and_splits() -> None:
    flow = Dataflow("joins")
    orders = flow.source(values_source([orders_item()]))
    users = flow.source(values_source([users_item()]))
    pairs = orders.join(
        users,
        window_ms=1000,
        left_key=lambda o: o["user"],
        right_key=lambda u: u["name"],
        left_time=lambda o: o["t"],
        right_time=lambda u: u["t"],
    ).collect()
    looked = orders.lookup(lambda o: o["user"], table={"a": {"vip": True}}).collect()
    zipped = flow.zip(orders, users).collect()
    parts = flow.source(range_source(6)).split(2, key=lambda n: n % 2)
    firsts = [p.collect() for p in parts]
    result = flow.run()
    assert result.ok, result.error
    assert len(pairs.items(result)) == 1
    assert len(looked.items(result)) == 1
    assert zipped.items(result) == [[orders_item(), users_item()]]
    halves = [f.items(result) for f in firsts]
    assert sorted(halves[0] + halves[1]) == [0, 1, 2, 3, 4, 5]
    keys = [{n % 2 for n in half} for half in halves]
    assert not keys[0] & keys[1]  # each key goes to one part only


def orders_item() -> dict[str, Any]:
    return {"id": 1, "user": "a", "t": 1.0}


def users_item() -> dict[str, Any]:
    return {"name": "a", "t": 1.0}


class Scale(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    factor: int = 2


@node("test.scale", config=Scale)
async def scale(inp: AsyncIterator[int], *, config: Scale) -> AsyncIterator[int]:
    async for x in inp:
        yield x * config.factor


@node("test.running_total")
async def running_total(
    inp: AsyncIterator[int], *, ctx: NodeContext
) -> AsyncIterator[int]:
    async for x in inp:
        total = ctx.state.setdefault("total", 0) + x
        ctx.state["total"] = total
        yield total


@node("test.never_registered")
async def never_registered(inp: AsyncIterator[int]) -> AsyncIterator[int]:
    async for x in inp:
        yield x


def test_node_functions_plug_in_and_register_themselves() -> None:
    flow = Dataflow("mine")
    scaled = flow.source(range_source(4)).then(scale, {"factor": 3})
    totals = scaled.then(running_total).collect()
    assert "test.scale" in flow.registry
    by_name = scaled.then("test.scale", factor=10).collect()
    result = flow.run()
    assert result.ok, result.error
    assert totals.items(result) == [0, 3, 9, 18]
    assert by_name.items(result) == [0, 30, 60, 90]


def test_an_unregistered_node_id_gets_a_hint() -> None:
    flow = Dataflow("hint")
    numbers = flow.source(range_source(3))
    with pytest.raises(UnknownNodeType, match="declares it but nothing registered"):
        numbers.then("test.never_registered")
    wf = Workflow("w").node("src", "source.range", stop=3)
    wf.node("n", "test.never_registered").connect("src -> n")
    with pytest.raises(WorkflowValidationError, match=r"at tests\.dataflow"):
        FlowRuntime().validate(wf)


def test_a_stream_of_another_dataflow_is_refused() -> None:
    one, two = Dataflow("one"), Dataflow("two")
    a = one.source(range_source(1))
    b = two.source(range_source(1))
    with pytest.raises(ValueError, match="belongs to"):
        one.zip(a, b)


async def test_run_inside_a_running_loop_takes_a_worker_thread() -> None:
    flow = Dataflow("in-loop")
    out = flow.source(range_source(3)).map(lambda n: n + 1).collect()
    loop_thread = asyncio.get_running_loop()
    assert loop_thread.is_running()
    result = flow.run()  # what a Jupyter cell does
    assert out.items(result) == [1, 2, 3]
    awaited = await flow.arun()
    assert out.items(awaited) == [1, 2, 3]
    plain = FlowRuntime().run(flow.workflow, RunOptions(fuse=False))
    assert out.items(plain) == [1, 2, 3]


async def test_a_failing_run_in_a_worker_thread_raises_here() -> None:
    wf = Workflow("bad").node("src", "source.range", stop=3)
    wf.node("s", "test.scale").connect("src -> s")  # not in the default registry
    with pytest.raises(WorkflowValidationError, match=r"test\.scale"):
        FlowRuntime().run(wf)


def test_run_settings_are_run_options() -> None:
    fields = {f.name for f in dataclasses.fields(RunOptions)}
    assert set(typing.get_type_hints(RunSettings)) == fields


def test_interval_joins_and_updating_aggregates_have_typed_methods() -> None:
    flow = Dataflow("bids")
    auctions = flow.source(
        values_source([{"id": 1, "t": 0, "ends": 500}, {"id": 2, "t": 0, "ends": 900}])
    )
    bids = flow.source(
        values_source(
            [
                {"a": 1, "t": 100, "p": 5},
                {"a": 1, "t": 600, "p": 9},  # after auction 1 ended
                {"a": 2, "t": 800, "p": 7},
            ]
        )
    )
    pairs = auctions.interval_join(
        bids,
        upper_ms=1000,
        left_key=lambda a: a["id"],
        right_key=lambda b: b["a"],
        left_time=lambda a: a["t"],
        right_time=lambda b: b["t"],
        left_end=lambda a: a["ends"],
    )
    joined = pairs.collect()
    best = pairs.aggregate(
        "max", key=lambda j: j["left"]["id"], value=lambda j: j["right"]["p"]
    ).collect()
    result = flow.run()
    assert result.ok, result.error
    got = sorted((j["left"]["id"], j["right"]["p"]) for j in joined.items(result))
    assert got == [(1, 5), (2, 7)]
    upserts = [r for r in best.items(result) if r["op"] == "upsert"]
    assert sorted((r["key"], r["value"]) for r in upserts) == [(1, 5), (2, 7)]
