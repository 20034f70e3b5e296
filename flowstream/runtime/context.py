"""Per-run node state and the `NodeContext` a running node sees."""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import time
from typing import TYPE_CHECKING, Any, TypeAlias

from ..core.events import NodeEvent, NodeStats
from ..core.node import ERROR_PORT
from .rates import RateMeter, average
from .result import DeadLetter

if TYPE_CHECKING:
    from collections import deque
    from collections.abc import Awaitable, Callable

    from .channel import SendChannel
    from .events import EventBus

__all__ = ["UNBOUNDED", "EpochHook", "NodeRuntime", "RunState", "State"]

UNBOUNDED = 1 << 30
"""`NodeRuntime.room` of a port that nothing bounds."""

EpochHook: TypeAlias = "Callable[[int], Awaitable[None] | None]"
"""A checkpoint hook: called with the epoch number; may be a coroutine function."""


class State(dict[str, Any]):
    """A node's key/value state for one run (a dict; values msgspec-encodable)."""


class RunState:
    """Every node's `State` for one run, in one place so it can be snapshot."""

    def __init__(self) -> None:
        self.nodes: dict[str, State] = {}

    def for_node(self, node_id: str) -> State:
        """Return (creating if needed) the state of one node."""
        state = self.nodes.get(node_id)
        if state is None:
            state = self.nodes[node_id] = State()
        return state

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Return a shallow copy of every node's state."""
        return {k: dict(v) for k, v in self.nodes.items() if v}


