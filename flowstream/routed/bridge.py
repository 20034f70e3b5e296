"""A routed flow as a node of a dataflow: ``routed.flow``, `flow_node`.

For each item, the node runs the flow once, with the item in the run's store
under ``input_key`` (``"input"``), and emits the flow's result on ``out``, in
input order. Up to ``concurrency`` runs are in flight at once, within each
batch the node receives (batches are large under load and single items when
items trickle in, so a busy stream gets the concurrency it needs). A run that
fails sends its item to the node's ``error`` port with the reason; the stream
goes on. Each run has its own store namespace, so runs never share keys.

In a workflow file the flow is a routed workflow file, or a `Flow` object
named as ``"module:attr"``::

    - id: login
      type: routed.flow
      config: {flow: examples/routed_login.yaml, concurrency: 16}

In Python, ``flow.as_node("auth.login")`` makes a node type bound to a flow.
The command line registers ``routed.flow``; elsewhere register `ROUTED_NODES`
(or use `dataflow_registry`).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import msgspec

from ..core.codec import DOCUMENT_FORMATS
from ..core.node import node
from ..engine import default_registry

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from ..core.node import NodeContext, NodeSpec
    from ..runtime.registry import NodeRegistry
    from .flow import Flow
    from .run import FlowResult

__all__ = [
    "ROUTED_NODES",
    "RoutedFlowConfig",
    "dataflow_registry",
    "flow_node",
    "run_items",
]


def _is_file(ref: str) -> bool:
    return any(ref.lower().endswith(suffix) for suffix in DOCUMENT_FORMATS)


class RoutedFlowConfig(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True
):
    """Config of ``routed.flow``.

    Attributes:
        flow: A routed workflow file (relative to the working directory), or
            ``"module:attr"`` naming a `Flow`.
        concurrency: How many flow runs may be in flight at once.
        input_key: The store key that holds the item during its run.
    """

    flow: str
    concurrency: int = 8
    input_key: str = "input"

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            msg = f"concurrency must be >= 1, got {self.concurrency}"
            raise ValueError(msg)
        if not _is_file(self.flow) and ":" not in self.flow:
            known = ", ".join(DOCUMENT_FORMATS)
            msg = (
                f"flow {self.flow!r} must be a workflow file ({known}) "
                "or 'module:attr' naming a Flow"
            )
            raise ValueError(msg)


async def run_items(
    flow: Flow, items: list[Any], *, concurrency: int, input_key: str, ctx: NodeContext
) -> list[Any]:
    """Run ``flow`` once per item, at most ``concurrency`` at a time.

    Returns the results of the runs that completed, in item order; the items
    whose run failed go to ``ctx.dead_letter``.
    """
    results: list[FlowResult | None] = [None] * len(items)
    if len(items) == 1 or concurrency == 1:
        for i, item in enumerate(items):
            results[i] = await flow.arun(inputs={input_key: item})
    else:
        indexes = iter(range(len(items)))

        async def worker() -> None:
            # Each worker takes the next index when it is free: bounded
            # concurrency without a task per item.
            for i in indexes:
                results[i] = await flow.arun(inputs={input_key: items[i]})

        async with asyncio.TaskGroup() as tg:
            for _ in range(min(concurrency, len(items))):
                tg.create_task(worker())
    out: list[Any] = []
    for item, result in zip(items, results, strict=True):
        assert result is not None
        if result.ok:
            out.append(result.result)
        else:
            ctx.dead_letter(item, f"flow {flow.name!r} failed: {result.error}")
    return out


def flow_node(
    flow: Flow, type_id: str, *, concurrency: int = 8, input_key: str = "input"
) -> NodeSpec:
    """Return a node type (no config) that runs ``flow`` once per item.

    Raises:
        ValueError: ``concurrency`` is below 1, or ``type_id`` is not
            ``category.verb``.
    """
    if concurrency < 1:
        msg = f"concurrency must be >= 1, got {concurrency}"
        raise ValueError(msg)

    class BoundFlowNode:
        async def initialize(self, ctx: NodeContext) -> None:
            return None

        async def shutdown(self) -> None:
            return None

        async def execute(
            self, inp: AsyncIterator[list[Any]], *, ctx: NodeContext
        ) -> AsyncIterator[list[Any]]:
            async for batch in inp:
                yield await run_items(
                    flow, batch, concurrency=concurrency, input_key=input_key, ctx=ctx
                )

    BoundFlowNode.__doc__ = f"Run the routed flow {flow.name!r} once per item."
    spec: NodeSpec = node(type_id, batched=True)(BoundFlowNode)
    return spec


class RoutedFlowNode:
    """Run a routed flow once per item and emit each run's result.

    Each item starts a fresh run with the item in the store under
    ``input_key``; results leave in input order, and an item whose run fails
    goes to ``error``. Stream-safe.

    Example:
        ``{id: login, type: routed.flow, config: {flow: examples/routed_login.yaml}}``
        turns each incoming item into that flow's result.
    """

    def __init__(self, config: RoutedFlowConfig) -> None:
        self.config = config
        self.flow: Flow | None = None

    async def initialize(self, ctx: NodeContext) -> None:
        from .files import load_flow

        self.flow = load_flow(self.config.flow)

    async def shutdown(self) -> None:
        return None

    async def execute(
        self, inp: AsyncIterator[list[Any]], *, ctx: NodeContext
    ) -> AsyncIterator[list[Any]]:
        flow = self.flow
        assert flow is not None, "initialize() loads the flow"
        cfg = self.config
        async for batch in inp:
            yield await run_items(
                flow,
                batch,
                concurrency=cfg.concurrency,
                input_key=cfg.input_key,
                ctx=ctx,
            )


routed_flow = node("routed.flow", config=RoutedFlowConfig, batched=True)(RoutedFlowNode)

ROUTED_NODES: tuple[NodeSpec, ...] = (routed_flow,)
"""The dataflow node types of this package (``routed.flow``)."""


def dataflow_registry(registry: NodeRegistry | None = None) -> NodeRegistry:
    """Return ``registry`` (default: `default_registry()`) with `ROUTED_NODES`."""
    registry = registry if registry is not None else default_registry()
    for spec in ROUTED_NODES:
        if spec.type_id not in registry:
            registry.register(spec)
    return registry
