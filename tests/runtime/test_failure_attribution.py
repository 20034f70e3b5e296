"""A failure is blamed on the node where it happened, never on the next one.

A source fused with the node after it used to raise through that node's
input: the downstream node took the blame, and the record it had last seen
was counted as a poison record by checkpointed runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec
import pytest

from flowstream import FlowRuntime, NodeFailed, Workflow, default_registry, node

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path


class Fails(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    after: int = 2


@node("test.failing_source", config=Fails)
async def failing_source(*, config: Fails) -> AsyncIterator[Any]:
    """Emit ``after`` records, then fail like a deep frame did."""
    for i in range(config.after):
        yield {"i": i}
    msg = "maximum recursion depth exceeded while deserializing an object"
    raise RecursionError(msg)


@node("test.passthrough")
async def passthrough(inp: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """A generator node (not a kernel): the source is fused into it."""
    async for item in inp:
        yield item


def runtime() -> FlowRuntime:
    registry = default_registry(entry_points=False)
    registry.register_all([failing_source, passthrough])
    return FlowRuntime(registry)


def graph(mode: str = "dag") -> Workflow:
    return (
        Workflow("blame", mode=mode)  # type: ignore[arg-type]
        .node("src", "test.failing_source")
        .node("next", "test.passthrough")
        .node("out", "sink.collect")
        .connect("src -> next")
        .connect("next -> out")
    )


@pytest.mark.parametrize("fuse", [True, False])
async def test_a_source_failure_names_the_source(fuse: bool) -> None:
    rt = runtime()
    failed: list[NodeFailed] = []
    rt.bus.add_listener(
        lambda e: failed.append(e) if isinstance(e, NodeFailed) else None
    )
    result = await rt.executor(graph(), fuse=fuse).run()
    assert not result.ok
    assert result.error is not None
    assert result.error.startswith("node 'src' (test.failing_source) failed: ")
    assert "RecursionError" in result.error
    assert [e.node_id for e in failed] == ["src"]


async def test_a_source_failure_counts_no_poison_record(tmp_path: Path) -> None:
    store = tmp_path / "ck.db"
    for _ in range(3):
        result = await runtime().executor(graph("stream"), checkpoint=str(store)).run()
        assert not result.ok
        assert result.error is not None
        assert "node 'src'" in result.error
        # No record of the downstream node is blamed, however often it runs.
        assert "poison" not in result.error
        assert "'next'" not in result.error
