"""max_keys / on_max_keys on keyed stateful nodes, in every mode.

Always-new keys are the case that grew without bound (issue 11): with a small
``max_keys`` the state stays bounded and the evicted records come out (or the
run fails with a message naming the node and the bound).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import pytest
from click.testing import CliRunner

from flowstream import FlowRuntime, Workflow, default_registry
from flowstream.cli import cli
from flowstream.core.workflow import Checkpoint

if TYPE_CHECKING:
    from pathlib import Path

N = 500
MAX = 10


@pytest.fixture(params=["fused", "unfused"])
def fuse(request: pytest.FixtureRequest) -> bool:
    return bool(request.param == "fused")


@pytest.fixture(params=["dag", "stream"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def flow(node_type: str, config: dict[str, Any], items: list[Any]) -> Workflow:
    return (
        Workflow("bounded")
        .node("src", "source.values", values=items)
        .node("w", node_type, config)
        .node("out", "sink.collect")
        .connect("src -> w")
        .connect("w -> out")
    )


async def run(wf: Workflow, fuse: bool, mode: str) -> Any:
    runtime = FlowRuntime(default_registry(entry_points=False))
    return await runtime.arun(wf, fuse=fuse, mode=mode)


def new_keys(n: int = N) -> list[dict[str, Any]]:
    """Every item a new key, all in one 10 s window (event time)."""
    return [{"k": f"k{i}", "ts": i} for i in range(n)]


WINDOW = {"key_field": "k", "timestamp_field": "ts", "max_keys": MAX}


@pytest.mark.parametrize(
    ("node_type", "extra"),
    [
        ("window.tumbling", {"size_ms": 10_000}),
        ("window.sliding", {"size_ms": 10_000, "slide_ms": 10_000}),
        ("window.session", {"gap_ms": 60_000}),
    ],
)
async def test_windows_evict_the_oldest_and_emit_it(
    node_type: str, extra: dict[str, Any], fuse: bool, mode: str
) -> None:
    config = {**WINDOW, **extra, "on_max_keys": "evict_oldest"}
    result = await run(flow(node_type, config, new_keys()), fuse, mode)
    assert result.ok, result.error
    out = result.output("out")
    evicted = [r for r in out if r.get("evicted")]
    # Each key past the bound pushed the oldest one out while the input ran:
    # never more than MAX records held. Nothing is lost.
    assert len(evicted) == N - MAX
    assert [r["key"] for r in evicted] == [f"k{i}" for i in range(N - MAX)]
    assert sorted(r["key"] for r in out) == sorted(f"k{i}" for i in range(N))
    assert sum(r["count"] for r in out) == N


@pytest.mark.parametrize("node_type", ["window.tumbling", "window.session"])
async def test_windows_fail_at_max_keys_naming_node_and_bound(
    node_type: str, fuse: bool, mode: str
) -> None:
    extra = {"size_ms": 10_000} if node_type == "window.tumbling" else {"gap_ms": 1e5}
    result = await run(flow(node_type, {**WINDOW, **extra}, new_keys()), fuse, mode)
    assert not result.ok
    assert "'w'" in str(result.error)
    assert "max_keys=10 reached" in str(result.error)
    assert "StateLimitError" in str(result.error)


async def test_windows_under_the_bound_are_unchanged(fuse: bool, mode: str) -> None:
    # Keys repeat: 5 keys, bound 10. Nothing is evicted.
    items = [{"k": f"k{i % 5}", "ts": i} for i in range(N)]
    config = {**WINDOW, "size_ms": 10_000, "on_max_keys": "evict_oldest"}
    result = await run(flow("window.tumbling", config, items), fuse, mode)
    assert result.ok, result.error
    out = result.output("out")
    assert [r["count"] for r in out] == [N // 5] * 5
    assert not any(r.get("evicted") for r in out)


async def test_scan_evicts_the_least_recently_updated_key(
    fuse: bool, mode: str
) -> None:
    items = [{"k": "hot" if i % 2 else f"k{i}", "n": 1} for i in range(N)]
    config = {"op": "sum", "key": "x.k", "value": "x.n", "max_keys": 3}
    config["on_max_keys"] = "evict_oldest"
    result = await run(flow("transform.scan", config, items), fuse, mode)
    assert result.ok, result.error
    hot = [r["value"] for r in result.output("out") if r["key"] == "hot"]
    # The hot key is updated every other item: never the oldest, never reset.
    assert hot == list(range(1, N // 2 + 1))


async def test_scan_fails_at_max_keys(fuse: bool, mode: str) -> None:
    config = {"op": "count", "key": "x.k", "max_keys": MAX}
    result = await run(flow("transform.scan", config, new_keys()), fuse, mode)
    assert not result.ok
    assert "max_keys=10 reached" in str(result.error)
    assert "StateLimitError" in str(result.error)


async def test_reduce_emits_evicted_keys_early(fuse: bool, mode: str) -> None:
    items = [{"k": f"k{i % 50}"} for i in range(N)]
    config = {"op": "count", "key": "x.k", "max_keys": MAX}
    config["on_max_keys"] = "evict_oldest"
    result = await run(flow("transform.reduce", config, items), fuse, mode)
    assert result.ok, result.error
    out = result.output("out")
    assert sum(r["value"] for r in out) == N
    assert len([r for r in out if not r.get("evicted")]) == MAX


def test_max_keys_below_one_is_a_config_error() -> None:
    runtime = FlowRuntime(default_registry(entry_points=False))
    wf = flow("window.tumbling", {"size_ms": 10, "max_keys": 0}, [])
    with pytest.raises(ValueError, match="max_keys must be >= 1"):
        runtime.validate(wf)


# --- validation warns about unbounded keyed state in stream mode -------------------

UNBOUNDED = """
name: unbounded
mode: stream
nodes:
  - {id: src, type: source.values, config: {values: [{k: a, ts: 0}]}}
  - id: per_key
    type: window.tumbling
    config: {size_ms: 1000, key_field: k, timestamp_field: ts, max_keys: null}
  - {id: global, type: transform.scan, config: {op: count, max_keys: null}}
  - {id: bounded, type: transform.scan, config: {op: count, key: x.k}}
  - {id: out, type: sink.collect}
  - {id: out2, type: sink.collect}
  - {id: out3, type: sink.collect}
