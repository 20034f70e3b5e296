"""Fusion at run time: the per-run objects of a plan's segments, and kernels.

The cut into segments is the plan's (`runtime.plan`): a head node followed by
a chain that runs inside the head's task with no channel between them. A node
joins its upstream's chain when fusion is on for the run and both nodes, it
has one input port fed by one connection from the upstream's ``out``, which
feeds nothing else, neither node is a direct one-shot call, and the node is
not ``timed`` (a deadline wait needs a channel to be safe).

Inside a segment, consecutive batch kernels run as `KernelStep`s: a run of
map/filter kernels (at most one filter, so every node's counts stay exact)
becomes one iterator chain per batch, with no list between the nodes.

Fusion is transparent: results are the same with it off (tests run both).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ...core.node import ItemKernel
from ..checkpointing.barriers import Alignment

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable, Iterator

    from ...core.node import NodeSpec
    from ...core.workflow import ErrorHandling, RetryPolicy
    from ..channel import ReceiveChannel, SendChannel
    from ..checkpointing.barriers import SourceBarriers
    from ..context import NodeRuntime
    from ..validation import Graph, GraphNode

__all__ = ["KernelStep", "NodeRun", "Segment", "instance_fields", "kernel_steps"]


@dataclass(eq=False, slots=True)
class NodeRun:
    """A node as one run drives it: instance, counters, policies, wiring."""

    gnode: GraphNode
    rt: NodeRuntime
    instance: Any
    retry: RetryPolicy | None
    handling: ErrorHandling
    direct: bool = False
    # Where each output port's batches go (send halves per port), and where
    # unconnected ports' items are collected (None: nothing is collected).
    sends: dict[str, list[SendChannel[Any]]] = field(default_factory=dict)
    collect: dict[str, list[Any]] | None = None
    max_collected: int | None = None  # collecting.bound
    inputs: dict[str, ReceiveChannel[Any]] = field(default_factory=dict)
    id: str = field(init=False)  # a plain attribute: looked up per node, often
    # Direct calls only: the values waiting on each input port, how many
    # producers have yet to finish, and the direct nodes this one feeds as
    # (node, port, whether the edge carries ``out``).
    port_values: dict[str, list[Any]] | None = None
    waiting: int = 0
    direct_targets: list[tuple[NodeRun, str, bool]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.id = self.gnode.decl.id

    @property
    def spec(self) -> NodeSpec:
        """The node's type."""
        return self.gnode.spec

    def call_target(self) -> Callable[..., Any]:
        """The function to call with the input ports as positional arguments."""
        fn = self.instance.execute
        kwargs: dict[str, Any] = {}
        if self.spec.wants_config and not self.spec.is_class:
            kwargs["config"] = self.gnode.config
        if self.spec.wants_ctx:
            kwargs["ctx"] = self.rt
        if not kwargs:
            return fn  # type: ignore[no-any-return]
        return lambda *args: fn(*args, **kwargs)


@dataclass(eq=False)
class Segment:
    """A head node and the chain fused behind it: one task."""

    head: NodeRun
    chain: list[NodeRun]
    is_source: bool
    # Set while the task waits on the source itself: a stop cancels exactly
    # that wait, never an item that is already on its way downstream.
    pulling: asyncio.Timeout | None = None
    # Set while a batch is being handed on (the segment is not at rest).
    delivering: bool = False
    # Checkpoints (`runtime.checkpointing.barriers`): a source's epochs, and
    # the alignment of the barriers coming in from the segment's producers.
    barriers: SourceBarriers | None = None
    alignment: Alignment = field(default_factory=Alignment)

    @property
    def tail(self) -> NodeRun:
        """The last node, whose ``out`` leaves the segment."""
        return self.chain[-1] if self.chain else self.head

    @property
    def nodes(self) -> list[NodeRun]:
        """Every node of the segment, head first."""
        return [self.head, *self.chain]


class KernelStep:
    """One call per batch in a kernel stage: a kernel, or a composed run.

    A step of item kernels also has ``over``: the composed chain over an
    iterator of items, lazy and one item deep (each item goes through every
    kernel before the next is taken), so that when a kernel fails, the
    items before the failing one are done and the iterator tells which.
    """

    __slots__ = ("filter_at", "next", "over", "parts", "run")

    def __init__(
        self, parts: list[tuple[NodeRun, Callable[[list[Any]], list[Any]]]]
    ) -> None:
        self.parts = parts
        self.next: NodeRuntime | None = None  # whose input this step's output is
        kinds = [k.kind if isinstance(k, ItemKernel) else "" for _, k in parts]
        self.filter_at = kinds.index("filter") if "filter" in kinds else None
        self.over: Callable[[Iterator[Any]], Iterator[Any]] | None = None
        if all(kinds):
            chain = [k.apply for _, k in parts]  # type: ignore[attr-defined]
            if len(chain) == 1:
                self.over = chain[0]
            else:

                def over(items: Iterator[Any]) -> Iterator[Any]:
                    for apply in chain:
                        items = apply(items)
                    return items

                self.over = over
        if len(parts) == 1:
            self.run = parts[0][1]
        else:
            assert self.over is not None  # only item kernels are composed
            composed = self.over

            def run(batch: list[Any]) -> list[Any]:
                return list(composed(iter(batch)))

            self.run = run

    def count(self, size_in: int, size_out: int) -> None:
        """Count every node's items: before the filter all pass, after it some."""
        at = self.filter_at
        for j, (n, _) in enumerate(self.parts):
            if j:
                n.rt.items_in += size_in if at is None or j <= at else size_out
            n.rt.items_out += size_out if at is None or j >= at else size_in


def kernel_steps(
    kernels: list[tuple[NodeRun, Callable[[list[Any]], list[Any]]]],
) -> list[KernelStep]:
    """Group consecutive item kernels (at most one filter each) into steps."""
    groups: list[list[tuple[NodeRun, Callable[[list[Any]], list[Any]]]]] = []
    for n, kernel in kernels:
        last = groups[-1] if groups else None
        composable = isinstance(kernel, ItemKernel)
        if (
            last is not None
            and composable
            and all(isinstance(k, ItemKernel) for _, k in last)
            and not (
                kernel.kind == "filter" and any(k.kind == "filter" for _, k in last)  # type: ignore[attr-defined]
            )
        ):
            last.append((n, kernel))
        else:
            groups.append([(n, kernel)])
    steps = [KernelStep(g) for g in groups]
    for step, following in itertools.pairwise(steps):
        step.next = following.parts[0][0].rt
    return steps


def instance_fields(graph: Graph, g: GraphNode) -> dict[str, Any]:
    """Which instance of which declared node ``g`` is (nothing for a plain node).

    Instance ids are ``f"{declared}[{i}]"`` (`parallel.instance_ids`); a node
    that runs one instance keeps its declared id. A Ray slot's graph has no
    expansion of its own: the count then comes from the workflow.
    """
    declared = g.instance_of
    if declared is None or g.id == declared:
        return {}
    if graph.parallel is not None:
        count = graph.parallel.parallelism[declared]
    else:
        wf = graph.workflow
        decl = next((n for n in wf.nodes if n.id == declared), None)
        own = decl.parallelism if decl is not None else None
        count = own if own is not None else wf.parallelism
    return {
        "instance_of": declared,
        "instance": int(g.id[len(declared) + 1 : -1]),
        "instances": count,
    }
