"""Rescaling: a checkpoint taken at one parallelism, restored at another.

A node with ``parallelism: N`` runs as instances ``n[0]`` .. ``n[N-1]``, and
a checkpoint holds one state per instance, under the instance's id (the
same ids on every backend). Keys hash into `KEY_GROUPS` key groups and
instance ``i`` of ``N`` owns a contiguous range of them
(`flowstream.runtime.parallel.owner`), so restarting with ``M`` instances
is a matter of moving every per-key entry to the instance that owns its
key's group now. Which entries are per key is the node's business: its
type's `NodeSpec.rescale` hook (a `flowstream.core.node.StateRescaler`)
takes the old instances' states and returns the new ones. Nodes whose
instance count did not change keep their states as they are.

Every epoch of a workflow with parallel nodes records its **layout** (the
instances of each parallel node, and the moves made since the run began)
under a reserved id, `LAYOUT_KEY`, beside the node states: the restore
reads the old parallelism there, not from the ids present (an instance
with no state has none stored). An epoch without a layout (written by an
older flowstream) has its parallelism inferred from the ids, and keyed
state is then re-placed by key group whatever it was, which is exact
either way.

What cannot move is refused by name (`RescaleError`): a node whose
instances hold state and whose type has no hook, or a key that cannot be
recomputed from the state. Both executors call `restore` when they resume:
the local one in `flowstream.runtime.local.resume`, a distributed one in
its driver, so state moves the same way on every backend.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

import msgspec

from ...core.events import NodeEvent
from ..parallel import instance_ids, key_group, owner
from .records import CheckpointError

if TYPE_CHECKING:
    from ..events import EventBus
    from ..validation import Graph, GraphNode

__all__ = [
    "LAYOUT_KEY",
    "Layout",
    "Move",
    "RescaleError",
    "Restored",
    "announce_moves",
    "layout_states",
    "read_layout",
    "restore",
]

LAYOUT_KEY = "\x00layout"
"""The id under which an epoch's `Layout` is stored beside the node states
(a NUL first: no node id starts with one)."""


class RescaleError(CheckpointError):
    """A checkpoint cannot be restored at the workflow's new parallelism.

    The message names the node and why its state cannot move. Restart with
    the parallelism the checkpoint was taken at, or start over (``--fresh``).
    """


class Move(msgspec.Struct, frozen=True, array_like=True):
    """A node's state moved from ``old`` to ``new`` instances at a restore.

    Attributes:
        old: Instances in the checkpoint.
        new: Instances after the restore.
        epoch: The epoch restored.
        keys: Per-key entries moved (what the node's hook reports; 0 if none).
    """

    old: int
    new: int
    epoch: int
    keys: int = 0


class Layout(msgspec.Struct, frozen=True, omit_defaults=True):
    """What an epoch records of its run's parallelism.

    Attributes:
        parallelism: Instances of every declared node with more than one.
        moves: The last move of each node whose state was moved since the run
            began (one per node, so bounded by the workflow's size).
    """

    parallelism: dict[str, int] = msgspec.field(default_factory=dict)
    moves: dict[str, Move] = msgspec.field(default_factory=dict)


class Restored(msgspec.Struct, frozen=True):
    """What `restore` gives an executor.

    Attributes:
        states: The node states to start the instances with, by instance id.
        moved: The nodes whose state moved in this restore.
        layout: The run's layout from now on (what its epochs record).
    """

    states: dict[str, bytes]
    moved: dict[str, Move]
    layout: Layout


_layout_decoder = msgspec.msgpack.Decoder(Layout)
_encoder = msgspec.msgpack.Encoder()
_state_decoder = msgspec.msgpack.Decoder(dict[str, Any])


def _declared(graph: Graph) -> tuple[dict[str, GraphNode], dict[str, int]]:
    """The declared nodes and their instance counts (1 unless expanded)."""
    if graph.parallel is None:
        return graph.nodes, {}
    return graph.parallel.declared.nodes, graph.parallel.parallelism


def layout_states(layout: Layout) -> dict[str, bytes]:
    """The layout as an entry to store beside an epoch's states.

    Empty when nothing runs in parallel and nothing ever moved, so that a
    workflow without ``parallelism`` stores exactly its node states.
    """
    if not layout.parallelism and not layout.moves:
        return {}
    return {LAYOUT_KEY: _encoder.encode(layout)}


def read_layout(states: dict[str, bytes]) -> Layout | None:
    """The layout stored with an epoch's states, if it has one."""
    blob = states.get(LAYOUT_KEY)
    return None if blob is None else _layout_decoder.decode(blob)


def _stored_instances(gid: str, stored: dict[str, bytes]) -> int:
    """How many instances the stored ids show for ``gid`` (0: none stored)."""
    if gid in stored:
        return 1
    pattern = re.compile(re.escape(gid) + r"\[(\d+)\]")
    found = [int(m.group(1)) for k in stored if (m := pattern.fullmatch(k))]
    return max(found) + 1 if found else 0


def restore(graph: Graph, stored: dict[str, bytes], epoch: int) -> Restored:
    """Fit an epoch's states to ``graph``'s parallelism.

    Args:
        graph: The validated (expanded) workflow about to run.
        stored: The epoch's states as the store holds them (`LAYOUT_KEY`
            included, if it was written).
        epoch: The epoch's number (recorded in each `Move`).

    Returns:
        The states by the instance ids of ``graph``, and what moved.

    Raises:
        RescaleError: A node's state cannot move to its new parallelism.
    """
    left = dict(stored)
    blob = left.pop(LAYOUT_KEY, None)
    before = None if blob is None else _layout_decoder.decode(blob)
    declared, now = _declared(graph)
    states: dict[str, bytes] = {}
    moved: dict[str, Move] = {}
    for gid, g in declared.items():
        m = now.get(gid, 1)
        if before is not None:
            n = before.parallelism.get(gid, 1)
            exact = True
        else:
            n = _stored_instances(gid, left) or m
            # No layout: trailing instances without state may be missing
            # from the ids, so keyed state is re-placed even if n == m.
            exact = n == 1 and m == 1
        old_ids = instance_ids(gid, n)
        held = {iid: left.pop(iid) for iid in old_ids if iid in left}
        if n == m and (exact or g.spec.rescale is None):
            states.update(held)
            continue
        if not held:
            continue  # nothing to move (a stateless node, say): nothing to say
        new_states, keys = _move(g, gid, [held.get(iid) for iid in old_ids], m)
        states.update(zip(instance_ids(gid, m), new_states, strict=True))
        if n != m:
            moved[gid] = Move(n, m, epoch, keys)
    states = {iid: blob for iid, blob in states.items() if blob}
    # Ids no declared node has now (a node removed from the workflow would
    # have changed its key; partition steps hold no state): kept as they were.
    states.update(left)
    history = dict(before.moves) if before is not None else {}
    history.update(moved)
    parallelism = {gid: m for gid, m in now.items() if m > 1}
    return Restored(states, moved, Layout(parallelism, history))


def _move(
    g: GraphNode, gid: str, old: list[bytes | None], m: int
) -> tuple[list[bytes], int]:
    """Run ``g``'s hook over its old instances' states; the new ones, encoded."""
    n = len(old)
    where = (
        f"node {gid!r} ({g.spec.type_id}): cannot move its state from {n} to "
        f"{m} instance(s)"
    )
    hook = g.spec.rescale
    if hook is None and not g.inputs:
        msg = (
            f"{where}: each instance reads a part of the input fixed when the "
            f"run began with {n} (their offsets are in its state); restart it "
            f"with parallelism: {n}, or start over with --fresh"
        )
        raise RescaleError(msg)
    if hook is None:
        holding = [iid for iid, b in zip(instance_ids(gid, n), old, strict=True) if b]
        msg = (
            f"{where}: its instances hold state ({', '.join(holding)}) and "
            f"{g.spec.type_id} does not say how to split or merge it (only "
            "keyed nodes and a few stateless ones do); restart it with "
            f"parallelism: {n}, or start over with --fresh"
        )
        raise RescaleError(msg)
    decoded = [_state_decoder.decode(b) if b else {} for b in old]
    keys = 0

    def place(key: Any) -> int:
        nonlocal keys
        keys += 1
        return owner(key_group(key), m)

    try:
        new = hook(decoded, m, place)
        if len(new) != m:
            msg = f"its hook returned {len(new)} states for {m} instances"
            raise ValueError(msg)
        encoded = [_encoder.encode(s) if s else b"" for s in new]
    except (TypeError, ValueError, LookupError) as exc:
        msg = f"{where}: {exc}; restart it with parallelism: {n}, or --fresh"
        raise RescaleError(msg) from exc
    return encoded, keys


_log = logging.getLogger("flowstream.checkpoint")


def announce_moves(bus: EventBus, run_id: str, moved: dict[str, Move]) -> None:
    """Say which nodes' state moved to another parallelism (events, log).

    Each move is a ``state.redistributed`` `NodeEvent` of the declared node,
    on either backend.
    """
    for gid, move in moved.items():
        data = {
            "from": move.old,
            "to": move.new,
            "epoch": move.epoch,
            "keys": move.keys,
        }
        bus.emit(NodeEvent, run_id, node_id=gid, name="state.redistributed", data=data)
        _log.info(
            "node %r: state of epoch %d redistributed from %d to %d instance(s) "
            "by key group (%d entries)",
            gid,
            move.epoch,
            move.old,
            move.new,
            move.keys,
        )
