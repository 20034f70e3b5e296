"""Fixed windows (tumbling and sliding) for `flowstream.nodes.window`.

Window ``n`` is ``[n * slide, n * slide + size)`` (tumbling: slide == size).
State: ``open`` maps a window index to ``{state key: record}``; ``fired``
holds the fired windows kept for ``late: update``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._windowing import NEVER, BadItem, Engine, slot

if TYPE_CHECKING:
    from ..core.node import NodeContext
    from ._window_aggregate import Aggregator
    from .window import Reader, WindowConfig

__all__ = ["FixedWindows"]


def _int_keys(windows: dict[Any, Any]) -> dict[int, Any]:
    """Window indexes are int keys; a JSON round trip makes them str: undo it."""
    if any(type(n) is not int for n in windows):
        items = sorted((int(n), w) for n, w in windows.items())
        windows.clear()
        windows.update(items)
    return windows


def _span(bounds: list[tuple[int, int]]) -> str:
    text = [f"[{s}, {e})" for s, e in bounds]
    if len(text) > 3:
        text = [text[0], f"... {len(text) - 2} more ...", text[-1]]
    noun = "window" if len(bounds) == 1 else "windows"
    return f"{noun} {', '.join(text)}"


class FixedWindows(Engine):
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
            slot(self.state, "open", {})
        )
        self.fired: dict[int, dict[str, list[Any]]] = _int_keys(
            slot(self.state, "fired", {})
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
                self.emit(rec, n * self.slide, self.end(n), updated=True)
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
        self.emit(rec, n * self.slide, self.end(n), evicted=True)

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
        self.next_due = self.end(min(open_)) if open_ else NEVER

    def flush(self) -> None:
        self.fire(NEVER)
