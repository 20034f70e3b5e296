"""What a running node reaches besides its inputs: `NodeContext` and `NodeState`.

Both are protocols: the runtime gives the implementation
(`flowstream.runtime.context`), and a node declares a keyword-only ``ctx``
parameter to get it: other output ports, dead letters, custom events, its
per-run state (snapshotted by checkpoints), and the checkpoint hooks.
"""

from __future__ import annotations

import typing
from typing import Any, Protocol, overload

if typing.TYPE_CHECKING:
    import asyncio
    import logging
    from collections.abc import (
        Callable,
        ItemsView,
        Iterator,
        KeysView,
        Mapping,
        ValuesView,
    )

__all__ = ["NodeContext", "NodeState"]


class NodeState(Protocol):
    """Per-run key/value state of one node; values must be msgspec-encodable.

    Kept in one place per run so that checkpoints can snapshot it. At run
    time it is a ``dict[str, Any]`` (`flowstream.runtime.context.State`);
    this protocol types the mapping methods node code may use, so that
    ``mypy --strict`` accepts them (reads are ``Any``).
    """

    def get(self, key: str, default: Any = None, /) -> Any:
        """Return the value under ``key``, or ``default``."""

    def setdefault(self, key: str, default: Any, /) -> Any:
        """Return the value under ``key``, storing ``default`` there first if unset."""

    @overload
    def pop(self, key: str, /) -> Any: ...

    @overload
    def pop(self, key: str, default: Any, /) -> Any: ...

    def pop(self, key: str, *default: Any) -> Any:
        """Remove ``key`` and return its value (or ``default``)."""

    def update(self, other: Mapping[str, Any], /) -> None:
        """Store every pair of ``other``."""

    def keys(self) -> KeysView[str]:
        """The keys."""

    def values(self) -> ValuesView[Any]:
        """The values."""

    def items(self) -> ItemsView[str, Any]:
        """The ``(key, value)`` pairs."""

    def clear(self) -> None:
        """Remove everything."""

    def __getitem__(self, key: str, /) -> Any: ...

    def __setitem__(self, key: str, value: Any, /) -> None: ...

    def __delitem__(self, key: str, /) -> None: ...

    def __contains__(self, key: object, /) -> bool: ...

    def __iter__(self) -> Iterator[str]: ...

    def __len__(self) -> int: ...


class NodeContext(Protocol):
    """What a running node can reach besides its inputs (given by the runtime)."""

    run_id: str
    node_id: str
    node_type: str
    state: NodeState
    logger: logging.Logger
    stopping: asyncio.Event
    """Set when the run was asked to stop gracefully (stream mode)."""

    def emit(self, port: str, item: Any) -> None:
        """Send ``item`` on output ``port`` (buffered; flushed with the outputs)."""

    def emit_many(self, port: str, items: list[Any]) -> None:
        """Send each of ``items`` on output ``port``, in order (as `emit` does)."""

    def dead_letter(self, item: Any, reason: str) -> None:
        """Send ``item`` to the ``error`` port with a reason, and count it."""

    def event(self, name: str, data: Any = None) -> None:
        """Publish a custom `NodeEvent` on the run's event bus."""

    def read_progress(self, done: int, total: int | None = None) -> None:
        """Say how far a source has read its input, in bytes (of ``total``).

        Shown as ``bytes_read``/``bytes_total`` in the node's `NodeStats`
        (a bar with % and ETA in ``flowstream run --progress``); call it per
        batch, not per item. ``total`` None: the input has no known end.
        """

    checkpointing: bool
    """True when the run takes stream checkpoints (the hooks below are called)."""
    restored_epoch: int
    """The committed epoch this run resumed from (0: a fresh start)."""
    instance: int
    """Which instance of its node this is (0 unless ``parallelism`` > 1)."""
    instances: int
    """How many instances its node runs (its ``parallelism``)."""

    def on_barrier(self, hook: Callable[[int], Any]) -> None:
        """Call ``hook(epoch)`` (plain or async) before a state snapshot.

        Runs when barrier ``epoch`` passes the node: flush, note pre-commit data.
        """

    def on_commit(self, hook: Callable[[int], Any]) -> None:
        """Call ``hook(epoch)`` (plain or async) once ``epoch`` is committed."""

    def track_watermark(self, read: Callable[[], float | None]) -> None:
        """Report the node's event-time watermark (epoch ms) in its stats.

        ``read()`` is called whenever the run's statistics are taken (a
        progress frame, a metrics sample), never per item; it returns the
        watermark, or None (or an infinite value) while there is none.
        """
