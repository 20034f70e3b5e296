"""``join.changelog``: a stream joined to a table, both kept for a time."""

from __future__ import annotations

import logging
import random
from collections import Counter
from typing import Any, cast

import msgspec
import pytest

from flowstream import FlowRuntime, default_registry
from flowstream.core.workflow import Workflow
from flowstream.dataflow import Dataflow, values_source
from flowstream.errors import StateLimitError, WorkflowValidationError
from flowstream.nodes.join_changelog import Changelog, _ChangelogJoin, changelog_join
from flowstream.testing import run_workflow
from tests.local import local

from .test_control import check_example
from .test_join import FakeContext as _FakeContext

LEFT, RIGHT = 0, 1
FIELDS: dict[str, Any] = {
    "left_key": "x.k",
    "right_key": "x.k",
    "left_time": "x.t",
    "right_time": "x.t",
}


class FakeContext(_FakeContext):
    logger = logging.getLogger("tests.join_changelog")


def joiner(ctx: FakeContext | None = None, **fields: Any) -> _ChangelogJoin:
    config = msgspec.convert({**FIELDS, **fields}, Changelog)
    return _ChangelogJoin(config, cast("Any", ctx or FakeContext()))


def changes(out: list[Any]) -> list[tuple[str, Any, Any]]:
    return [(c["op"], c["left"]["i"], c["right"]["v"]) for c in out]


def apply(log: list[Any], current: dict[Any, Any]) -> None:
    """Apply a changelog keyed by the left item, checking that it is whole."""
    for c in log:
        i, v = c["left"]["i"], c["right"]["v"]
        if c["op"] == "retract":
            assert current.pop(i) == v, f"retract of a pair not held: {c}"
        else:
            assert i not in current, f"upsert over a pair not retracted: {c}"
            current[i] = v


async def test_docstring_example() -> None:
    await check_example(changelog_join)


def test_a_left_item_joins_its_row_now_or_when_it_comes() -> None:
    j = joiner(left_retention_ms=100, right_retention_ms=1000)
    assert j.push(LEFT, [{"k": 1, "t": 0, "i": "a"}]) == []  # waits
    assert changes(j.push(RIGHT, [{"k": 1, "t": 50, "v": "p"}])) == [
        ("upsert", "a", "p")
    ]
    assert changes(j.push(LEFT, [{"k": 1, "t": 60, "i": "b"}])) == [
        ("upsert", "b", "p")
    ]
    assert j.push(LEFT, [{"k": 2, "t": 70, "i": "c"}]) == []  # no row for 2


def test_a_replaced_row_retracts_the_pairs_it_made() -> None:
    ctx = FakeContext()
    j = joiner(
        ctx, left_retention_ms=1000, right_retention_ms=1000, allowed_lateness_ms=10
    )
    j.push(RIGHT, [{"k": 1, "t": 0, "v": "old"}])
    j.push(LEFT, [{"k": 1, "t": 10, "i": "a"}, {"k": 1, "t": 20, "i": "b"}])
    assert changes(j.push(RIGHT, [{"k": 1, "t": 30, "v": "new"}])) == [
        ("retract", "a", "old"),
        ("upsert", "a", "new"),
        ("retract", "b", "old"),
        ("upsert", "b", "new"),
    ]
    # The same row again changes nothing.
    assert j.push(RIGHT, [{"k": 1, "t": 30, "v": "new"}]) == []
    # An older version is stale: it does not replace the newer one.
    stale = {"k": 1, "t": 25, "v": "older"}
    assert j.push(RIGHT, [stale]) == []
    ((item, reason),) = ctx.dead
    assert item == stale
    assert reason == (
        "stale: event time 25 is older than the row held for key 1 (time 30)"
    )
    assert changes(j.push(LEFT, [{"k": 1, "t": 40, "i": "c"}])) == [
        ("upsert", "c", "new")
    ]


def test_retention_bounds_what_each_side_can_reach() -> None:
    j = joiner(left_retention_ms=100, right_retention_ms=500)
    j.push(RIGHT, [{"k": 1, "t": 0, "v": "p"}])
    j.push(LEFT, [{"k": 2, "t": 0, "i": "waits"}])
    # The left input at 500: the row (time 0 + 500) is still reachable.
    assert changes(j.push(LEFT, [{"k": 1, "t": 500, "i": "a"}])) == [
        ("upsert", "a", "p")
    ]
    # Once the left input passed 500, it is gone, with the left item it
    # joined (expiry follows each batch: never early, maybe late).
    assert j.push(LEFT, [{"k": 9, "t": 501, "i": "b"}]) == []
    assert 1 not in j.buckets
    assert j.push(LEFT, [{"k": 1, "t": 501, "i": "c"}]) == []
    # A row for key 2 at 100 still finds the left item of time 0 ...
    assert changes(j.push(RIGHT, [{"k": 2, "t": 100, "v": "q"}])) == [
        ("upsert", "waits", "q")
    ]
    # ... which the right input passing 100 frees (not those of 501).
    j.push(RIGHT, [{"k": 3, "t": 101, "v": "r"}])
    assert {k: len(b[4]) for k, b in j.buckets.items()} == {2: 0, 9: 1, 1: 1, 3: 0}


