"""Poison records: a record that failed too many runs in a row at one node.

Both executors keep the count in the checkpoint store (the local one in its
process, the Ray one in the driver, whose actors die with each attempt):

* before a run, `poison_for` reads the records that failed at least
  ``checkpoint.max_restarts`` runs; under ``poison: stop`` the run is refused
  (`refusal` says why), under ``poison: dead_letter`` each node gets the
  fingerprints it sends to its dead letters when they fail again
  (`Failures.poison`, keyed by node instance id);
* after a run that failed on a record, `count_failure` adds one and says in
  the run's error what the next start will do.

A record is counted at the node *as declared*: the instances of a node with
``parallelism`` share the count (which instance gets a record may change
from run to run), and every instance dead-letters it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ...core.workflow import Checkpoint
    from ..validation import Graph
    from .records import PoisonRecord
    from .store import CheckpointStore

__all__ = ["Poison", "count_failure", "declared_id", "poison_for", "refusal"]

Poison = dict[str, dict[str, str]]
"""Node instance id -> record fingerprint -> why it is dead-lettered."""


def declared_id(graph: Graph, node_id: str) -> str:
    """The declared node an instance (or a node) belongs to."""
    g = graph.nodes.get(node_id)
    return node_id if g is None else g.instance_of or node_id


async def poison_for(
    store: CheckpointStore, key: str, graph: Graph, policy: Checkpoint
) -> tuple[PoisonRecord | None, Poison]:
    """The record that refuses the run (``poison: stop``), or what to skip.

    Returns:
        ``(record, {})`` when the run must not start, else ``(None,
        poison)``: the records each node instance sends to its dead letters.
    """
    found = [p for p in await store.failures(key) if p.count >= policy.max_restarts]
    if found and policy.poison == "stop":
        return found[0], {}
    poison: Poison = {}
    ex = graph.parallel
    for p in found:
        ids = ex.instances.get(p.node_id, (p.node_id,)) if ex else (p.node_id,)
        for nid in ids:
            poison.setdefault(nid, {})[p.fingerprint] = (
                f"failed {p.count} runs ({p.reason})"
            )
    return None, poison


def refusal(poison: PoisonRecord) -> str:
    """Why a poison record keeps a run from starting (``poison: stop``)."""
    return (
        f"poison record at node {poison.node_id!r}: it failed the last "
        f"{poison.count} runs ({poison.reason}); record: {poison.record}. "
        "Fix the node or the data and run `flowstream checkpoints STORE "
        "--forget-failures`, or set checkpoint.poison: dead_letter to "
        "send it to the dead letters and go on"
    )


async def count_failure(
    store: CheckpointStore,
    key: str,
    graph: Graph,
    policy: Checkpoint,
    failed_on: tuple[str, Any],
    error: str,
) -> str:
    """Count one more run failed by a record; return the run's error to show.

    Args:
        store: The open store.
        key: The run's key in it.
        graph: The run's graph (to name the node as declared).
        policy: The workflow's checkpoint policy.
        failed_on: The node instance and the record the run failed on.
        error: The run's error.
    """
    node_id = declared_id(graph, failed_on[0])
    count = await store.record_failure(key, node_id, failed_on[1], error)
    if count < policy.max_restarts:
        return error
    then = "refuse to run" if policy.poison == "stop" else "send it to the dead letters"
    return (
        f"{error} — this record has now failed {count} runs at "
        f"node {node_id!r}: a restart will {then}"
    )