class NodeRuntime:
    """One node of a run: its context for node code, its counters, its buffers.

    Implements the `flowstream.core.node.NodeContext` protocol.
    """

    def __init__(
        self,
        *,
        run_id: str,
        node_id: str,
        node_type: str,
        run_state: RunState,
        bus: EventBus,
        dead_letters: list[DeadLetter],
        error_connected: bool,
        max_kept: int = 10_000,
        instance_of: str | None = None,
        instance: int = 0,
        instances: int = 1,
    ) -> None:
        self.run_id = run_id
        self.node_id = node_id
        # One instance of a parallel node: the declared node, which of how many.
        self.instance_of = instance_of
        self.instance = instance
        self.instances = instances
        # What its events add to name the instance (empty for a plain node).
        self.where: dict[str, Any] = (
            {}
            if instance_of is None
            else {"instance_of": instance_of, "instance": instance}
        )
        self.node_type = node_type
        self._run_state = run_state
        self._bus = bus
        self._dead_letters = dead_letters
        self._error_connected = error_connected
        # Side outputs (ctx.emit and dead letters) wait here until the node's
        # segment flushes them after its next batch.
        self.pending: dict[str, list[Any]] = {}
        # Where each output port's batches go (the executor's send halves,
        # per port): what `room` reads.
        self.outlets: dict[str, list[SendChannel[Any]]] = {}
        # Most items taken from the input channel in one batch (0: batches
        # as sent); starts at the spec's `coalesce`, a node may change it.
        self.coalesce = 0
        self.max_kept = max_kept
        self.dead_letters_not_kept = 0
        self.outputs_dropped = 0  # sink.collect: oldest items let go (collecting)
        self.items_in = 0
        self.items_out = 0
        self.errors = 0
        self.dead_letter_count = 0
        self.started = 0.0
        self.ended = 0.0
        self.taken_at = 0.0  # perf_counter() when the node last took a batch
        # Per-batch take stamps, (perf_counter(), items_in after the batch),
        # kept only for a head whose batch latency is probed while it holds
        # items across takes (see take_of); None: not kept.
        self.takes: deque[tuple[float, int]] | None = None
        self.max_takes = 0
        self._meter: RateMeter | None = None  # made on the first reading
        self._watermark: Callable[[], float | None] | None = None
        # A source's position in its input (read_progress); None: not said.
        self.bytes_read: int | None = None
        self.bytes_total: int | None = None
        # Checkpoints (stream mode with a store): set before initialize.
        self.checkpointing = False
        self.restored_epoch = 0
        # Shared empty tuples until a hook is registered: a DAG of thousands
        # of nodes allocates nothing for them.
        self.barrier_hooks: list[EpochHook] | tuple[()] = ()
        self.commit_hooks: list[EpochHook] | tuple[()] = ()

    def took(self, items: int) -> None:
        """Count a batch of ``items`` taken in now (per batch, never per item)."""
        self.items_in += items
        now = self.taken_at = time.perf_counter()
        takes = self.takes
        if takes is not None:
            if len(takes) < self.max_takes:
                takes.append((now, self.items_in))
            else:
                # It holds more batches than are tracked, or emits fewer
                # items than it takes (a window): matching them up would
                # measure from ever older takes. Back to the latest take.
                self.takes = None

    def take_of(self, emitted: int) -> float:
        """When the node took the batch of its input item number ``emitted + 1``.

        Call it at each output batch, ``emitted`` being the items the node
        emitted before that batch. For a node that emits an item per item it
        takes, in order (``time.delay``), that is when the first item of the
        batch came in, even if later batches came in while it was held.
        Stamps of batches wholly emitted are dropped; with none kept (or
        none tracked, see `took`), the node's latest take.
        """
        takes = self.takes
        if not takes:
            return self.taken_at
        while len(takes) > 1 and takes[0][1] <= emitted:
            takes.popleft()
        return takes[0][0]

    @functools.cached_property
    def state(self) -> State:
        """The node's key/value state for this run (made on first use)."""
        return self._run_state.for_node(self.node_id)

    @functools.cached_property
    def stopping(self) -> asyncio.Event:
        """Set when the run is asked to stop gracefully (made on first use)."""
        return asyncio.Event()

    @functools.cached_property
    def logger(self) -> logging.Logger:
        """The node's logger, ``flowstream.node.<id>`` (made on first use)."""
        return logging.getLogger(f"flowstream.node.{self.node_id}")

    def __bool__(self) -> bool:
        # True when side outputs wait to be flushed (see stepping.rebatch).
        return bool(self.pending)

    def emit(self, port: str, item: Any) -> None:
        """Send ``item`` on output ``port``; flushed with the node's next batch."""
        buf = self.pending.get(port)
        if buf is None:
            self.pending[port] = [item]
        else:
            buf.append(item)

    def emit_many(self, port: str, items: list[Any]) -> None:
        """Send each of ``items`` on output ``port``, in order (one call for all)."""
        if not items:
            return
        buf = self.pending.get(port)
        if buf is None:
            self.pending[port] = list(items)
        else:
            buf.extend(items)

    def room(self, port: str) -> int:
        """How many batches ``port`` takes now without waiting (0: it would wait).

        The least over the port's consumers; `UNBOUNDED` when none bounds
        it (no channel: collected, or nothing connected).
        """
        sends = self.outlets.get(port)
        if not sends:
            return UNBOUNDED
        return min(s.room() for s in sends)

    def dead_letter(
        self, item: Any, reason: str, error_type: str | None = None
    ) -> None:
        """Send ``item`` to the ``error`` port (or the run's dead letters)."""
        self.dead_letter_count += 1
        # An instance's letters name the declared node, and which instance.
        letter = DeadLetter(
            node_id=self.instance_of or self.node_id,
            reason=reason,
            item=item,
            error_type=error_type,
            instance=self.instance if self.instance_of else None,
            instances=self.instances if self.instance_of else None,
        )
        if self._error_connected:
            record = {"node": letter.node_id, "reason": reason, "item": item}
            if self.instance_of is not None:
                record["instance"] = self.instance
            self.emit(ERROR_PORT, record)
            return
        if self._bus.active:
            self.event("dead_letter", {"reason": reason, "error_type": error_type})
        if len(self._dead_letters) < self.max_kept:
            self._dead_letters.append(letter)
        else:
            # Unbounded in a stream run: past the cap the letters are counted
            # (stats.dead_letters), logged once and seen as events, not kept.
            if self.dead_letters_not_kept == 0:
                self.logger.warning(
                    "more than %d dead letters in this run: the rest are counted "
                    "and published as events but not kept; connect the 'error' "
                    "port to a sink to keep them all",
                    self.max_kept,
                )
            self.dead_letters_not_kept += 1

    def on_barrier(self, hook: EpochHook) -> None:
        """Call ``hook(epoch)`` when a checkpoint barrier passes this node.

        It runs after the node handled every item before the barrier and
        before its `state` is snapshotted: the place for a sink to make what
        it wrote durable and to note in its state what epoch ``epoch`` will
        have to keep (a file offset, a row id) — its pre-commit data.
        """
        if not self.barrier_hooks:
            self.barrier_hooks = []
        self.barrier_hooks.append(hook)

    def on_commit(self, hook: EpochHook) -> None:
        """Call ``hook(epoch)`` once epoch ``epoch`` is committed in the store.

        Only then may a sink make the epoch's effects final (publish, rename,
        prune a journal). After a crash between the store's commit and this
        call, the restarted run's state is that epoch's: `restored_epoch`
        names it, and the sink finishes the work in ``initialize``.
        """
        if not self.commit_hooks:
            self.commit_hooks = []
        self.commit_hooks.append(hook)

    def track_watermark(self, read: Callable[[], float | None]) -> None:
        """Report the node's event-time watermark: ``read()`` at each stats read."""
        self._watermark = read

    def watermark_ms(self) -> int | None:
        """The node's watermark now, in epoch ms (None: it has none yet)."""
        read = self._watermark
        if read is None:
            return None
        value = read()
        if value is None or not math.isfinite(value):
            return None
        return int(value)

    def event(self, name: str, data: Any = None) -> None:
        """Publish a custom `NodeEvent`."""
        self._bus.emit(
            NodeEvent,
            self.run_id,
            node_id=self.node_id,
            name=name,
            data=data,
            **self.where,
        )

    def read_progress(self, done: int, total: int | None = None) -> None:
        """Note how far the node has read its input, in bytes (of ``total``)."""
        self.bytes_read = done
        self.bytes_total = total

    def stats(self) -> NodeStats:
        """Return the node's counters now, with its rates (`runtime.rates`)."""
        if not self.started:
            return NodeStats(
                items_in=self.items_in,
                items_out=self.items_out,
                errors=self.errors,
                dead_letters=self.dead_letter_count,
                watermark_ms=self.watermark_ms(),
                instance_of=self.instance_of,
                instance=self.instance if self.instance_of else None,
                bytes_read=self.bytes_read,
                bytes_total=self.bytes_total,
            )
        duration = max(0.0, (self.ended or time.perf_counter()) - self.started)
        rate_in: float | None
        rate_out: float | None
        if self.ended:
            rate_in = average(self.items_in, duration)
            rate_out = average(self.items_out, duration)
        else:
            if self._meter is None:
                self._meter = RateMeter(self.started)
            rate_in, rate_out = self._meter.read(
                self.started + duration, self.items_in, self.items_out
            )
        return NodeStats(
            items_in=self.items_in,
            items_out=self.items_out,
            errors=self.errors,
            dead_letters=self.dead_letter_count,
            duration_s=duration,
            rate_in=rate_in,
            rate_out=rate_out,
            watermark_ms=self.watermark_ms(),
            instance_of=self.instance_of,
            instance=self.instance if self.instance_of else None,
            bytes_read=self.bytes_read,
            bytes_total=self.bytes_total,
        )