def test_late_and_bad_items_go_to_the_error_port_named() -> None:
    ctx = FakeContext()
    j = joiner(ctx, left_retention_ms=0, right_retention_ms=0, allowed_lateness_ms=50)
    j.push(LEFT, [{"k": 1, "t": 1000, "i": "a"}])
    late = {"k": 1, "t": 949, "i": "late"}
    in_time = {"k": 1, "t": 950, "i": "ok"}
    no_key = {"t": 1000}
    bad_time = {"k": 1, "t": "soon"}
    assert j.push(LEFT, [late, in_time, no_key, bad_time]) == []
    assert [item for item, _ in ctx.dead] == [late, no_key, bad_time]
    reasons = [reason for _, reason in ctx.dead]
    assert reasons[0] == (
        "late: event time 949 is more than allowed_lateness_ms behind the "
        "latest left time 1000"
    )
    assert reasons[1].startswith("cannot compute the left key or time: ")
    assert "no such key: k" in reasons[1]
    assert "left_time must be a number of epoch ms, got str" in reasons[2]


def regular_join(lefts: list[Any], rights: list[Any]) -> dict[Any, Any]:
    """The unbounded join: each left item with its key's latest row."""
    latest: dict[Any, Any] = {}
    for r in sorted(rights, key=lambda r: r["t"]):
        latest[r["k"]] = r["v"]
    return {a["i"]: latest[a["k"]] for a in lefts if a["k"] in latest}


def workload(seed: int, disorder: int) -> list[tuple[int, Any]]:
    """Keys that live 300 ms each: versions of its row and left items.

    Every row of a key is within 300 ms of the key's left items, so 300 ms
    of retention on each side makes the join exact; the keys move on, so
    the state stays small. Items arrive up to ``disorder`` ms late.
    """
    rng = random.Random(seed)
    arrivals = []
    for k in range(200):
        base = k * 100
        for n, t in enumerate(sorted(rng.sample(range(base, base + 300), 3))):
            if rng.random() < 0.8:
                row = {"k": k, "t": t, "v": f"{k}.{n}"}
                arrivals.append((t + rng.randrange(disorder + 1), RIGHT, row))
        for n in range(rng.randrange(4)):
            t = base + rng.randrange(300)
            item = {"k": k, "t": t, "i": f"{k}/{n}"}
            arrivals.append((t + rng.randrange(disorder + 1), LEFT, item))
    arrivals.sort(key=lambda a: a[0])
    return [(side, item) for _, side, item in arrivals]


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("disorder", [0, 150])
def test_the_changelog_ends_as_the_regular_join(seed: int, disorder: int) -> None:
    arrivals = workload(seed, disorder)
    ctx = FakeContext()
    j = joiner(
        ctx,
        left_retention_ms=300,
        right_retention_ms=300,
        allowed_lateness_ms=disorder,
    )
    current: dict[Any, Any] = {}
    for side, item in arrivals:
        apply(j.push(side, [item]), current)
    j.end(LEFT)
    j.end(RIGHT)
    lefts = [x for side, x in arrivals if side == LEFT]
    rights = [x for side, x in arrivals if side == RIGHT]
    assert current == regular_join(lefts, rights)
    assert len(current) > 100
    # Only versions older than the row held are refused, never a late item.
    assert all(reason.startswith("stale: ") for _, reason in ctx.dead)
    assert bool(ctx.dead) == (disorder > 0)
    assert ctx.state["buckets"] == {}


