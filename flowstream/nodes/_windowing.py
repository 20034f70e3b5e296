"""Window lifecycles for `flowstream.nodes.window`: joining, firing, state.

This module decides which windows an item joins, moves the watermark, fires
windows in end order and keeps late-update windows for a while.

Everything a window node must remember lives in ``ctx.state`` as plain
msgspec-encodable values, so that a node generator restarted after a failure
(and, later, a checkpoint restore) carries on exactly where it was. The engine
objects here hold only caches, rebuilt from that state when a generator starts.

Times are integer epoch milliseconds, inside as in the records (timestamps
read from items must be whole milliseconds; processing time is the clock in
epoch ms): window bounds, the watermark and session gaps then compare
exactly, where float seconds would not (``0.1 + 0.2 > 0.3``).

State layout (keys of ``ctx.state``):

* ``max_t``: the largest event time seen (processing time: the clock), or None;
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

import bisect
import functools
import heapq
import math
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from ..runtime.feeds import NO_ITEM, next_item
from ._bounds import note_eviction, over_max_keys
from ._clock import epoch_ms_clock

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from ..core.node import NodeContext, NodeState
    from .window import Aggregator, Reader, WindowConfig

__all__ = ["BadItem", "FixedWindows", "Sessions", "drive"]

DEFAULT_RETAIN_MS = 60_000
_NEVER = math.inf


def _slot(state: NodeState, name: str, empty: Any) -> Any:
    """Return ``state[name]``, storing ``empty`` there first if absent."""
    if name not in state:
        state[name] = empty
    return state[name]


def _int_keys(windows: dict[Any, Any]) -> dict[int, Any]:
    """Window indexes are int keys; a JSON round trip makes them str: undo it."""
    if any(type(n) is not int for n in windows):
        items = sorted((int(n), w) for n, w in windows.items())
        windows.clear()
        windows.update(items)
    return windows


def _ms(t: float) -> str:
    return f"{t:.0f} ms" if math.isfinite(t) else repr(t)


class BadItem(Exception):
    """An item a window cannot use; it goes to the error port with ``reason``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --- engines -----------------------------------------------------------------------


class _Engine:
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
        self.max_t: float = -_NEVER if max_t is None else max_t
        self.wm = self.max_t - self.lateness
        self.next_due: float = _NEVER
        # Records fired while handling one item; the driver yields them.
        self.ready: list[dict[str, Any]] = []
        self.max_keys: float = _NEVER if cfg.max_keys is None else cfg.max_keys
        self.evict = cfg.on_max_keys == "evict_oldest"
        self.keys = 0  # records held; subclasses count their state
        # Event time with idle_timeout_ms: the clock may move the watermark.
        self.idle = cfg.idle_timeout_ms is not None

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


def _span(bounds: list[tuple[int, int]]) -> str:
    text = [f"[{s}, {e})" for s, e in bounds]
    if len(text) > 3:
        text = [text[0], f"... {len(text) - 2} more ...", text[-1]]
    noun = "window" if len(bounds) == 1 else "windows"
    return f"{noun} {', '.join(text)}"


