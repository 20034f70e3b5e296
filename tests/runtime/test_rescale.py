"""Rescaling from a checkpoint: restart at another parallelism, state moved by key.

A checkpointed run is stopped (drained) or crashed (cancelled in-process at a
committed epoch, or ``kill -9`` of a CLI run in ``tests/cli``), then run
again with other parallelisms. Every keyed node's state must land in the
instance owning each key now, so the outputs of both runs together are
exactly those of one uninterrupted run: no key restarted, none counted twice.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter, defaultdict
from typing import TYPE_CHECKING, Any

import msgspec
import pytest

from flowstream import FlowRuntime, Workflow, default_registry, node
from flowstream.core.workflow import Checkpoint
from flowstream.runtime.checkpointing import CheckpointStore, workflow_key
from flowstream.runtime.checkpointing.rescale import (
    LAYOUT_KEY,
    RescaleError,
    read_layout,
    restore,
)
from flowstream.runtime.parallel import key_group, owner
from flowstream.runtime.validation import validate
from tests.local import local

if TYPE_CHECKING:
    from pathlib import Path

    from flowstream.core.node import NodeContext


def with_parallelism(wf: Workflow, par: dict[str, int]) -> Workflow:
    copy = msgspec.convert(msgspec.to_builtins(wf), Workflow)
    for n in copy.nodes:
        if n.id in par:
            n.parallelism = par[n.id]
    return copy


def runtime() -> FlowRuntime:
    return FlowRuntime(default_registry())


async def run_to_end(wf: Workflow) -> list[Any]:
    result = await local(runtime().executor(wf)).run()
    assert result.status == "completed", result.error
    return result.output("out") if "out" in result.outputs else []


async def stop_after(wf: Workflow, items: int) -> list[Any]:
    """Run until ``out`` took ``items`` items, then stop (drain, final epoch)."""
    ex = local(runtime().executor(wf))
    run = asyncio.ensure_future(ex.run())
    deadline = time.monotonic() + 60
    while not run.done():
        out = ex.statistics().get("out")
        if out is not None and out.items_in >= items:
            ex.stop()
            break
        assert time.monotonic() < deadline, "the run never reached the stop"
        await asyncio.sleep(0.001)
    result = await run
    assert result.status == "completed", result.error
    return result.output("out")


async def crash_after(wf: Workflow, epochs: int) -> None:
    """Run until epoch ``epochs`` committed, then cancel: a crash, in-process.

    A cancelled run commits nothing more, so the store holds that epoch (or a
    later one) with whatever state was open then, as after a ``kill -9``.
    """
    ex = local(runtime().executor(wf))
    run = asyncio.ensure_future(ex.run())
    deadline = time.monotonic() + 60
    while not run.done():
        coord = ex._coord
        if coord is not None and coord.committed >= epochs:
            ex.cancel("crash")
            break
        assert time.monotonic() < deadline, "no epoch committed"
        await asyncio.sleep(0.001)
    result = await run
    assert result.status == "cancelled", "the crash must land mid-stream"


def lines(path: Path) -> list[Any]:
    return [json.loads(line) for line in path.read_text().splitlines()]


async def runs(store: Path) -> list[Any]:
    async with CheckpointStore(store) as ckpt:
        return await ckpt.runs()


# --- the run key -----------------------------------------------------------------


def keyed_counts(
    store: Path, par: int, n: int = 200_000, kind: str = "transform.scan"
) -> Workflow:
    # transform.aggregate without retracts emits what scan emits (plus op).
    extra: dict[str, Any] = {"retract": False} if kind == "transform.aggregate" else {}
    wf = (
        Workflow("keyed-counts", mode="stream")
        .node("numbers", "source.range", stop=n)
        .node("count", kind, op="count", key="x % 7", parallelism=par, **extra)
        .node("out", "sink.collect")
        .connect("numbers -> count")
        .connect("count -> out")
    )
    wf.checkpoint = Checkpoint(path=str(store), interval_ms=5)
    return wf


def test_parallelism_is_not_part_of_the_run_identity(tmp_path: Path) -> None:
    keys = {workflow_key(keyed_counts(tmp_path / "s.db", par)) for par in (1, 2, 3)}
    wide = keyed_counts(tmp_path / "s.db", 1)
    wide.parallelism = 4
    keys.add(workflow_key(wide))
    assert len(keys) == 1
    other = keyed_counts(tmp_path / "s.db", 2, n=10)
    assert workflow_key(other) not in keys  # what it computes still counts


# --- clean stop, then another parallelism ---------------------------------------


def assert_running_counts_exact(items: list[dict[str, Any]], n: int, keys: int) -> None:
    """Each key's running counts are 1, 2, ... its total, each exactly once."""
    values: dict[int, list[int]] = defaultdict(list)
    for r in items:
        values[r["key"]].append(r["value"])
    assert sorted(values) == list(range(keys))
    for key, seen in values.items():
        assert sorted(seen) == list(range(1, len(range(key, n, keys)) + 1)), key


