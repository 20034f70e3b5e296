"""Window lifecycles for `flowstream.nodes.window`: the engine, state, driving.

An engine decides which windows an item joins, moves the watermark, fires
windows in end order and keeps late-update windows for a while. This module
holds what every engine shares (the watermark, output, late items, the
``max_keys`` bound) and `drive`, which feeds one engine from the node's input
and the clock. The two engines are `FixedWindows` (tumbling and sliding,
`flowstream.nodes._window_fixed`) and `Sessions`
(`flowstream.nodes._window_sessions`).

Everything a window node must remember lives in ``ctx.state`` as plain
msgspec-encodable values, so that a node generator restarted after a failure
(and, later, a checkpoint restore) carries on exactly where it was. The engine
objects here hold only caches, rebuilt from that state when a generator starts.

Times are integer epoch milliseconds, inside as in the records (timestamps
read from items must be whole milliseconds; processing time is the clock in
epoch ms): window bounds, the watermark and session gaps then compare
exactly, where float seconds would not (``0.1 + 0.2 > 0.3``).

State layout (keys of ``ctx.state``):

* ``max_t``: the largest event time seen (processing time: the clock; event
  time with ``idle_timeout_ms``: where the clock moved it), or None;
* ``late``: how many late items went to the ``error`` port;
* fixed windows (tumbling, sliding): ``open`` maps a window index ``n`` to
  ``{state key: record}``, window ``n`` being ``[n * slide, n * slide + size)``;
  ``fired`` holds the fired windows kept for ``late: update``;
* sessions: ``sessions`` maps a state key to its sessions, each
  ``[id, start, end, flag, record, scheduled]``; ``heap`` is a heap of
  ``[due, id, state key]``; ``seq`` numbers sessions;
* ``evicted``: records evicted past ``max_keys`` (``on_max_keys:
  evict_oldest``), once there has been one.

``max_keys`` bounds the records held: one per key and window (open, or kept
for ``late: update``), one per session. The count is not stored: engines
rebuild it from the windows when they start, so a restored checkpoint and its
count always agree.

A record is ``[key, count, acc_2, acc_3, ...]``, one accumulator per aggregate.
An item is applied in two phases (compute every new accumulator, then commit),
so an item that fails leaves no partial trace and a retried item is never
counted twice.
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING, Any

from ..runtime.feeds import NO_ITEM, next_item
from ._bounds import note_eviction, over_max_keys
from ._clock import epoch_ms_clock

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from ..core.node import NodeContext, NodeState
    from ._window_aggregate import Aggregator
    from .window import Reader, WindowConfig

__all__ = ["DEFAULT_RETAIN_MS", "NEVER", "BadItem", "Engine", "drive", "slot"]

DEFAULT_RETAIN_MS = 60_000
NEVER = math.inf
"""A due time never reached."""


def slot(state: NodeState, name: str, empty: Any) -> Any:
    """Return ``state[name]``, storing ``empty`` there first if absent."""
    if name not in state:
        state[name] = empty
    return state[name]


def _ms(t: float) -> str:
    return f"{t:.0f} ms" if math.isfinite(t) else repr(t)


def track_watermark(ctx: NodeContext, read: Callable[[], float]) -> None:
    """Have the runtime show ``read()`` as the node's watermark in its stats.

    A context without the hook (a test driving ``spec.fn`` with a small
    fake) is left alone: the watermark is for observation only.
    """
    track = getattr(ctx, "track_watermark", None)
    if track is not None:
        track(read)


class BadItem(Exception):
    """An item a window cannot use; it goes to the error port with ``reason``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --- engines -----------------------------------------------------------------------


