"""Helpers for testing node types and workflows (used by flowstream's own tests).

`run_nodes` runs one node type on lists of items, through the real runtime,
and returns what it emitted on each port::

    outputs = await run_nodes(scale, {"in": [1, 2, 3]}, config={"factor": 10})
    assert outputs["out"] == [10, 20, 30]

`assert_emits` does the same and checks the outputs, fused and unfused, and
that the run left no task behind.

`run_virtual` runs a coroutine on an event loop whose clock jumps ahead to the
next timer whenever nothing is ready, so timers, windows and retry delays are
tested deterministically and instantly, with no real sleeping.
"""

from __future__ import annotations

import asyncio
import selectors
from typing import TYPE_CHECKING, Any, TypeVar

from .core.workflow import Workflow
from .engine import FlowRuntime, default_registry

if TYPE_CHECKING:
    from collections.abc import Coroutine, Mapping, Sequence

    from .core.node import NodeSpec
    from .runtime.registry import NodeRegistry
    from .runtime.result import RunResult

__all__ = [
    "VirtualTimeLoop",
    "assert_emits",
    "run_nodes",
    "run_virtual",
    "run_workflow",
]

T = TypeVar("T")

_UNDER_TEST = "under_test"


def _registry(spec: NodeSpec, registry: NodeRegistry | None) -> NodeRegistry:
    registry = (
        registry if registry is not None else default_registry(entry_points=False)
    )
    if spec.type_id not in registry or registry.get(spec.type_id) is not spec:
        registry.register(spec, replace=True)
    return registry


async def run_workflow(
    workflow: Workflow, registry: NodeRegistry | None = None, **options: Any
) -> RunResult:
    """Run a workflow with a fresh runtime; options as for `FlowRuntime.arun`."""
    runtime = FlowRuntime(registry or default_registry(entry_points=False))
    return await runtime.arun(workflow, **options)


async def run_nodes(
    spec: NodeSpec,
    inputs: Mapping[str, Sequence[Any]] | Sequence[Any] = (),
    config: Mapping[str, Any] | None = None,
    *,
    registry: NodeRegistry | None = None,
    **options: Any,
) -> dict[str, list[Any]]:
    """Run one node type on lists of items and return its outputs by port.

    Args:
        spec: The node type under test.
        inputs: Items per input port, or one list for a single-input node.
        config: The node's config, as it would appear in a workflow file.
        registry: Where other types come from (default: the built-ins).
        **options: `RunOptions` fields (``fuse``, ``mode``, ...).

    Raises:
        AssertionError: The run did not complete; the message has the error.
    """
    if not isinstance(inputs, dict):
        takes_input = bool(spec.inputs) or spec.ports is not None
        inputs = {"in": list(inputs)} if takes_input else {}
    wf = Workflow("test").node(_UNDER_TEST, spec.type_id, dict(config or {}))
    for port, items in inputs.items():
        source = f"input_{port}"
        wf.node(source, "source.values", values=list(items))
        wf.connect(source, f"{_UNDER_TEST}.{port}")
    result = await run_workflow(wf, _registry(spec, registry), **options)
    assert result.status == "completed", f"run {result.status}: {result.error}"
    outputs = dict(result.outputs.get(_UNDER_TEST, {}))
    if result.dead_letters:
        outputs["error"] = [d.item for d in result.dead_letters]
    return outputs


async def assert_emits(
    spec: NodeSpec,
    inputs: Mapping[str, Sequence[Any]] | Sequence[Any],
    expected: Mapping[str, Sequence[Any]] | Sequence[Any],
    config: Mapping[str, Any] | None = None,
    *,
    registry: NodeRegistry | None = None,
) -> None:
    """Check a node's outputs, fused and unfused, and that nothing leaked.

    ``expected`` is the list for port ``out``, or lists by port.

    Raises:
        AssertionError: The outputs differ, or a task outlived the run.
    """
    want = (
        {"out": list(expected)}
        if not isinstance(expected, dict)
        else {k: list(v) for k, v in expected.items()}
    )
    before = asyncio.all_tasks()
    for fuse in (True, False):
        got = await run_nodes(spec, inputs, config, registry=registry, fuse=fuse)
        got = {k: v for k, v in got.items() if v or k in want}
        label = "fused" if fuse else "unfused"
        assert got == want, f"{spec.type_id} ({label}) emitted {got}, expected {want}"
    leaked = asyncio.all_tasks() - before
    assert not leaked, f"tasks left behind: {leaked}"


class _JumpingSelector(selectors.DefaultSelector):
    """A selector that, instead of sleeping until the next timer, jumps to it."""

    loop: VirtualTimeLoop

    def select(self, timeout: float | None = None) -> list[Any]:
        ready = super().select(0)
        if ready or timeout == 0:
            return ready
        if timeout is None:
            # Nothing scheduled at all: only real I/O can wake the loop.
            return super().select(None)
        self.loop.advance(timeout)
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop whose ``time()`` is virtual: idle waits take no real time.

    Whenever no callback is ready, the clock jumps to the next timer. Real I/O
    still works, but a test mixing sockets and virtual time sees timers fire
    early relative to the network: keep such tests on the real loop.

    Attributes:
        epoch: The wall-clock time (epoch seconds) at virtual time 0, read by
            nodes that stamp processing time as epoch milliseconds (0: loop
            time 1.5 s reads as 1500 ms), so their output is deterministic.
    """

    epoch: float = 0.0

    def __init__(self) -> None:
        selector = _JumpingSelector()
        super().__init__(selector)
        selector.loop = self
        self._now = 0.0

    def time(self) -> float:
        """Return the virtual time in seconds (starts at 0)."""
        return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock forward (the loop does this itself when idle)."""
        self._now += max(0.0, seconds)


def run_virtual(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion on a fresh `VirtualTimeLoop`."""
    loop = VirtualTimeLoop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
