"""Stream-mode checkpoints: epochs, barriers and their alignment, commits.

The executor's part of the protocol in `runtime.checkpointing` (the store and the
`Coordinator` live there): which segments must report, how a barrier is
counted and passed on, when nodes' hooks run, and the epochs at the start and
after a drain. docs/reliability.md has the contract.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from typing import TYPE_CHECKING, Any

import msgspec

from ..checkpointing.barriers import SourceBarriers, run_epochs
from ..checkpointing.coordinator import Barrier, Coordinator
from ..checkpointing.delegated import DelegatedCoordinator
from ..checkpointing.faults import fault_point
from ..checkpointing.records import CheckpointError
from ..checkpointing.rescale import layout_states

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable

    from ..channel import Control
    from .executor import WorkflowExecutor
    from .fusion import NodeRun, Segment

__all__ = [
    "barrier_hook",
    "barrier_now",
    "committed",
    "coordinate",
    "coordinator",
    "decode_state",
    "encode_state",
    "final_checkpoint",
    "initial_checkpoint",
    "segment_barrier",
]

_state_encoder = msgspec.msgpack.Encoder()
_state_decoder = msgspec.msgpack.Decoder(dict[str, Any])


def encode_state(state: Any) -> bytes:
    """A node state as MessagePack (TypeError/OverflowError if it cannot be)."""
    return _state_encoder.encode(state)


def decode_state(blob: bytes) -> dict[str, Any]:
    """A node state from `encode_state`."""
    return _state_decoder.decode(blob)


def coordinator(ex: WorkflowExecutor, segments: list[Segment]) -> Coordinator:
    """The run's `Coordinator`; refuses what cannot be checkpointed yet.

    Under a coordinator elsewhere (`WorkflowExecutor.checkpoint_under`), that
    one's stand-in in this process.
    """
    for seg in segments:
        head = seg.head
        spec = head.spec
        if len(head.gnode.inputs) > 1 and not (spec.aligned or spec.shape == "call"):
            msg = (
                f"checkpointing cannot align barriers across the inputs of "
                f"node {head.id!r} ({head.spec.type_id}): it reads them "
                "itself; merge into one port (fan-in), or make it a batched "
                "node that reads them with merge_batches (aligned=True)"
            )
            raise CheckpointError(msg)
        for c in seg.head.gnode.inbound:
            if ex._nodes[c.from_node].direct:
                msg = (
                    f"checkpointing does not support one-shot node "
                    f"{c.from_node!r} feeding stream node {seg.head.id!r} yet"
                )
                raise CheckpointError(msg)
            seg.alignment.producers += 1
    coord: Coordinator
    if ex._delegated is not None:
        coord = ex._delegated
        coord.segments = len(segments)
    else:
        assert ex._store is not None
        coord = Coordinator(
            ex._store, ex._run_key, ex._interval, len(segments), ex._epoch + 1
        )
        coord.layout = layout_states(ex._layout)
    for seg in segments:
        if seg.is_source:
            seg.barriers = SourceBarriers(
                functools.partial(_at_rest, seg),
                functools.partial(barrier_now, ex, seg),
            )
    return coord


def _at_rest(seg: Segment) -> bool:
    """A source waiting on its own input, its segment holding nothing.

    Everything it emitted is downstream then, so a barrier marked from
    outside is exact. (Barrier hooks need an await: such a segment is marked
    by its own loop, at its next batch.)
    """
    return (
        seg.pulling is not None
        and not seg.delivering
        and not any(n.rt.pending or n.rt.barrier_hooks for n in seg.nodes)
    )


def barrier_hook(
    ex: WorkflowExecutor, seg: Segment
) -> Callable[[Control], Awaitable[None]]:
    """Count a segment's barriers; pass the barrier once all producers sent it."""

    async def on_control(msg: Control) -> None:
        if type(msg) is Barrier and seg.alignment.arrived(msg.epoch):
            await segment_barrier(ex, seg, msg.epoch)

    return on_control


async def segment_barrier(ex: WorkflowExecutor, seg: Segment, epoch: int) -> None:
    """Flush the segment, run its nodes' barrier hooks, snapshot, pass it on."""
    # Suspending once makes every node of the segment flush what it holds
    # (rebatch flushes on suspension) and the segment deliver it, so what
    # came before the barrier is downstream of it before it is forwarded.
    await asyncio.sleep(0)
    for n in seg.nodes:
        await ex._flush_side(n)
    coord = ex._coord
    if coord is None or not coord.active or epoch != coord.epoch:
        return
    await _barrier_hooks(seg.nodes, epoch)
    barrier_now(ex, seg, epoch)


