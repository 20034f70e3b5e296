"""A run's outputs: the items kept from ports with no connection.

DAG mode keeps every such port's items (the result of a batch run); stream
mode keeps only ``sink.collect``'s. Those lists are the only place a run
holds items it is not processing, so ``sink.collect`` bounds them with its
``max_items``: unset, a stream run keeps at most `STREAM_MAX_ITEMS`, a DAG
run everything. Past the bound the oldest items go: a stream run goes on
(the server shows its recent outputs while it runs), and what went is
counted in the result (``outputs_dropped``) and logged once, never dropped
quietly (like the dead letters past ``max_dead_letters``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:
    from collections.abc import Iterable

    from .executor import WorkflowExecutor
    from .fusion import NodeRun

__all__ = ["STREAM_MAX_ITEMS", "bound", "dropped", "keep"]

STREAM_MAX_ITEMS = 1_000_000
"""Items a ``sink.collect`` keeps in stream mode unless its config says.

The same bound as keyed state's ``max_keys``: more than a test or a demo
collects, yet a few hundred MB of records at most.
"""


def bound(n: NodeRun, mode: str) -> int | None:
    """The most items ``n`` may keep on a port (None: no bound)."""
    if n.spec.type_id != "sink.collect":
        return None
    limit = getattr(n.gnode.config, "max_items", msgspec.UNSET)
    if limit is msgspec.UNSET:
        return STREAM_MAX_ITEMS if mode != "dag" else None
    return limit  # type: ignore[no-any-return]


def keep(ex: WorkflowExecutor, n: NodeRun, port: str, batch: list[Any]) -> None:
    """Add ``batch`` to what ``n`` kept on ``port``; past its bound, drop the oldest."""
    kept = n.collect[port]  # type: ignore[index]
    kept.extend(batch)
    limit = n.max_collected
    if limit is not None and len(kept) > limit:
        # The instances of a parallel node share the list, so the bound is
        # the declared node's; each instance counts what its batches pushed out.
        excess = len(kept) - limit
        del kept[:excess]
        if not n.rt.outputs_dropped:
            n.rt.logger.warning(
                "max_items=%d reached: sink.collect keeps the newest %d items; "
                "the older ones are dropped and counted (outputs_dropped)",
                limit,
                limit,
            )
        n.rt.outputs_dropped += excess
    probe = ex.options.output_probe
    if probe is not None:
        probe(n.gnode.instance_of or n.id, port, batch)


def dropped(nodes: Iterable[NodeRun]) -> dict[str, int]:
    """Items each declared node dropped past its ``max_items`` (only those that did)."""
    counts: dict[str, int] = {}
    for n in nodes:
        if n.rt.outputs_dropped:
            gid = n.gnode.instance_of or n.id
            counts[gid] = counts.get(gid, 0) + n.rt.outputs_dropped
    return counts
