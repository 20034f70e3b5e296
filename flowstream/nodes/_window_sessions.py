"""Session windows for `flowstream.nodes.window`.

Per key, a session is ``[first item, last item + gap)``; sessions that
overlap or touch merge. State: ``sessions`` maps a state key to its sessions,
each ``[id, start, end, flag, record, scheduled]``; ``heap`` is a heap of
``[due, id, state key]``; ``seq`` numbers sessions.
"""

from __future__ import annotations

import bisect
import heapq
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from ._windowing import NEVER, BadItem, Engine, slot

if TYPE_CHECKING:
    from ..core.node import NodeContext
    from ._window_aggregate import Aggregator
    from .window import Reader, WindowConfig

__all__ = ["Sessions"]


# A session's flag: open and never emitted; fired (kept for late: update); or
# open again after a late item reopened a fired one (emitted as updated).
_OPEN, _FIRED, _REOPENED = 0, 1, 2
_START = itemgetter(1)


class Sessions(Engine):
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
        self.sessions: dict[str, list[list[Any]]] = slot(self.state, "sessions", {})
        self.heap: list[list[Any]] = slot(self.state, "heap", [])
        slot(self.state, "seq", 0)
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
                    self.emit(session[4], session[1], session[2], updated=True)
                else:
                    session[3] = _REOPENED
            elif any(s[3] == _REOPENED for s in touched):
                session[3] = _REOPENED
        else:
            sid = self.state["seq"] = self.state["seq"] + 1
            session = [sid, lo, hi, _OPEN, rec, NEVER]
            self.keys += 1
            if sessions:
                sessions.insert(j, session)
            else:
                self.sessions[skey] = [session]
            if hi < self.wm:  # late, within retention: born closed
                session[3] = _FIRED
                self.emit(session[4], session[1], session[2], updated=True)
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
                self.emit(s[4], s[1], s[2], updated=s[3] == _REOPENED, evicted=True)
            sessions.remove(s)
            if not sessions:
                del self.sessions[skey]
            self.keys -= 1
            break
        self.next_due = heap[0][0] if heap else NEVER

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
                self.emit(s[4], s[1], s[2], updated=s[3] == _REOPENED)
            if s[3] == _FIRED or self.retain is None:
                sessions.remove(s)
                self.keys -= 1
                if not sessions:
                    del self.sessions[skey]
            else:
                s[3] = _FIRED
                s[5] = self.due(s)
                heapq.heappush(heap, [s[5], sid, skey])
        self.next_due = heap[0][0] if heap else NEVER

    def flush(self) -> None:
        remaining = [s for ss in self.sessions.values() for s in ss if s[3] != _FIRED]
        for s in sorted(remaining, key=itemgetter(2, 0)):
            self.emit(s[4], s[1], s[2], updated=s[3] == _REOPENED)
        self.sessions.clear()
        self.heap.clear()
        self.keys = 0
        self.next_due = NEVER
