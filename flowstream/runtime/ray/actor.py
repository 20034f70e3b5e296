"""The actor that runs one slot of a graph with the local executor.

(It gets it from `create_executor` with ``backend="local"``, like any other
user of the protocol.)

Each actor gets the workflow (JSON) and the node types it names
(`nodetypes.NodeTypes`, handed over by the driver: the runtime builds no
default registry) and validates and expands it itself, so nothing but plain
data, references to node types and actor handles crosses processes; the
expansion is deterministic, so every actor cuts the same graph the same way.
The batches of the edges between slots cross on connections of their own
(`edges`): each actor listens on its node's address (``listen``) before the
driver hands every actor the others' addresses (``prepare``).

Under checkpoints the actor's executor checkpoints for the coordinator in the
driver (`checkpointing.delegated`): the driver starts each epoch here
(``checkpoint``), collects the snapshots (``checkpoint``, ``ready_states``)
and says when an epoch is committed (``decide``). In DAG mode it records
its completed one-shot nodes instead (`checkpointing.completions`), which
the driver takes (``taken``) into its store.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import msgspec

from ...core.workflow import RetryWorkflow, StopWorkflow, Workflow
from ..backends import create_executor
from ..checkpointing.completions import (
    DelegatedCompletions,
    RecordsUnder,
    decode_outputs,
)
from ..checkpointing.delegated import CheckpointsUnder, DelegatedCoordinator
from ..events import EventBus
from ..options import RunOptions
from ..validation import validate
from .edges import (
    EdgeMeter,
    Inbox,
    Listener,
    PeerGone,
    Receive,
    Send,
    open_inbox,
    receive,
    send,
)
from .probe import OutputSample
from .slots import cut, remote_edges, slots_of

if TYPE_CHECKING:
    from ...core.events import NodeStats
    from ...core.node import NodeSpec
    from ...core.workflow import Connection
    from ..channel import ChannelStatistics
    from ..protocol import Executor
    from ..result import RunResult
    from .nodetypes import NodeTypes

__all__ = ["SlotActor"]


class SlotActor:
    """One slot of a run (made remote by the executor: ``ray.remote(SlotActor)``).

    Methods are called in this order: ``assign`` (a reused actor), then
    ``listen`` and ``prepare`` (every actor, before any runs), ``run``;
    ``stop``, ``cancel``, ``statistics`` and ``meters`` from the driver at
    any time, and under checkpoints ``checkpoint``,
    ``ready_states``, ``decide`` and ``stop_epochs`` (DAG mode: ``taken``).
    """

    def __init__(
        self, workflow: bytes, types: NodeTypes, slot: int, options: dict[str, Any]
    ) -> None:
        self.assign(workflow, types, slot, options)

    def assign(
        self, workflow: bytes, types: NodeTypes, slot: int, options: dict[str, Any]
    ) -> None:
        """Take a slot of a run: everything of an earlier run here is dropped.

        The driver hands an actor whose run completed to its next run
        (`pool`) rather than start a process again.
        """
        # The driver keeps the checkpoint store and retries whole runs: the
        # actors never open the store, and a slot never retries its part alone.
        decoded = msgspec.json.decode(workflow, type=Workflow)
        handling = decoded.error_handling
        self.workflow = msgspec.structs.replace(
            decoded,
            checkpoint=None,
            error_handling=StopWorkflow()
            if isinstance(handling, RetryWorkflow)
            else handling,
        )
        self.types = types
        self.slot = slot
        # The driver's output probe stays there: this slot keeps a sample of
        # its outputs for the driver to poll (`probe`).
        sampled = options.pop("sample_outputs", False)
        self.sample = OutputSample() if sampled else None
        probe = self.sample.take if self.sample is not None else None
        self.options = RunOptions(**options, backend="local", output_probe=probe)
        self.inboxes: dict[int, Inbox] = {}
        self.listener: Listener | None = None
        self.meters: dict[int, EdgeMeter] = {}
        self.executor: Executor | None = None
        self.coord: DelegatedCoordinator | None = None
        self.completions: DelegatedCompletions | None = None

    async def listen(self, token: bytes) -> tuple[str, int]:
        """Take this slot's incoming edges on a free port; return the address.

        Only a connection that presents ``token`` (the run's) is read.
        """
        import ray

        self.listener = Listener(token, self.inboxes, self._barrier)
        host: str = ray.util.get_node_ip_address()  # type: ignore[no-untyped-call]
        return await self.listener.start(host)

    def _barrier(self, epoch: int) -> None:
        """A barrier of ``epoch`` came in-band: the epoch starts here at once."""
        assert self.coord is not None, "barriers come only under checkpoints"
        self.coord.advance(epoch)

    async def prepare(
        self,
        addresses: list[tuple[str, int]],
        token: bytes,
        window: int,
        restored: tuple[int, dict[str, bytes]] | None = None,
        poison: dict[str, dict[str, str]] | None = None,
    ) -> list[str]:
        """Build this slot's graph and executor; return its node ids.

        Args:
            addresses: Every slot's `listen` address, by slot.
            token: The run's token, which the receivers check.
            window: The credit window of each edge.
            restored: Under checkpoints: the last committed epoch and its
                node states (of every slot: this one takes its own); in DAG
                mode the outputs of the nodes completed before, MessagePack
                by node id (`checkpointing.completions`).
            poison: Under checkpoints: the records the nodes send to their
                dead letters when they fail again (`checkpointing.poison`).
        """
        graph = validate(self.workflow, self.types.registry())
        slots = slots_of(graph)
        edges = remote_edges(graph, slots)

        def receiver(i: int, conn: Connection) -> tuple[NodeSpec, Any]:
            inbox = self.inboxes[i] = open_inbox()
            return receive, Receive(inbox=inbox)

        def sender(i: int, conn: Connection) -> tuple[NodeSpec, Any]:
            meter = self.meters[i] = EdgeMeter()
            address = addresses[slots[conn.to_node]]
            config = Send(
                address=address, token=token, edge=i, window=window, meter=meter
            )
            return send, config

        part = cut(graph, self.slot, slots, edges, receiver, sender)
        self.executor = create_executor(part, EventBus(), self.options)
        if restored is not None and self.options.mode == "dag":
            self.completions = DelegatedCompletions()
            assert isinstance(self.executor, RecordsUnder)
            done = {
                k: decode_outputs(v) for k, v in restored[1].items() if k in part.nodes
            }
            self.executor.record_under(self.completions, done)
        elif restored is not None:
            epoch, states = restored
            in_band = frozenset(
                gid for gid, g in part.nodes.items() if g.spec is receive
            )
            self.coord = DelegatedCoordinator(epoch + 1, in_band)
            assert isinstance(self.executor, CheckpointsUnder)
            mine = {k: v for k, v in states.items() if k in part.nodes}
            self.executor.checkpoint_under(self.coord, epoch, mine, poison)
        return list(part.nodes)

    async def run(self) -> RunResult:
        """Run this slot to its end."""
        assert self.executor is not None, "prepare first"
        try:
            return await self.executor.run()
        finally:
            if self.listener is not None:
                await self.listener.aclose()
            if self.coord is not None:
                self.coord.ended()
            if self.completions is not None:
                self.completions.ended()

    # --- checkpoints: called by the driver --------------------------------------

    async def checkpoint(self, epoch: int) -> dict[str, bytes] | None:
        """Start ``epoch`` here; this slot's node states once it is snapshotted."""
        assert self.coord is not None
        return await self.coord.checkpoint(epoch)

    async def ready_states(self) -> dict[str, bytes] | None:
        """This slot's whole snapshot at the start or after the drain."""
        assert self.coord is not None
        return await self.coord.ready_states()

    async def decide(self, epoch: int) -> None:
        """Epoch ``epoch`` is committed: sources go on, sinks commit."""
        assert self.coord is not None
        await self.coord.decide(epoch)

    async def taken(self) -> list[tuple[str, bytes]] | None:
        """DAG mode: the nodes completed since the last call, once there are.

        (Node id, outputs as MessagePack) pairs; None once the run ended and
        all were taken.
        """
        assert self.completions is not None
        return await self.completions.taken()

    def stop_epochs(self) -> None:
        """No more epochs in this run (the one after the drain follows)."""
        if self.coord is not None:
            self.coord.stop_epochs()

    def failure(self) -> tuple[bool, tuple[str, Any] | None]:
        """How this slot's run failed.

        Whether only because a process it sent to went away (a consequence:
        that process's failure is the run's), and the node and record it
        failed on, if it failed on one (none for a consequence), for
        poison-record accounting under checkpoints.
        """
        ex = self.executor
        if not isinstance(ex, CheckpointsUnder):
            return False, None
        if isinstance(ex.failed_with(), PeerGone):
            return True, None
        return False, ex.failed_record()

    def sample_outputs(self) -> list[tuple[str, str, bytes]]:
        """The latest records each output collected since the last call."""
        return self.sample.drain() if self.sample is not None else []

    def ping(self) -> int:
        """This actor's process id (the driver's health check; tests kill it)."""
        return os.getpid()

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
        """Per sending edge: (batches, bytes, most frames un-acknowledged)."""
        return {i: (m.batches, m.bytes, m.peak_unacked) for i, m in self.meters.items()}