connections:
  - src -> per_key
  - src -> global
  - src -> bounded
  - per_key -> out
  - global -> out2
  - bounded -> out3
"""


def test_validate_and_run_warn_but_do_not_fail(tmp_path: Path) -> None:
    path = tmp_path / "unbounded.yaml"
    path.write_text(UNBOUNDED)
    warning = (
        "warning: node 'per_key', max_keys: keyed state with no bound "
        "(max_keys: null) in stream mode"
    )
    for args in (["validate", str(path)], ["run", str(path)]):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, result.output
        # Only the keyed node without a bound: not the global scan (one key),
        # not the scan with the default bound.
        lines = [line for line in result.stderr.splitlines() if "warning" in line]
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith(warning)


def test_no_warning_in_dag_mode() -> None:
    runtime = FlowRuntime(default_registry(entry_points=False))
    config = {"size_ms": 10, "key_field": "k", "max_keys": None}
    graph = runtime.validate(flow("window.tumbling", config, []))
    assert graph.warnings() == []
    assert [p.node for p in graph.warnings("stream")] == ["w"]


# --- a checkpointed stream run that evicts restarts exactly ----------------------

STREAM_N = 100_000


def evicting(store: Path | None) -> Workflow:
    # Key 0 is hot (every other item, never the oldest); the odd items cycle
    # over 301 keys with room for 150: each is evicted before it comes back.
    wf = (
        Workflow("evicting", mode="stream")
        .node("numbers", "source.range", stop=STREAM_N)
        .node(
            "scan",
            "transform.scan",
            op="count",
            key="x % 2 == 0 ? 0 : x % 301",
            max_keys=150,
            on_max_keys="evict_oldest",
        )
        .node("out", "sink.collect")
        .connect("numbers -> scan")
        .connect("scan -> out")
    )
    if store is not None:
        wf.checkpoint = Checkpoint(path=str(store), interval_ms=5)
    return wf


async def run_until(wf: Workflow, after_items: int) -> list[Any]:
    runtime = FlowRuntime(default_registry(entry_points=False))
    executor = runtime.executor(wf, fuse=False)
    run = asyncio.ensure_future(executor.run())
    while not run.done():
        out = executor.statistics().get("out")
        if out is not None and out.items_in >= after_items:
            executor.stop()
            break
        await asyncio.sleep(0.001)
    result = await run
    assert result.ok, result.error
    return list(result.output("out"))


async def test_an_evicting_checkpointed_stream_run_restarts_exactly(
    tmp_path: Path,
) -> None:
    reference = await run_until(evicting(None), after_items=STREAM_N + 1)
    assert len(reference) == STREAM_N
    store = tmp_path / "ckpt.db"
    first = await run_until(evicting(store), after_items=5_000)
    assert 5_000 <= len(first) < STREAM_N
    second = await run_until(evicting(store), after_items=STREAM_N + 1)
    # The hot key's count goes on, the evicted keys start afresh, exactly as
    # in the uninterrupted run: the bound's order survived the checkpoint.
    assert first + second == reference


# --- join.lookup: table keys -----------------------------------------------------


def lookup_flow(**config: Any) -> Workflow:
    table = [{"id": i, "v": i} for i in range(N)]  # every table item a new key
    items = [{"id": 0}, {"id": N - 1}]
    return (
        Workflow("lookup")
        .node("tbl", "source.values", values=table)
        .node("src", "source.values", values=items)
        .node(
            "j", "join.lookup", key="x.id", table_key="x.id", table_first=True, **config
        )
        .node("out", "sink.collect")
        .connect("tbl -> j.table")
        .connect("src -> j.in")
        .connect("j -> out")
    )


async def test_lookup_evicts_the_oldest_table_key(fuse: bool, mode: str) -> None:
    wf = lookup_flow(max_keys=MAX, on_max_keys="evict_oldest")
    result = await run(wf, fuse, mode)
    assert result.ok, result.error
    # The first table key was pushed out long ago; the last is still held.
    assert [r["match"] for r in result.output("out")] == [
        None,
        {"id": N - 1, "v": N - 1},
    ]


async def test_lookup_fails_at_max_keys(fuse: bool, mode: str) -> None:
    result = await run(lookup_flow(max_keys=MAX), fuse, mode)
    assert not result.ok
    assert "'j'" in str(result.error)
    assert "max_keys=10 reached" in str(result.error)
