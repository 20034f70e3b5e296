"""The actor that runs one slot of a graph with the local executor.

(It gets it from `create_executor` with ``backend="local"``, like any other
user of the protocol.)

Each actor gets the workflow (JSON) and validates and expands it itself, so
nothing but plain data and actor handles crosses processes; the expansion is
deterministic, so every actor cuts the same graph the same way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from ...core.workflow import Workflow
from ..backends import create_executor
from ..events import EventBus
from ..options import RunOptions
from ..registry import NodeRegistry
from ..validation import validate
from .edges import EdgeMeter, Inbox, Receive, Send, receive, send
from .slots import cut, remote_edges, slots_of

if TYPE_CHECKING:
    from ...core.events import NodeStats
    from ...core.node import NodeSpec
    from ...core.workflow import Connection
    from ..channel import ChannelStatistics
    from ..protocol import Executor
    from ..result import RunResult

__all__ = ["SlotActor"]


class SlotActor:
    """One slot of a run (made remote by the executor: ``ray.remote(SlotActor)``).

    Methods are called in this order: ``prepare`` (every actor, before any
    runs), ``run``; ``push`` by the other actors while running; ``stop``,
    ``cancel``, ``statistics`` and ``meters`` from the driver at any time.
    """

    def __init__(self, workflow: bytes, slot: int, options: dict[str, Any]) -> None:
        self.workflow = msgspec.json.decode(workflow, type=Workflow)
        self.slot = slot
        self.options = RunOptions(**options, backend="local")
        self.inboxes: dict[int, Inbox] = {}
        self.meters: dict[int, EdgeMeter] = {}
        self.executor: Executor | None = None

    async def prepare(self, handles: list[Any], window: int) -> list[str]:
        """Build this slot's graph and executor; return its node ids."""
        graph = validate(self.workflow, NodeRegistry.default())
        slots = slots_of(graph)
        edges = remote_edges(graph, slots)

        def receiver(i: int, conn: Connection) -> tuple[NodeSpec, Any]:
            inbox = self.inboxes[i] = Inbox()
            return receive, Receive(inbox=inbox)

        def sender(i: int, conn: Connection) -> tuple[NodeSpec, Any]:
            meter = self.meters[i] = EdgeMeter()
            target = handles[slots[conn.to_node]]
            return send, Send(target=target, edge=i, window=window, meter=meter)

        part = cut(graph, self.slot, slots, edges, receiver, sender)
        self.executor = create_executor(part, EventBus(), self.options)
        return list(part.nodes)

    async def push(self, edge: int, seq: int, payload: bytes | None) -> None:
        """Take batch ``seq`` of remote edge ``edge`` (returns when it is queued)."""
        await self.inboxes[edge].push(seq, payload)

    async def run(self) -> RunResult:
        """Run this slot to its end."""
        assert self.executor is not None, "prepare first"
        return await self.executor.run()

    def stop(self) -> None:
        """Stop this slot's sources gracefully (again: cancel)."""
        if self.executor is not None:
            self.executor.stop()

    def cancel(self) -> None:
        """Cancel this slot's run."""
        if self.executor is not None:
            self.executor.cancel()

    def statistics(
        self,
    ) -> tuple[dict[str, NodeStats], dict[tuple[str, str], ChannelStatistics]]:
        """Each node's counters and each channel's fill, now."""
        if self.executor is None:
            return {}, {}
        return self.executor.statistics(), self.executor.channel_statistics()

    def edge_meters(self) -> dict[int, tuple[int, int, int]]:
        """Per sending edge: (batches, bytes, most pushes un-acknowledged)."""
        return {i: (m.batches, m.bytes, m.peak_unacked) for i, m in self.meters.items()}