@pytest.mark.parametrize(
    ("before", "after", "kind"),
    [
        (2, 1, "transform.scan"),
        (1, 2, "transform.scan"),
        (2, 3, "transform.scan"),
        (2, 1, "transform.aggregate"),
        (1, 3, "transform.aggregate"),
    ],
)
async def test_keyed_counts_exact_after_a_stop_and_a_rescaled_restart(
    tmp_path: Path, before: int, after: int, kind: str
) -> None:
    store, n = tmp_path / "ckpt.db", 200_000
    first = await stop_after(keyed_counts(store, before, n, kind), items=20_000)
    assert len(first) < n, "the stop must land mid-stream"
    second = await run_to_end(keyed_counts(store, after, n, kind))
    assert_running_counts_exact(first + second, n, 7)
    (record,) = await runs(store)
    if before != after:
        moved = record.rescaled["count"]
        assert (moved["from"], moved["to"]) == (before, after)
        assert moved["keys"] == 7
    assert record.parallelism == ({"count": after} if after > 1 else {})


# --- a crash with state open, then another parallelism --------------------------


WINDOWED = 200_000


def windows(store: Path, out: Path, par: int, kind: str) -> Workflow:
    wf = Workflow(f"windows-{kind}", mode="stream").node(
        "numbers", "source.range", stop=WINDOWED
    )
    if kind == "tumbling":
        wf.node(
            "win",
            "window.tumbling",
            key="x % 5",
            time="event",
            timestamp="x",
            size_ms=100,
            parallelism=par,
        )
    else:
        # Bursts of 1000 items, 500 ms apart: one session per key and burst.
        wf.node(
            "win",
            "window.session",
            key="x % 5",
            time="event",
            timestamp="x + (x / 1000) * 500",
            gap_ms=100,
            parallelism=par,
        )
    wf.node("sink", "file.sink", path=str(out))
    wf.connect("numbers -> win").connect("win -> sink")
    wf.checkpoint = Checkpoint(path=str(store), interval_ms=5)
    return wf