def test_state_stays_bounded_on_a_long_stream() -> None:
    # Nexmark's shape: a person every 50 ms, three auctions per person whose
    # seller is one of the last 20 persons or one of the next 2. Retention
    # covers that, so every auction is joined; the state holds a few
    # seconds of each side however long the stream.
    rng = random.Random(5)
    j = joiner(left_retention_ms=200, right_retention_ms=1500, allowed_lateness_ms=100)
    joined = auctions = peak_rows = peak_lefts = peak_queue = 0
    persons = 40_000
    for p in range(persons):
        t = p * 50
        joined += len(j.push(RIGHT, [{"k": p, "t": t, "v": p}]))
        batch = []
        for n in range(3):
            seller = p + rng.randrange(-19, 3)
            if 0 <= seller < persons:
                batch.append({"k": seller, "t": t + n, "i": (p, n)})
        auctions += len(batch)
        joined += len(j.push(LEFT, batch))
        if p % 97 == 0:
            rows, lefts = j.held()
            peak_rows, peak_lefts = max(peak_rows, rows), max(peak_lefts, lefts)
            peak_queue = max(peak_queue, *map(len, j.queues))
    assert joined == auctions
    # Rows: 1.5 s of retention + 0.1 s of lateness = 32 persons (and one);
    # left items: 0.2 s + 0.1 s, 6 persons' worth of auctions (18 + 3).
    assert peak_rows <= 33
    assert peak_lefts <= 21
    # The queues are compacted as they go: never the whole stream.
    assert peak_queue <= 2 * 4096 + 100
    assert len(j.queues[RIGHT]) < persons


def test_state_is_plain_data_a_checkpoint_restores() -> None:
    arrivals = workload(4, 100)
    config: dict[str, Any] = {
        "left_retention_ms": 300,
        "right_retention_ms": 300,
        "allowed_lateness_ms": 100,
    }
    whole = joiner(**config)
    expected = [whole.push(side, [item]) for side, item in arrivals]
    ctx = FakeContext()
    first = joiner(ctx, **config)
    half = len(arrivals) // 2
    got = [first.push(side, [item]) for side, item in arrivals[:half]]
    snapshot = msgspec.msgpack.encode(ctx.state)
    restored = FakeContext()
    restored.state = msgspec.msgpack.decode(snapshot)
    second = joiner(restored, **config)
    got += [second.push(side, [item]) for side, item in arrivals[half:]]
    assert got == expected


def test_max_keys_fails_or_evicts_the_oldest_key() -> None:
    j = joiner(left_retention_ms=10, right_retention_ms=10, max_keys=2)
    j.push(RIGHT, [{"k": 1, "t": 0, "v": "a"}, {"k": 2, "t": 0, "v": "b"}])
    with pytest.raises(StateLimitError, match="max_keys=2 reached"):
        j.push(RIGHT, [{"k": 3, "t": 0, "v": "c"}])
    ctx = FakeContext()
    j = joiner(
        ctx,
        left_retention_ms=10,
        right_retention_ms=10,
        max_keys=2,
        on_max_keys="evict_oldest",
    )
    j.push(RIGHT, [{"k": 1, "t": 0, "v": "a"}, {"k": 2, "t": 0, "v": "b"}])
    j.push(RIGHT, [{"k": 1, "t": 1, "v": "a2"}])  # key 1 updated last
    j.push(RIGHT, [{"k": 3, "t": 2, "v": "c"}])  # evicts key 2
    assert sorted(j.buckets) == [1, 3]
    assert ctx.state["evicted"] == 1
    assert j.push(LEFT, [{"k": 2, "t": 3, "i": "x"}]) == []


def test_config_problems_are_named() -> None:
    wf = (
        Workflow("j")
        .node("l", "source.values", values=[])
        .node("r", "source.values", values=[])
        .node(
            "j",
            "join.changelog",
            **FIELDS,
            left_retention_ms=-1,
            right_retention_ms=10,
        )
        .connect("l -> j.left")
        .connect("r -> j.right")
    )
    with pytest.raises(WorkflowValidationError) as info:
        FlowRuntime(default_registry(entry_points=False)).validate(wf)
    (problem,) = info.value.problems
    assert problem.node == "j"
    assert problem.field == "config.left_retention_ms"
    assert problem.message == "expected `int` >= 0"


def sellers_workflow(parallelism: int) -> Workflow:
    persons = [{"id": p, "t": p * 10, "name": f"p{p}"} for p in range(200)]
    auctions = [{"id": a, "seller": a % 200, "t": a * 3} for a in range(600)]
    return (
        Workflow("sellers")
        .node("persons", "source.values", values=persons)
        .node("auctions", "source.values", values=auctions)
        .node(
            "join",
            "join.changelog",
            left_key="x.seller",
            right_key="x.id",
            left_time="x.t",
            right_time="x.t",
            left_retention_ms=10_000,
            right_retention_ms=10_000,
            parallelism=parallelism,
        )
        .node("out", "sink.collect")
        .connect("auctions -> join.left")
        .connect("persons -> join.right")
        .connect("join -> out")
    )