class FixedWindows(_Engine):
    """Tumbling (slide == size) and sliding windows, by window index."""

    def __init__(
        self,
        cfg: WindowConfig,
        ctx: NodeContext,
        agg: Aggregator,
        read: Reader,
        size_ms: int,
        slide_ms: int,
    ) -> None:
        super().__init__(cfg, ctx, agg, read)
        self.size = size_ms
        self.slide = slide_ms
        self.tumbling = self.size == self.slide
        self.open: dict[int, dict[str, list[Any]]] = _int_keys(
            _slot(self.state, "open", {})
        )
        self.fired: dict[int, dict[str, list[Any]]] = _int_keys(
            _slot(self.state, "fired", {})
        )
        if self.open:
            self.next_due = self.end(min(self.open))
        self.keys = sum(map(len, self.open.values())) + sum(
            map(len, self.fired.values())
        )

    def end(self, n: int) -> int:
        return n * self.slide + self.size

    def on_item(self, x: Any, now: int | None) -> None:
        # The hot path: prepare() and the common tumbling case are inlined.
        try:
            t, skey, key, vals = self.read(x, now)
        except BadItem as bad:
            self.ctx.dead_letter(x, bad.reason)
            return
        if t > self.max_t:
            self.max_t = self.state["max_t"] = t
            wm = self.wm = t - self.lateness
            if wm >= self.next_due:
                self.fire(wm)
        n = t // self.slide
        end = n * self.slide + self.size
        if not self.tumbling:
            if self.agg.count_only and self._count_sliding(n, t, skey, key):
                return
            self._add_many(n, x, t, skey, key, vals)
            return
        if end <= self.wm:
            self._add_many(n, x, t, skey, key, vals)
            return
        win = self.open.get(n)
        if win is None:
            win = self.open[n] = {}
            if end < self.next_due:
                self.next_due = end
        rec = win.get(skey)
        agg = self.agg
        if agg.count_only:
            if rec is None:
                rec = win[skey] = agg.new(key)
                self.keys += 1
                rec[1] += 1
                if self.keys > self.max_keys:
                    self.over()
                return
            rec[1] += 1
            return
        fresh = rec is None
        if rec is None:
            rec = agg.new(key)
        try:
            news = agg.step(rec, vals, t)
        except BadItem as bad:
            self.ctx.dead_letter(x, bad.reason)
            return
        agg.commit(rec, news, vals, t)
        if fresh:
            win[skey] = rec
            self.keys += 1
            if self.keys > self.max_keys:
                self.over()

    def _count_sliding(self, n_hi: int, t: int, skey: str, key: Any) -> bool:
        """Count an item in its sliding windows if all are open (the common case).

        Returns False, having changed nothing, if one of them has fired: the
        general path then handles the late item.
        """
        slide = self.slide
        lo = (t - self.size) // slide + 1
        if lo * slide + self.size <= self.wm:
            return False
        open_, new = self.open, self.agg.new
        for n in range(lo, n_hi + 1):
            win = open_.get(n)
            if win is None:
                win = open_[n] = {}
                end = n * slide + self.size
                if end < self.next_due:
                    self.next_due = end
            rec = win.get(skey)
            if rec is None:
                rec = win[skey] = new(key)
            rec[1] += 1
        return True

    def _add_many(
        self, n_hi: int, x: Any, t: int, skey: str, key: Any, vals: Any
    ) -> None:
        """Add an item to each of its windows: open, kept after firing, or missed."""
        agg = self.agg
        targets: list[tuple[int, dict[str, list[Any]] | None, list[Any], bool]] = []
        missed: list[int] = []
        # The first window still covering t: n * slide + size > t.
        for n in range((t - self.size) // self.slide + 1, n_hi + 1):
            end = self.end(n)
            if end > self.wm:
                win, updated = self.open.get(n), False
            elif self.retain is not None and end + self.retain > self.wm:
                win, updated = self.fired.get(n), True
            else:
                missed.append(n)
                continue
            rec = win.get(skey) if win is not None else None
            targets.append((n, win, agg.new(key) if rec is None else rec, updated))
        try:
            news = [agg.step(rec, vals, t) for _, _, rec, _ in targets]
        except BadItem as bad:
            self.ctx.dead_letter(x, bad.reason)
            return
        for (n, win, rec, updated), new in zip(targets, news, strict=True):
            agg.commit(rec, new, vals, t)
            if win is None and updated:
                win = self.fired[n] = {}  # a late item's window within retention
            elif win is None:
                win = self.open[n] = {}
                self.next_due = min(self.next_due, self.end(n))
            if skey not in win:
                self.keys += 1
            win[skey] = rec
            if updated:
                out = agg.output(rec, n * self.slide, self.end(n))
                out["updated"] = True
                self.ready.append(out)
        if missed:
            span = _span([(n * self.slide, self.end(n)) for n in missed])
            gone = "already fired" if self.retain is None else "no longer kept"
            self.late(x, t, f"{span} {gone}")
        if self.keys > self.max_keys:
            self.over()

    def evict_oldest(self) -> None:
        """Drop the oldest record, one of a fired window first (already emitted).

        Else the first record of the open window that ends first, emitted now
        with ``evicted: true``.
        """
        fired = self.fired
        if fired:
            n = min(fired)
            win = fired[n]
            del win[next(iter(win))]
            if not win:
                del fired[n]
            self.keys -= 1
            return
        n = min(n for n, win in self.open.items() if win)
        win = self.open[n]
        rec = win.pop(next(iter(win)))
        self.keys -= 1
        out = self.agg.output(rec, n * self.slide, self.end(n))
        out["evicted"] = True
        self.ready.append(out)

    def fire(self, limit: float) -> None:
        open_, agg, ready = self.open, self.agg, self.ready
        for n in sorted(n for n in open_ if self.end(n) <= limit):
            win = open_.pop(n)
            start, end = n * self.slide, self.end(n)
            for rec in win.values():
                ready.append(agg.output(rec, start, end))
            if self.retain is not None:
                self.fired[n] = win
            else:
                self.keys -= len(win)
        if self.fired:
            retain = self.retain or 0
            for n in [n for n in self.fired if self.end(n) + retain <= limit]:
                self.keys -= len(self.fired.pop(n))
        self.next_due = self.end(min(open_)) if open_ else _NEVER

    def flush(self) -> None:
        self.fire(_NEVER)


# A session's flag: open and never emitted; fired (kept for late: update); or
# open again after a late item reopened a fired one (emitted as updated).
_OPEN, _FIRED, _REOPENED = 0, 1, 2
_START = itemgetter(1)


class Sessions(_Engine):
    """Session windows per key: ``[first item, last item + gap)``.

    A session is ``[id, start, end, flag, record, scheduled]``. It has exactly
    one live heap entry, the one whose due equals ``scheduled``; entries made
    before the session grew, merged or fired are stale and skipped.
    """

    def __init__(
        self,
        cfg: WindowConfig,
        ctx: NodeContext,
        agg: Aggregator,
        read: Reader,
        gap_ms: int,
    ) -> None:
        super().__init__(cfg, ctx, agg, read)
        self.gap = gap_ms
        # Event time: an item at exactly a session's end may still come (the
        # watermark only says nothing earlier will), so wait 1 ms past it.
        self.touch = 1 if cfg.event_time else 0
        self.sessions: dict[str, list[list[Any]]] = _slot(self.state, "sessions", {})
        self.heap: list[list[Any]] = _slot(self.state, "heap", [])
        _slot(self.state, "seq", 0)
        if self.heap:
            self.next_due = self.heap[0][0]
        self.keys = sum(map(len, self.sessions.values()))

    def due(self, s: list[Any]) -> int:
        """When a session needs attention next: it closes, or is forgotten.

        An item at exactly ``end`` still continues a session, so in event
        time it closes once the watermark is past its end, not at it.
        """
        end: int = s[2]
        return end + (self.retain or 0) if s[3] == _FIRED else end + self.touch

    def on_item(self, x: Any, now: int | None) -> None:
        try:
            t, skey, key, vals = self.prepare(x, now)
        except BadItem as bad:
            self.ctx.dead_letter(x, bad.reason)
            return
        lo, hi = t, t + self.gap
        # A key's sessions are disjoint and sorted by start (so by end too):
        # the ones [lo, hi) overlaps or touches (an item exactly a gap after
        # the last continues its session) are a run just before the first
        # start > hi.
        sessions = self.sessions.get(skey)
        touched: list[list[Any]] = []
        if sessions:
            j = i = bisect.bisect_right(sessions, hi, key=_START)
            while i > 0 and sessions[i - 1][2] >= lo:
                i -= 1
            touched = sessions[i:j]
        if not touched and hi < self.wm:
            if self.retain is None or hi + self.retain <= self.wm:
                gone = "closed" if self.retain is None else "been forgotten"
                span = f"[{lo}, {hi})"
                self.late(x, t, f"its session {span} would already have {gone}")
                return
        agg = self.agg
        try:
            rec = touched[0][4] if touched else agg.new(key)
            for s in touched[1:]:
                rec = agg.merge(rec, s[4])
            news = agg.step(rec, vals, t)
        except BadItem as bad:
            self.ctx.dead_letter(x, bad.reason)
            return
        agg.commit(rec, news, vals, t)
        if touched:
            # The item extends a session or bridges several: the first absorbs all.
            assert sessions is not None
            session = touched[0]
            del sessions[i + 1 : j]
            self.keys -= j - i - 1
            session[1] = min(lo, session[1])
            session[2] = max(hi, *(s[2] for s in touched))
            session[4] = rec
            if any(s[3] == _FIRED for s in touched):
                if session[2] < self.wm:
                    session[3] = _FIRED
                    self.ready.append(self.emit(session, updated=True))
                else:
                    session[3] = _REOPENED
            elif any(s[3] == _REOPENED for s in touched):
                session[3] = _REOPENED
        else:
            sid = self.state["seq"] = self.state["seq"] + 1
            session = [sid, lo, hi, _OPEN, rec, _NEVER]
            self.keys += 1
            if sessions:
                sessions.insert(j, session)
            else:
                self.sessions[skey] = [session]
            if hi < self.wm:  # late, within retention: born closed
                session[3] = _FIRED
                self.ready.append(self.emit(session, updated=True))
        due = self.due(session)
        if due < session[5]:
            session[5] = due
            heapq.heappush(self.heap, [due, session[0], skey])
            if due < self.next_due:
                self.next_due = due
        if self.keys > self.max_keys:
            self.over()

    def evict_oldest(self) -> None:
        """Drop the session due first, emitted now (``evicted``) unless it had fired."""
        heap = self.heap
        while heap:
            due, sid, skey = heapq.heappop(heap)
            sessions = self.sessions.get(skey, [])
            s = next((s for s in sessions if s[0] == sid), None)
            if s is None or s[5] != due:
                continue  # stale entry
            if s[3] != _FIRED:
                out = self.emit(s, updated=s[3] == _REOPENED)
                out["evicted"] = True
                self.ready.append(out)
            sessions.remove(s)
            if not sessions:
                del self.sessions[skey]
            self.keys -= 1
            break
        self.next_due = heap[0][0] if heap else _NEVER

    def emit(self, s: list[Any], *, updated: bool) -> dict[str, Any]:
        out = self.agg.output(s[4], s[1], s[2])
        if updated:
            out["updated"] = True
        return out

    def fire(self, limit: float) -> None:
        heap = self.heap
        while heap and heap[0][0] <= limit:
            due, sid, skey = heapq.heappop(heap)
            sessions = self.sessions.get(skey, [])
            s = next((s for s in sessions if s[0] == sid), None)
            if s is None or s[5] != due:
                continue  # merged into another session, or a stale entry
            actual = self.due(s)
            if actual > due:  # it grew since: look again then
                s[5] = actual
                heapq.heappush(heap, [actual, sid, skey])
                continue
            if s[3] != _FIRED:
                self.ready.append(self.emit(s, updated=s[3] == _REOPENED))
            if s[3] == _FIRED or self.retain is None:
                sessions.remove(s)
                self.keys -= 1
                if not sessions:
                    del self.sessions[skey]
            else:
                s[3] = _FIRED
                s[5] = self.due(s)
                heapq.heappush(heap, [s[5], sid, skey])
        self.next_due = heap[0][0] if heap else _NEVER

    def flush(self) -> None:
        remaining = [s for ss in self.sessions.values() for s in ss if s[3] != _FIRED]
        for s in sorted(remaining, key=itemgetter(2, 0)):
            self.ready.append(self.emit(s, updated=s[3] == _REOPENED))
        self.sessions.clear()
        self.heap.clear()
        self.keys = 0
        self.next_due = _NEVER


async def drive(
    inp: AsyncIterator[Any],
    event_time: bool,
    engine: _Engine,
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
                x = await wait_next(None if due == _NEVER else max(0, due - now) / 1000)
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

    def __init__(self, engine: _Engine, timeout: int, now: int) -> None:
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
        if engine.next_due == _NEVER or self.base == -_NEVER:
            return _NEVER  # nothing open: only an item can change that
        # The watermark reaches next_due when base + elapsed - lateness does.
        reached = self.last + engine.next_due + engine.lateness - self.base
        return max(self.last + self.timeout, reached)