@pytest.mark.parametrize("kind", ["tumbling", "session"])
@pytest.mark.parametrize(("before", "after"), [(2, 1), (1, 2), (2, 3)])
async def test_windows_exact_after_a_crash_and_a_rescaled_restart(
    tmp_path: Path, kind: str, before: int, after: int
) -> None:
    store, out = tmp_path / "ckpt.db", tmp_path / "out.jsonl"
    await crash_after(windows(store, out, before, kind), epochs=1)
    await run_to_end(windows(store, out, after, kind))
    got = Counter((r["key"], r["start"], r["count"]) for r in lines(out))
    if kind == "tumbling":
        want = Counter((k, s, 20) for s in range(0, WINDOWED, 100) for k in range(5))
    else:
        bursts = range(WINDOWED // 1000)  # burst b starts at 1000 b + 500 b
        want = Counter((k, b * 1500 + k, 200) for b in bursts for k in range(5))
    assert got == want


JOINED = 150_000


@pytest.mark.parametrize(("before", "after"), [(2, 1), (1, 3)])
async def test_window_join_exact_after_a_crash_and_a_rescaled_restart(
    tmp_path: Path, before: int, after: int
) -> None:
    store, out = tmp_path / "ckpt.db", tmp_path / "out.jsonl"
    await crash_after(joined(store, out, before, "join.window"), epochs=1)
    await run_to_end(joined(store, out, after, "join.window"))
    pairs = Counter((r["left"], r["right"]) for r in lines(out))
    assert pairs == Counter((x, x + 20) for x in range(JOINED))


def joined(store: Path, out: Path, par: int, kind: str) -> Workflow:
    """A two-input join of ``kind``: each left x meets right x + 20."""
    config: dict[str, Any] = {
        "left_key": "x",
        "right_key": "x - 20",
        "left_time": "x",
        "right_time": "x - 20",
    }
    if kind == "join.window":
        config["window_ms"] = 0
    elif kind == "join.interval":
        config["upper_ms"] = 0
    else:
        config.update(left_retention_ms=50, right_retention_ms=50)
    wf = (
        Workflow(kind.replace(".", "-"), mode="stream")
        .node("lefts", "source.range", stop=JOINED)
        .node("rights", "source.range", start=20, stop=JOINED + 20)
        .node("join", kind, parallelism=par, **config)
        .node("sink", "file.sink", path=str(out))
        .connect("lefts -> join.left")
        .connect("rights -> join.right")
        .connect("join -> sink")
    )
    wf.checkpoint = Checkpoint(path=str(store), interval_ms=5)
    return wf


@pytest.mark.parametrize("kind", ["join.interval", "join.changelog"])
@pytest.mark.parametrize(("before", "after"), [(2, 1), (1, 3)])
async def test_queued_joins_exact_after_a_crash_and_a_rescaled_restart(
    tmp_path: Path, kind: str, before: int, after: int
) -> None:
    store, out = tmp_path / "ckpt.db", tmp_path / "out.jsonl"
    await crash_after(joined(store, out, before, kind), epochs=1)
    await run_to_end(joined(store, out, after, kind))
    records = lines(out)
    assert all(r.get("op", "upsert") == "upsert" for r in records)
    pairs = Counter((r["left"], r["right"]) for r in records)
    assert pairs == Counter((x, x + 20) for x in range(JOINED))
    (record,) = await runs(store)
    assert (record.rescaled["join"]["from"], record.rescaled["join"]["to"]) == (
        before,
        after,
    )


def dedupe(store: Path, out: Path, par: int, max_keys: int = 10_000) -> Workflow:
    wf = (
        Workflow("dedupe", mode="stream")
        .node("numbers", "source.range", stop=100_000)
        .node("mod", "transform.map", expr="x % 3000")
        .node("unique", "transform.dedupe", max_keys=max_keys, parallelism=par)
        .node("sink", "file.sink", path=str(out))
        .connect("numbers -> mod")
        .connect("mod -> unique")
        .connect("unique -> sink")
    )
    wf.checkpoint = Checkpoint(path=str(store), interval_ms=5)
    return wf


@pytest.mark.parametrize(("before", "after"), [(3, 2), (1, 2)])
async def test_dedupe_remembers_every_key_after_a_rescaled_restart(
    tmp_path: Path, before: int, after: int
) -> None:
    store, out = tmp_path / "ckpt.db", tmp_path / "out.jsonl"
    await crash_after(dedupe(store, out, before), epochs=1)
    await run_to_end(dedupe(store, out, after))
    assert sorted(lines(out)) == list(range(3000))


async def test_dedupe_restored_from_a_checkpoint_still_evicts_its_oldest_key(
    tmp_path: Path,
) -> None:
    # A restored table was a plain dict, which cannot drop its oldest entry:
    # the first new key past max_keys failed the run.
    store, out = tmp_path / "ckpt.db", tmp_path / "out.jsonl"
    await crash_after(dedupe(store, out, 1, max_keys=100), epochs=1)
    await run_to_end(dedupe(store, out, 1, max_keys=100))
    # Each key comes back 3000 items later, long forgotten: every item is new.
    assert Counter(lines(out)) == Counter(x % 3000 for x in range(100_000))


# --- what cannot move is refused by name ----------------------------------------


@node("test.tally")
async def tally(x: Any, *, ctx: NodeContext) -> Any:
    """Count items in the node state: state a stateless node cannot split."""
    ctx.state["seen"] = ctx.state.get("seen", 0) + 1
    return x


async def test_a_stateful_node_without_keyed_state_is_refused_by_name(
    tmp_path: Path,
) -> None:
    store = tmp_path / "ckpt.db"

    def wf(par: int) -> Workflow:
        w = (
            Workflow("tally", mode="stream")
            .node("numbers", "source.range", stop=200_000)
            .node("tally", "test.tally", parallelism=par)
            .node("out", "sink.collect")
            .connect("numbers -> tally")
            .connect("tally -> out")
        )
        w.checkpoint = Checkpoint(path=str(store), interval_ms=5)
        return w

    registry = default_registry()
    registry.register(tally)
    rt = FlowRuntime(registry)
    ex = local(rt.executor(wf(2)))
    run = asyncio.ensure_future(ex.run())
    deadline = time.monotonic() + 60
    while not run.done():
        out = ex.statistics().get("out")
        if out is not None and out.items_in >= 5_000:
            ex.stop()
            break
        assert time.monotonic() < deadline
        await asyncio.sleep(0.001)
    assert (await run).ok
    result = await local(rt.executor(wf(1))).run()
    assert result.status == "failed"
    assert result.error is not None
    assert "node 'tally' (test.tally): cannot move its state from 2 to 1" in (
        result.error
    )
    assert "tally[0]" in result.error
    assert "parallelism: 2" in result.error
    # Nothing ran, nothing was lost: the original parallelism resumes.
    again = await local(rt.executor(wf(2))).run()
    assert again.ok, again.error


# --- the restore itself ----------------------------------------------------------


def encode(state: dict[str, Any]) -> bytes:
    return msgspec.msgpack.encode(state)


def test_restore_places_each_key_in_the_instance_owning_its_group() -> None:
    wf = keyed_counts_dag(3)
    graph = validate(wf, default_registry())
    keys: list[Any] = [*range(40), "a", "b", [1, "x"], None, 2.5, True]
    from flowstream.nodes.transform._shared import _slot

    old = {
        "count[0]": encode({"accs": {_slot(k): 1 for k in keys[::2]}}),
        "count[1]": encode({"accs": {_slot(k): 2 for k in keys[1::2]}, "evicted": 3}),
        LAYOUT_KEY: encode({"parallelism": {"count": 2}}),
    }
    restored = restore(graph, old, epoch=7)
    assert restored.moved["count"].old == 2
    assert restored.moved["count"].new == 3
    assert restored.moved["count"].keys == len(keys)
    placed: dict[Any, int] = {}
    for i in range(3):
        state = msgspec.msgpack.decode(restored.states[f"count[{i}]"])
        for slot in state["accs"]:
            placed[slot] = i
        assert state["evicted"] == (3 if i == 0 else 0)
    assert placed == {_slot(k): owner(key_group(k), 3) for k in keys}
    assert read_layout({LAYOUT_KEY: encode(msgspec.to_builtins(restored.layout))})


def keyed_counts_dag(par: int) -> Workflow:
    return (
        Workflow("keyed-counts", mode="stream")
        .node("numbers", "source.range", stop=10)
        .node("count", "transform.scan", op="count", key="x % 7", parallelism=par)
        .node("out", "sink.collect")
        .connect("numbers -> count")
        .connect("count -> out")
    )


def test_restore_without_a_layout_replaces_keyed_state_by_group() -> None:
    # An epoch written without a layout (3 instances, the last one empty so
    # not stored) restored at 2: the ids alone would say 2 -> 2.
    graph = validate(keyed_counts_dag(2), default_registry())
    keys = list(range(50))
    old_owner = {k: owner(key_group(k), 3) for k in keys}
    old = {
        f"count[{i}]": encode({"accs": {k: 1 for k in keys if old_owner[k] == i}})
        for i in (0, 1)
    }
    restored = restore(graph, old, epoch=1)
    for i in (0, 1):
        state = msgspec.msgpack.decode(restored.states[f"count[{i}]"])
        assert all(owner(key_group(k), 2) == i for k in state["accs"])


def test_a_key_that_cannot_be_recomputed_is_refused() -> None:
    graph = validate(keyed_counts_dag(1), default_registry())
    old = {
        "count[0]": encode({"accs": {"\x00{not json": 1}}),
        "count[1]": encode({"accs": {}}),
        LAYOUT_KEY: encode({"parallelism": {"count": 2}}),
    }
    with pytest.raises(RescaleError, match=r"node 'count' \(transform.scan\)"):
        restore(graph, old, epoch=1)


def test_unknown_state_entries_are_refused_rather_than_dropped() -> None:
    graph = validate(keyed_counts_dag(1), default_registry())
    old = {
        "count[0]": encode({"accs": {}, "future": 1}),
        LAYOUT_KEY: encode({"parallelism": {"count": 2}}),
    }
    with pytest.raises(RescaleError, match="does not know: \\['future'\\]"):
        restore(graph, old, epoch=1)


def test_stateless_hooks_deal_out_held_items_and_keep_counts() -> None:
    registry = default_registry()
    delay = registry.get("time.delay").rescale
    log = registry.get("debug.log").rescale
    assert delay is not None
    assert log is not None
    held = delay([{"held": [1, 2, 3]}, {"held": [4]}, {}], 2, lambda k: 0)
    assert held == [{"held": [1, 3]}, {"held": [2, 4]}]
    assert log([{"seq": 5}, {"seq": 7}], 3, lambda k: 0) == [
        {"seq": 12},
        {"seq": 0},
        {"seq": 0},
    ]
