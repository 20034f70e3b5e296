"""A run's outputs: the items kept from ports with no connection.

DAG mode keeps every such port's items (the result of a batch run); stream
mode keeps only ``sink.collect``'s. Those lists are the only place a run
holds items it is not processing, so ``sink.collect`` bounds them with its
``max_items``: unset, a stream run keeps at most `STREAM_MAX_ITEMS`, a DAG
run everything. Past the bound the run fails naming the node; it never
drops items quietly (the same choice as ``on_max_keys: fail``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from ...errors import StateLimitError

if TYPE_CHECKING:
    from .executor import WorkflowExecutor
    from .fusion import NodeRun

__all__ = ["STREAM_MAX_ITEMS", "bound", "keep"]

STREAM_MAX_ITEMS = 100_000
"""Items a ``sink.collect`` keeps in stream mode unless its config says."""


def bound(n: NodeRun, mode: str) -> int | None:
    """The most items ``n`` may have collected (None: no bound)."""
    if n.spec.type_id != "sink.collect":
        return None
    limit = getattr(n.gnode.config, "max_items", msgspec.UNSET)
    if limit is msgspec.UNSET:
        return STREAM_MAX_ITEMS if mode != "dag" else None
    return limit  # type: ignore[no-any-return]


def keep(ex: WorkflowExecutor, n: NodeRun, port: str, batch: list[Any]) -> None:
    """Add ``batch`` to what ``n`` collected on ``port``, within its bound.

    Raises:
        Abort: The node's ``max_items`` was passed (the run fails).
    """
    kept = n.collect[port]  # type: ignore[index]
    kept.extend(batch)
    if n.max_collected is not None and len(kept) > n.max_collected:
        limit = n.max_collected
        del kept[limit:]
        msg = (
            f"max_items={limit} reached: the node keeps at most {limit} items "
            "in the run's outputs; raise max_items (null: no bound), or end "
            "the stream in sink.null or a connector's sink"
        )
        ex._failures.source_failed(n, StateLimitError(msg))
    probe = ex.options.output_probe
    if probe is not None:
        probe(n.gnode.instance_of or n.id, port, batch)
