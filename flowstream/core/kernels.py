"""Batch kernels, and how a batch-aware node reports one failing item.

A node type may give a *kernel*: a plain function from a list of items to a
list of items, which the runtime runs once per batch in place of the node's
generator (fused chains of them run in one loop). `ItemKernel` is the
map/filter kind the runtime composes into one C-level iterator chain.
`ItemFailed` is how a node that handles a whole batch in one loop says which
item failed, so that retry and dead-letter policies still apply per item.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

__all__ = ["ItemFailed", "ItemKernel", "Kernel", "KernelFactory"]

Kernel = Callable[[list[Any]], list[Any]]
"""A batch kernel: a plain function from a list of items to a list of items."""


class ItemKernel:
    """A kernel that maps or filters items with one function.

    The runtime composes consecutive item kernels of a fused chain into one
    C-level iterator chain per batch (``list(map(g, filter(p, map(f, b))))``),
    with no list in between.
    """

    __slots__ = ("fn", "kind")

    def __init__(
        self, kind: Literal["map", "filter"], fn: Callable[[Any], Any]
    ) -> None:
        self.kind = kind
        self.fn = fn

    def __call__(self, batch: list[Any]) -> list[Any]:
        """Apply the kernel to one batch."""
        fn = self.fn
        return list(map(fn, batch) if self.kind == "map" else filter(fn, batch))


class ItemFailed(Exception):
    """Raised by a batch-aware node: item ``index`` of its last batch failed.

    The per-item failure hook of batched nodes. A node that handles a batch
    in one loop (no await per item) raises it, ``from`` the item's own
    exception, once it has handled the items before ``index`` (and yielded
    what they gave) and left no trace of item ``index``. The runtime then
    applies the node's policies to that item alone (retry, dead letter, or
    fail the run, as for an item node) and restarts the node on the rest of
    the batch: from ``index`` again to retry it, else from ``index + 1``.
    Raised anywhere else (several inputs, an item node), the cause is the
    node's failure as any other exception.

    Args:
        index: The failing item's position in the last batch handed out.
    """

    def __init__(self, index: int) -> None:
        super().__init__(f"item {index} of the batch failed")
        self.index = index


KernelFactory = Callable[[Any], Kernel]
"""Builds a node's batch kernel from its validated config."""