def barrier_now(ex: WorkflowExecutor, seg: Segment, epoch: int) -> None:
    """Snapshot the segment's nodes and forward the barrier (no awaits)."""
    coord = ex._coord
    if coord is None or not coord.active or epoch != coord.epoch:
        return
    states: dict[str, bytes] = {}
    for n in seg.nodes:
        state = ex.state.nodes.get(n.id)
        if state:
            try:
                states[n.id] = encode_state(state)
            except (TypeError, OverflowError) as exc:
                msg = f"node {n.id!r}: its state cannot be checkpointed: {exc}"
                raise CheckpointError(msg) from exc
        for sends in n.sends.values():
            for s in sends:
                s.send_control(Barrier(epoch))
    if seg.is_source:
        fault_point("barrier_emitted", epoch)
    coord.report(states)
    fault_point("snapshot", epoch)


async def coordinate(ex: WorkflowExecutor, coord: Coordinator) -> None:
    """Run the run's epochs (`checkpointing.barriers.run_epochs`).

    Under a coordinator elsewhere, hand it the sources instead: its epochs
    start by its calls.
    """
    if isinstance(coord, DelegatedCoordinator):
        coord.attach(
            {s.head.id: s.barriers for s in ex._sources if s.barriers is not None},
            finished=ex._segments_done,
            stopping=lambda: ex._stopping,
            committed=functools.partial(committed, ex),
        )
        return
    sources = [seg.barriers for seg in ex._sources if seg.barriers is not None]
    await run_epochs(
        coord,
        sources,
        finished=ex._segments_done,
        stopping=lambda: ex._stopping,
        committed=functools.partial(committed, ex),
    )


async def committed(ex: WorkflowExecutor, epoch: int) -> None:
    """Epoch ``epoch`` is in the store: let the sinks make it final."""
    fault_point("after_commit", epoch)
    for n in ex._nodes.values():
        for hook in n.rt.commit_hooks:
            await _maybe_await(hook(epoch))
            # The first one of the epoch kills (a point fires once).
            fault_point("sink_commit", epoch)


async def initial_checkpoint(ex: WorkflowExecutor, coord: Coordinator) -> None:
    """Record where a fresh run starts, before anything has run (epoch 0).

    A crash before the first epoch then restarts from states the sinks
    wrote at start (a file's length, a table's last row), so they can
    drop what the lost attempt wrote instead of keeping it twice.
    """
    coord.states = await _snapshot_all(ex, 0)
    await coord.commit()  # epoch 0: nothing was triggered yet
    await committed(ex, coord.committed)


async def final_checkpoint(ex: WorkflowExecutor, coord: Coordinator) -> None:
    """After a drain, every node's state is final: record it as an epoch.

    With no commit hook to run after it, nothing is left to do: the run's
    status goes in the epoch's transaction (one durable commit, not two). A
    node with commit hooks keeps them apart: a crash between the epoch and
    its hooks must leave the run to resume (and run them), not completed.
    """
    epoch = coord.trigger()
    coord.states.update(await _snapshot_all(ex, epoch))
    hooks = any(n.rt.commit_hooks for n in ex._nodes.values())
    await coord.commit(
        finish=None if hooks else ("stopped" if ex._stopping else "completed")
    )
    # (A coordinator elsewhere may number the epoch its own way.)
    await committed(ex, coord.committed)


async def _snapshot_all(ex: WorkflowExecutor, epoch: int) -> dict[str, bytes]:
    """Every node's state at a point where nothing is in flight."""
    await _barrier_hooks(ex._nodes.values(), epoch)
    return {
        node_id: encode_state(state)
        for node_id, state in ex.state.nodes.items()
        if state
    }


async def _barrier_hooks(nodes: Iterable[NodeRun], epoch: int) -> None:
    for n in nodes:
        for hook in n.rt.barrier_hooks:
            await _maybe_await(hook(epoch))
            # The first one of the epoch kills (a point fires once).
            fault_point("sink_barrier", epoch)


async def _maybe_await(result: Any) -> None:
    if inspect.isawaitable(result):
        await result