class Engine:
    """What fixed windows and sessions share: the clock, the watermark, output."""

    def __init__(
        self, cfg: WindowConfig, ctx: NodeContext, agg: Aggregator, read: Reader
    ) -> None:
        self.ctx = ctx
        self.state = ctx.state
        self.agg = agg
        self.read = read
        self.lateness = int(cfg.allowed_lateness_ms)
        self.retain: int | None = None
        if cfg.late == "update":
            retain = DEFAULT_RETAIN_MS if cfg.retain_ms is None else cfg.retain_ms
            self.retain = int(retain)
        if "max_t" not in self.state:
            self.state["max_t"] = None
            self.state["late"] = 0
        max_t = self.state["max_t"]
        self.max_t: float = -NEVER if max_t is None else max_t
        self.wm = self.max_t - self.lateness
        self.next_due: float = NEVER
        # Records fired while handling one item; the driver yields them.
        self.ready: list[dict[str, Any]] = []
        self.max_keys: float = NEVER if cfg.max_keys is None else cfg.max_keys
        self.evict = cfg.on_max_keys == "evict_oldest"
        self.keys = 0  # records held; subclasses count their state
        # Event time with idle_timeout_ms: the clock may move the watermark.
        self.idle = cfg.idle_timeout_ms is not None
        if cfg.event_time:
            # Shown in the node's stats (read when they are taken).
            track_watermark(ctx, self.watermark)

    def watermark(self) -> float:
        """The watermark (epoch ms); -inf before the first item."""
        return self.wm

    def over(self) -> None:
        """More records than ``max_keys``: fail, or evict the oldest."""
        if not self.evict:
            raise over_max_keys(int(self.max_keys), "window records")
        while self.keys > self.max_keys:
            self.evict_oldest()
            note_eviction(self.ctx, int(self.max_keys), "window record")

    def evict_oldest(self) -> None:
        raise NotImplementedError

    def on_item(self, x: Any, now: int | None) -> None:
        raise NotImplementedError

    def fire(self, limit: float) -> None:
        raise NotImplementedError

    def flush(self) -> None:
        raise NotImplementedError

    def advance(self, max_t: float) -> None:
        """Move the largest time seen to ``max_t`` (if later); fire what is due.

        Processing time: the clock moved. Event time: the input is idle, and
        the watermark follows the clock (``idle_timeout_ms``).
        """
        if max_t > self.max_t:
            self.max_t = self.state["max_t"] = max_t
            wm = self.wm = max_t - self.lateness
            if wm >= self.next_due:
                self.fire(wm)

    def prepare(self, x: Any, now: int | None) -> tuple[int, str, Any, Any]:
        """Read the item, move the watermark, fire the windows it passed."""
        t, skey, key, vals = self.read(x, now)
        if t > self.max_t:
            self.max_t = self.state["max_t"] = t
            wm = self.wm = t - self.lateness
            if wm >= self.next_due:
                self.fire(wm)
        return t, skey, key, vals

    def emit(
        self,
        rec: list[Any],
        start: int,
        end: int,
        *,
        updated: bool = False,
        evicted: bool = False,
    ) -> None:
        """Queue a window's record, flagged if emitted again or evicted early."""
        out = self.agg.output(rec, start, end)
        if updated:
            out["updated"] = True
        if evicted:
            out["evicted"] = True
        self.ready.append(out)

    def late(self, x: Any, t: int, what: str) -> None:
        self.state["late"] += 1
        largest = "max event time"
        if self.idle:
            largest += " (or the clock, while the input was idle)"
        reason = (
            f"late item: timestamp {_ms(t)} is behind the watermark "
            f"{_ms(self.wm)} ({largest} {_ms(self.max_t)} minus "
            f"allowed lateness {self.lateness} ms); {what}"
        )
        self.ctx.dead_letter(x, reason)


async def drive(
    inp: AsyncIterator[Any],
    event_time: bool,
    engine: Engine,
    idle_timeout_ms: float | None = None,
) -> AsyncIterator[dict[str, Any]]:
    """Feed items to an engine and yield the windows it fires, in order.

    Event time reads items as they come. Processing time also wakes up when
    the next window is due (the node is ``timed``), so windows close on time
    with no further input. So does event time with ``idle_timeout_ms``: once
    the input has been quiet that long, the watermark moves on with the
    clock from where the last item left it. At the end of input every open
    window fires.

    Raises:
        Exception: What the user's ``fn``/``merge`` raised, after the windows
            that fired before it have been yielded.
    """
    ready = engine.ready
    on_item = engine.on_item
    if event_time and idle_timeout_ms is None:
        async for x in inp:
            try:
                on_item(x, None)
            except Exception:
                # The user's fn failed: what fired before it is not lost.
                for out in ready:
                    yield out
                ready.clear()
                raise
            if ready:
                for out in ready:
                    yield out
                ready.clear()
    else:
        clock = epoch_ms_clock()
        # A channel feed's own wait saves a call per item; next_item explains
        # what is wrong with any other input.
        wait_next = getattr(inp, "next", None) or functools.partial(next_item, inp)
        now = clock()
        idle = None
        if idle_timeout_ms is not None:
            idle = _Idle(engine, int(idle_timeout_ms), now)
        if idle is None:
            engine.advance(now)
        while True:
            if ready:
                for out in ready:
                    yield out
                ready.clear()
            due = engine.next_due if idle is None else idle.due()
            try:
                x = await wait_next(None if due == NEVER else max(0, due - now) / 1000)
            except StopAsyncIteration:
                break
            now = clock()
            if x is NO_ITEM:
                engine.advance(now if idle is None else idle.max_t(now))
                continue
            if idle is not None:
                # The watermark moved on while the input was quiet: the item
                # is judged against where the clock took it.
                engine.advance(idle.max_t(now))
            try:
                # Processing time: also fires what the clock passed.
                on_item(x, None if idle is not None else now)
            except Exception:
                for out in ready:
                    yield out
                ready.clear()
                raise
            if idle is not None:
                idle.arrived(now)
    engine.flush()
    for out in ready:
        yield out
    ready.clear()


class _Idle:
    """Event time with an idle timeout: the watermark follows the clock.

    After ``timeout`` ms without an item, the largest event time is taken to
    have moved on as far as the clock has since the last item came (as if
    the source kept producing in real time, Flink's ``withIdleness``), so a
    quiet input's last windows close. An item that arrives later is judged
    against that watermark as any other. Nothing here is state: after a
    restart the quiet time counts from the restart.
    """

    def __init__(self, engine: Engine, timeout: int, now: int) -> None:
        self.engine = engine
        self.timeout = timeout
        self.arrived(now)

    def arrived(self, now: int) -> None:
        self.last = now
        self.base = self.engine.max_t

    def max_t(self, now: int) -> float:
        """The largest event time as the clock moved it (unmoved if not idle)."""
        if now - self.last < self.timeout:
            return self.base
        return self.base + (now - self.last)

    def due(self) -> float:
        """The clock time at which the engine must next be woken."""
        engine = self.engine
        if engine.next_due == NEVER or self.base == -NEVER:
            return NEVER  # nothing open: only an item can change that
        # The watermark reaches next_due when base + elapsed - lateness does.
        reached = self.last + engine.next_due + engine.lateness - self.base
        return max(self.last + self.timeout, reached)