def test_runs_keyed_in_parallel_with_the_same_answer() -> None:
    def pairs(wf: Workflow) -> Counter[tuple[int, str]]:
        result = FlowRuntime(default_registry(entry_points=False)).run(wf)
        assert result.ok, result.error
        n = wf.nodes[2].parallelism or 1
        ran = {i for i in result.stats if i.startswith("join")}
        assert ran == ({"join"} if n == 1 else {f"join[{i}]" for i in range(n)})
        out = result.output("out")
        assert all(c["op"] == "upsert" for c in out)
        return Counter((c["left"]["id"], c["right"]["name"]) for c in out)

    one = pairs(sellers_workflow(1))
    assert one == Counter((a, f"p{a % 200}") for a in range(600))
    assert pairs(sellers_workflow(3)) == one


async def test_state_is_empty_once_both_inputs_ended() -> None:
    executor = local(
        FlowRuntime(default_registry(entry_points=False)).executor(sellers_workflow(1))
    )
    result = await executor.run()
    assert result.ok, result.error
    state = executor.state.for_node("join")
    assert state["buckets"] == {}


async def test_dead_letters_reach_the_error_port_in_a_run() -> None:
    wf = sellers_workflow(1)
    wf.nodes[1].config["values"].append({"id": 999, "seller": "?"})  # no time
    result = await run_workflow(wf, default_registry(entry_points=False))
    assert result.ok, result.error
    (letter,) = result.dead_letters
    assert letter.node_id == "join"
    assert letter.item == {"id": 999, "seller": "?"}
    assert "cannot compute the left key or time" in letter.reason


def test_the_typed_method_takes_python_callables() -> None:
    flow = Dataflow("sellers")
    rows: list[dict[str, Any]] = [
        {"id": 1, "t": 0, "name": "Ann"},
        {"id": 1, "t": 50, "name": "Ann Lee"},
    ]
    people = flow.source(values_source(rows))
    sold: list[dict[str, Any]] = [{"a": 10, "seller": 1, "t": 20}]
    auctions = flow.source(values_source(sold))
    changes_ = auctions.changelog_join(
        people,
        left_key=lambda a: a["seller"],
        right_key=lambda p: p["id"],
        left_time=lambda a: a["t"],
        right_time=lambda p: p["t"],
        left_retention_ms=1000,
        right_retention_ms=1000,
    ).collect()
    result = flow.run()
    assert result.ok, result.error
    current: dict[int, str] = {}
    for c in changes_.items(result):
        if c["op"] == "upsert":
            current[c["left"]["a"]] = c["right"]["name"]
    # Whatever the order the two inputs arrive in, auction 10 ends with the
    # person's latest row.
    assert current == {10: "Ann Lee"}


def test_join_interval_runs_keyed_in_parallel_too() -> None:
    # The same partitioning rule (left_key on left, right_key on right).
    auctions = [{"id": a, "t": a * 10, "end": a * 10 + 50} for a in range(300)]
    bids = [{"a": b % 300, "t": (b % 300) * 10 + b % 60, "n": b} for b in range(900)]

    def pairs(parallelism: int) -> Counter[tuple[int, int]]:
        wf = (
            Workflow("bids")
            .node("auctions", "source.values", values=auctions)
            .node("bids", "source.values", values=bids)
            .node(
                "join",
                "join.interval",
                left_key="x.id",
                right_key="x.a",
                left_time="x.t",
                right_time="x.t",
                left_end="x.end",
                upper_ms=100,
                allowed_lateness_ms=10_000,
                parallelism=parallelism,
            )
            .node("out", "sink.collect")
            .connect("auctions -> join.left")
            .connect("bids -> join.right")
            .connect("join -> out")
        )
        result = FlowRuntime(default_registry(entry_points=False)).run(wf)
        assert result.ok, result.error
        assert ("join[1]" in result.stats) == (parallelism > 1)
        return Counter((p["left"]["id"], p["right"]["n"]) for p in result.output("out"))

    one = pairs(1)
    assert sum(one.values()) == sum(b % 60 <= 50 for b in range(900))
    assert pairs(2) == one


async def test_a_run_fails_at_max_keys_naming_the_node() -> None:
    wf = sellers_workflow(1)
    wf.nodes[2].config["max_keys"] = 10
    result = await run_workflow(wf, default_registry(entry_points=False))
    assert not result.ok
    assert "'join'" in str(result.error)
    assert "max_keys=10 reached" in str(result.error)
