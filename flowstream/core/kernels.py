"""Batch kernels: how a stateless 1-in/1-out node runs on whole batches.

A node type may carry a kernel factory (``@node(..., kernel=...)``): in a
fused chain the runtime then applies the kernel to each batch instead of
driving the node's generator item by item. `ItemFailed` is how a node that
handles a whole batch in one loop says which item failed, so that retry and
dead-letter policies still apply per item.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Literal

__all__ = [
    "DROPPED",
    "KEPT",
    "ItemFailed",
    "ItemKernel",
    "Kernel",
    "KernelFactory",
    "drained",
    "stopped_early",
]

Kernel = Callable[[list[Any]], list[Any]]
"""A batch kernel: a plain function from a list of items to a list of items."""


class ItemKernel:
    """A kernel that maps or filters items with one function.

    The runtime composes consecutive item kernels of a fused chain into one
    C-level iterator chain per batch (``list(map(g, filter(p, map(f, b))))``),
    with no list in between.

    A *projecting* filter (``projects=True``) keeps and replaces items at
    once: ``fn(x)`` returns the item to keep, or `DROPPED` to drop ``x``
    (``[E for T in batch if C]`` with one call per item).

    ``lifted``: ``fn`` is a lifted generator's function
    (`flowstream.runtime.lifting`): a plain function whose first local is
    its input, never assigned, so a failure's traceback tells the item.
    """

    __slots__ = ("fn", "kind", "lifted", "projects")

    def __init__(
        self,
        kind: Literal["map", "filter"],
        fn: Callable[[Any], Any],
        *,
        projects: bool = False,
        lifted: bool = False,
    ) -> None:
        if projects and kind != "filter":
            msg = "only a filter kernel projects"
            raise ValueError(msg)
        self.kind = kind
        self.fn = fn
        self.projects = projects
        self.lifted = lifted

    def __call__(self, batch: list[Any]) -> list[Any]:
        """Apply the kernel to one batch.

        A function that raises `StopIteration` would end ``map``/``filter``
        early and lose the rest of the batch without a word; it fails
        instead, as it would inside a generator (PEP 479).
        """
        items = iter(batch)
        out = list(self.apply(items))
        if not drained(items):
            raise stopped_early(self.fn)
        return out

    def apply(self, items: Iterable[Any]) -> Iterator[Any]:
        """The kernel over ``items``, lazily (a C iterator, no Python frame)."""
        fn = self.fn
        if self.kind == "map":
            return map(fn, items)
        if self.projects:
            return filter(KEPT, map(fn, items))
        return filter(fn, items)


def drained(items: Iterator[Any]) -> bool:
    """Whether the list (or tuple) iterator ``items`` was asked past its end.

    ``map`` and ``filter`` end when their function raises `StopIteration`
    as they do when their input ends, and ``list`` takes either for the
    end. Only a real end asks the input past its last item, and CPython's
    list and tuple iterators then let go of their sequence, which their
    ``__reduce__`` shows (two parts instead of three). One check per batch.
    """
    return len(items.__reduce__()) == 2


def stopped_early(fn: Callable[..., Any]) -> RuntimeError:
    """The failure of an item whose function raised `StopIteration`."""
    name = getattr(fn, "__qualname__", None) or type(fn).__name__
    return RuntimeError(
        f"{name} raised StopIteration; a function may not raise it "
        "(it would end the batch early), raise another exception"
    )


DROPPED: Any = object()
"""What a projecting filter's function returns for an item it drops."""

KEPT: Callable[[Any], bool] = functools.partial(operator.is_not, DROPPED)
"""``KEPT(y)``: ``y`` is not `DROPPED` (a C call)."""


KernelFactory = Callable[[Any], Kernel]
"""Builds a node's batch kernel from its validated config."""


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
