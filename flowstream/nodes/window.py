"""Window nodes: aggregate items over tumbling, sliding or session windows.

Every window node reads one input and emits one record per fired window::

    {"key": k, "start": s, "end": e, "value": v, "count": n}

``key`` is left out for global (unkeyed) windows; ``start``/``end`` are epoch
milliseconds (ints, as every time in flowstream's records) and the window is
``[start, end)``. Records come out in window-end order
(windows with the same end: in the order their keys first appeared). All three
types are stream-safe: they emit as windows close, and at the end of input
every open window fires, in order.

Config shared by the three types:

* Time. ``time: processing`` (the default) stamps each item with the clock
  (epoch ms) when it arrives; windows close on the clock even with no new
  input. Event time reads a timestamp in epoch milliseconds (an int, or a
  float holding a whole number) from each item, with ``timestamp`` (CEL over
  ``x``, e.g. ``x.ts``) or ``timestamp_field`` (a mapping key, much faster).
  The watermark is the largest event time seen minus
  ``allowed_lateness_ms``; a window fires when the watermark reaches its end.
  ``idle_timeout_ms`` (event time): after that long with no input, the
  watermark moves on with the clock from where the last item left it, so a
  quiet stream's last windows close without waiting for more input.
* Key. ``key`` (CEL) or ``key_field`` gives one set of windows per key;
  without either, windows are global.
* Aggregate. ``op``: ``count`` (the default), ``sum``, ``min``, ``max``,
  ``mean``, ``first``, ``last`` or ``collect``, over ``value`` (CEL, default
  ``x``). ``first``, ``last`` and the order of ``collect`` follow the items'
  timestamps (ties: arrival order). ``max_rows`` is the arg-max: the list of
  the window's *items* whose ``value`` equals the window's maximum (all
  ties, in timestamp order), in one linear pass and keeping only those items
  (e.g. the highest bids of each window: ``op: max_rows, value: x.price``).
  Or ``top: {n: 3, by: x.price}``: the window's ``n`` best items (a list,
  best first) ranked by ``by`` (CEL over ``x``, a number); ``order: asc``
  keeps the lowest instead of the highest (``desc``). Ties go to the
  earlier timestamp, then the earlier arrival. Each record keeps at most
  ``n`` items (a bounded heap; ``n`` at most 10,000) whatever the window's
  size; an item whose ``by`` is not a number goes to ``error``.
  Or ``aggs: {name: {op, value}}`` for several at once (``value`` is then a
  mapping by name). Or a custom reducer
  ``fn: "module:attr"``, called as ``fn(acc, value)`` in arrival order from
  ``initial``; it must return the new accumulator (a plain, msgspec-encodable
  value) and not change its argument if it raises.
* Late items (event time). An item whose windows have all fired is late.
  ``late: drop`` (the default) sends it to the ``error`` port (or the run's
  dead letters) with a reason naming its timestamp, the watermark and the
  window, and counts it. ``late: update`` keeps fired windows ``retain_ms``
  (default 60 s) longer in event time: a late item within that time is added
  to its window (opened if it had none) and the window is emitted again with
  ``"updated": true``; items later than that still go to ``error``. Nothing
  is dropped silently.
* State bound. ``max_keys`` (default 1,000,000; null: unbounded, which
  validation warns about in stream mode) bounds the records held: one per
  key and window (open, or kept for ``late: update``), one per session.
  ``on_max_keys: fail`` (the default) stops the run with a
  `flowstream.errors.StateLimitError` naming the node and the bound;
  ``evict_oldest`` emits the oldest open record at once (the window ending
  first, or the session due first) with ``"evicted": true`` (a record kept
  only for late updates is just forgotten), and counts it in the state
  (``evicted``).

Items the node cannot use (no timestamp, a timestamp that is not a finite
number, a key or value expression that fails, a value an aggregate cannot
take) go to the ``error`` port with the reason. An exception from ``fn`` is
the node's failure, handled by its retry policy and error handling; the
window state survives the node's restart and the failed item is never
counted twice.
"""

from __future__ import annotations

import math
from operator import itemgetter
from typing import TYPE_CHECKING, Annotated, Any, Literal

import msgspec

from ..core.expr import Expr, FnRef, compile_expr, expr_function
from ..core.node import node
from ._bounds import DEFAULT_MAX_KEYS, OnMaxKeys, check_max_keys
from ._rescaling import rescale_window
from ._window_aggregate import Aggregator, why
from ._window_fixed import FixedWindows
from ._window_sessions import Sessions
from ._windowing import BadItem, drive

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from typing import TypeAlias

    from ..core.node import NodeContext

    Reader: TypeAlias = Callable[[Any, int | None], tuple[int, str, Any, Any]]

__all__ = [
    "MAX_TOP",
    "Session",
    "Sliding",
    "Top",
    "Tumbling",
    "WindowAggregate",
    "WindowConfig",
    "session_window",
    "sliding_window",
    "tumbling_window",
]

Op = Literal[
    "count", "sum", "min", "max", "mean", "first", "last", "collect", "max_rows"
]
Positive = Annotated[float, msgspec.Meta(gt=0)]
NonNegative = Annotated[float, msgspec.Meta(ge=0)]

_JSON = msgspec.json.Encoder()

MAX_WINDOWS_PER_ITEM = 1000
"""A sliding window's ``size_ms / slide_ms`` bound: each item joins that many."""


class WindowAggregate(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True
):
    """One named aggregate of ``aggs``: an ``op`` over ``value`` (CEL, default x).

    Not `flowstream.nodes.transform.Aggregate`, the config of ``transform.scan``
    and ``transform.reduce``.
    """

    op: Op
    value: Expr | None = None


MAX_TOP = 10_000
"""The most items ``top`` keeps per window record (``n``)."""


class Top(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``top``: the window's ``n`` best items, ranked by ``by`` (CEL over ``x``).

    ``order: desc`` (the default) keeps the highest, ``asc`` the lowest.
    """

    n: Annotated[int, msgspec.Meta(ge=1, le=MAX_TOP)]
    by: Expr
    order: Literal["desc", "asc"] = "desc"


class WindowConfig(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True
):
    """The config fields every window type shares (see the module docstring)."""

    time: Literal["processing", "event"] | None = None
    timestamp: Expr | None = None
    timestamp_field: str | None = None
    allowed_lateness_ms: NonNegative = 0
    key: Expr | None = None
    key_field: str | None = None
    op: Op | None = None
    value: Expr | None = None
    fn: FnRef | None = None
    initial: Any = msgspec.UNSET
    aggs: dict[str, WindowAggregate] | None = None
    top: Top | None = None
    late: Literal["drop", "update"] = "drop"
    retain_ms: NonNegative | None = None
    max_keys: int | None = DEFAULT_MAX_KEYS
    on_max_keys: OnMaxKeys = "fail"
    idle_timeout_ms: Positive | None = None
    """Event time: after this long with no input, the watermark follows the clock."""

    @property
    def event_time(self) -> bool:
        """Whether windows follow the items' timestamps (else the clock)."""
        return self.timestamp is not None or self.timestamp_field is not None

    def __post_init__(self) -> None:
        check_max_keys(self.max_keys)
        problems = _problems(self)
        if problems:
            raise ValueError("; ".join(problems))


def _problems(c: WindowConfig) -> list[str]:
    found: list[str] = []
    for a, b in (("timestamp", "timestamp_field"), ("key", "key_field")):
        if getattr(c, a) is not None and getattr(c, b) is not None:
            found.append(f"set either '{a}' or '{b}', not both")
    if c.time == "event" and not c.event_time:
        found.append("time: event needs 'timestamp' (CEL) or 'timestamp_field'")
    if c.time == "processing" and c.event_time:
        found.append("time: processing takes no 'timestamp' or 'timestamp_field'")
    if not c.event_time:
        if c.allowed_lateness_ms:
            found.append("'allowed_lateness_ms' needs event time (set 'timestamp')")
        if c.late == "update":
            found.append("late: update needs event time (set 'timestamp')")
        if c.idle_timeout_ms is not None:
            found.append(
                "'idle_timeout_ms' needs event time (set 'timestamp'); "
                "processing-time windows close on the clock already"
            )
    if c.retain_ms is not None and c.late != "update":
        found.append("'retain_ms' applies only with late: update")
    for name in ("allowed_lateness_ms", "retain_ms", "idle_timeout_ms"):
        found.extend(_whole_ms(name, getattr(c, name)))
    chosen = [n for n in ("op", "aggs", "fn", "top") if getattr(c, n) is not None]
    if len(chosen) > 1:
        found.append(
            f"set one of 'op', 'aggs', 'fn' or 'top', not {' and '.join(chosen)}"
        )
    if c.top is not None:
        if c.value is not None:
            found.append("with 'top', items are ranked by 'top.by'; drop 'value'")
        # Validation compiles top-level Expr fields only; this one is nested.
        try:
            compile_expr(c.top.by)
        except ValueError as exc:
            found.append(f"top.by: {exc}")
    if c.fn is not None and c.initial is msgspec.UNSET:
        found.append("'fn' needs 'initial', the accumulator of an empty window")
    if c.fn is None and c.initial is not msgspec.UNSET:
        found.append("'initial' applies only with 'fn'")
    if c.value is not None and c.aggs is not None:
        found.append("with 'aggs', give each aggregate its own 'value'")
    elif c.value is not None and c.fn is None and c.op in (None, "count"):
        found.append("op: count takes no 'value'")
    for name, spec in (c.aggs or {}).items():
        if spec.op == "count" and spec.value is not None:
            found.append(f"aggs.{name}: op count takes no 'value'")
        elif spec.value is not None:
            # Validation compiles top-level Expr fields only; these are nested.
            try:
                compile_expr(spec.value)
            except ValueError as exc:
                found.append(f"aggs.{name}.value: {exc}")
    if c.aggs is not None and not c.aggs:
        found.append("'aggs' must name at least one aggregate")
    return found


def _whole_ms(name: str, ms: float | None) -> list[str]:
    """Durations are whole milliseconds, as the times they are added to."""
    if ms is None or float(ms).is_integer():
        return []
    return [f"'{name}' must be a finite, whole number of milliseconds, got {ms!r}"]


def _check_sizes(**sizes: float) -> None:
    for name, size in sizes.items():
        for msg in _whole_ms(name, size):
            raise ValueError(msg)


class Tumbling(WindowConfig, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Config of ``window.tumbling``: fixed windows of ``size_ms``, end to end."""

    size_ms: Positive

    def __post_init__(self) -> None:
        _check_sizes(size_ms=self.size_ms)
        super().__post_init__()


class Sliding(WindowConfig, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Config of ``window.sliding``: windows of ``size_ms`` every ``slide_ms``."""

    size_ms: Positive
    slide_ms: Positive

    def __post_init__(self) -> None:
        _check_sizes(size_ms=self.size_ms, slide_ms=self.slide_ms)
        if self.slide_ms > self.size_ms:
            msg = (
                f"slide_ms ({self.slide_ms:g}) must be <= size_ms "
                f"({self.size_ms:g}), or some items would fall in no window"
            )
            raise ValueError(msg)
        if self.size_ms / self.slide_ms > MAX_WINDOWS_PER_ITEM:
            msg = (
                f"size_ms / slide_ms is {self.size_ms / self.slide_ms:g}: each item "
                f"would join that many windows (at most {MAX_WINDOWS_PER_ITEM})"
            )
            raise ValueError(msg)
        super().__post_init__()


class Session(WindowConfig, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Config of ``window.session``: per key, windows closed by ``gap_ms`` of quiet.

    ``merge: "module:attr"`` (required with ``fn``) combines the accumulators
    of two sessions that an item bridges, as ``merge(earlier, later)``.
    """

    gap_ms: Positive
    merge: FnRef | None = None

    def __post_init__(self) -> None:
        _check_sizes(gap_ms=self.gap_ms)
        if self.fn is not None and self.merge is None:
            msg = (
                "'fn' needs 'merge' in a session window: an item can bridge two "
                "sessions, and their accumulators must then be combined"
            )
            raise ValueError(msg)
        if self.merge is not None and self.fn is None:
            msg = "'merge' applies only with 'fn'"
            raise ValueError(msg)
        super().__post_init__()


# --- reading items ------------------------------------------------------------------


def _int_timestamp(t: Any, source: str) -> int:
    """A timestamp that is not an int: a float holding a whole number, or bad."""
    if type(t) is float and t.is_integer():  # NaN and infinities are not
        return int(t)
    hint = ""
    if type(t) is float and math.isfinite(t):
        hint = " (from seconds: int(ts * 1000))"
    msg = (
        f"the timestamp ({source}) must be an int of epoch milliseconds, "
        f"got {t!r}{hint}"
    )
    raise BadItem(msg)


def reader(cfg: WindowConfig, agg: Aggregator) -> Reader:
    """Return ``read(x, now) -> (t, state key, key, values)`` for one config.

    ``now`` is the arrival time (processing time) or None (read the item's
    timestamp); ``t`` is in epoch milliseconds. The state key is the key as a str,
    usable as a dict key in the state. A bad item raises `BadItem`.
    """
    ts: Callable[[Any], Any] | None = None
    ts_source = key_source = ""
    if cfg.timestamp_field is not None:
        ts_source = f"field {cfg.timestamp_field!r}"
        ts = itemgetter(cfg.timestamp_field)
    elif cfg.timestamp is not None:
        ts_source = repr(cfg.timestamp)
        ts = expr_function(cfg.timestamp)
    kg: Callable[[Any], Any] | None = None
    if cfg.key_field is not None:
        key_source = f"field {cfg.key_field!r}"
        kg = itemgetter(cfg.key_field)
    elif cfg.key is not None:
        key_source = repr(cfg.key)
        kg = expr_function(cfg.key)
    values = agg.evaluate if agg.values else None
    encode = _JSON.encode

    def read(x: Any, now: int | None) -> tuple[int, str, Any, Any]:
        if now is not None:
            t = now
        else:
            assert ts is not None
            try:
                t = ts(x)
            except Exception as exc:
                msg = f"cannot read the timestamp ({ts_source}): {why(exc)}"
                raise BadItem(msg) from None
            if type(t) is not int:
                t = _int_timestamp(t, ts_source)
        if kg is None:
            return t, "", None, values(x) if values is not None else None
        try:
            k = kg(x)
        except Exception as exc:
            msg = f"cannot read the key ({key_source}): {why(exc)}"
            raise BadItem(msg) from None
        if type(k) is str and k[:1] != "\0":
            skey = k
        else:
            # Other keys (and str keys that could collide) are JSON behind a NUL.
            try:
                skey = "\0" + encode(k).decode()
            except (TypeError, msgspec.EncodeError) as exc:
                msg = f"the key ({key_source}) is not a plain value: {why(exc)}"
                raise BadItem(msg) from None
        return t, skey, k, values(x) if values is not None else None

    return read


# --- node types -----------------------------------------------------------------------


@node("window.tumbling", config=Tumbling, timed=True, rescale=rescale_window)
async def tumbling_window(
    inp: AsyncIterator[Any], *, config: Tumbling, ctx: NodeContext
) -> AsyncIterator[dict[str, Any]]:
    """Aggregate items over fixed, non-overlapping windows of ``size_ms``.

    Windows are aligned on multiples of ``size_ms`` from time 0; each item
    falls in exactly one. Stream-safe: a window is emitted when it closes.
    The aggregate is ``op`` (with ``value``), ``aggs``, ``fn``, or ``top:
    {n, by, order}``: the window's ``n`` best items, best first, ranked by
    ``by`` (CEL, a number; ``order: desc`` by default, ties to the earlier
    timestamp), holding at most ``n`` items per record.

    Example:
        config ``{size_ms: 1000, timestamp_field: ts, key_field: user}``;
        input ``[{user: a, ts: 200}, {user: b, ts: 500}, {user: a, ts: 900},
        {user: a, ts: 1100}]``;
        output ``[{key: a, start: 0, end: 1000, value: 2, count: 2},
        {key: b, start: 0, end: 1000, value: 1, count: 1},
        {key: a, start: 1000, end: 2000, value: 1, count: 1}]``.
    """
    agg = Aggregator(config)
    size = config.size_ms
    engine = FixedWindows(config, ctx, agg, reader(config, agg), int(size), int(size))
    async for out in drive(inp, config.event_time, engine, config.idle_timeout_ms):
        yield out


@node("window.sliding", config=Sliding, timed=True, rescale=rescale_window)
async def sliding_window(
    inp: AsyncIterator[Any], *, config: Sliding, ctx: NodeContext
) -> AsyncIterator[dict[str, Any]]:
    """Aggregate items over windows of ``size_ms`` starting every ``slide_ms``.

    Windows start at multiples of ``slide_ms``; an item belongs to every
    window covering it (about ``size_ms / slide_ms`` of them). Stream-safe.
    Aggregates as ``window.tumbling`` (``op``, ``aggs``, ``fn`` or ``top``). A
    late item that missed some of its windows but not all is added to the
    open ones and also goes to ``error``, naming the windows it missed.

    Example:
        config ``{size_ms: 2000, slide_ms: 1000, timestamp_field: ts, op: sum,
        value: x.n}``;
        input ``[{ts: 500, n: 1}, {ts: 1500, n: 2}, {ts: 2500, n: 4}]``;
        output ``[{start: -1000, end: 1000, value: 1, count: 1},
        {start: 0, end: 2000, value: 3, count: 2},
        {start: 1000, end: 3000, value: 6, count: 2},
        {start: 2000, end: 4000, value: 4, count: 1}]``.
    """
    agg = Aggregator(config)
    read = reader(config, agg)
    size, slide = int(config.size_ms), int(config.slide_ms)
    engine = FixedWindows(config, ctx, agg, read, size, slide)
    async for out in drive(inp, config.event_time, engine, config.idle_timeout_ms):
        yield out


@node("window.session", config=Session, timed=True, rescale=rescale_window)
async def session_window(
    inp: AsyncIterator[Any], *, config: Session, ctx: NodeContext
) -> AsyncIterator[dict[str, Any]]:
    """Aggregate each key's bursts of activity, split by ``gap_ms`` of quiet.

    A session is ``[first item, last item + gap)``; it closes when no item of
    its key came for ``gap_ms``. An out-of-order item that bridges two
    sessions merges them (a ``top`` keeps the best ``n`` of both). Stream-safe.
    Aggregates as ``window.tumbling``. An item more than the allowed lateness
    out of order may start a session next to one already emitted.

    Example:
        config ``{gap_ms: 1000, timestamp_field: ts, key_field: user,
        op: collect, value: x.page}``;
        input ``[{user: a, ts: 0, page: home}, {user: a, ts: 500, page: cart},
        {user: b, ts: 700, page: home}, {user: a, ts: 3000, page: home}]``;
        output ``[{key: a, start: 0, end: 1500, value: [home, cart], count: 2},
        {key: b, start: 700, end: 1700, value: [home], count: 1},
        {key: a, start: 3000, end: 4000, value: [home], count: 1}]``.
    """
    agg = Aggregator(config, config.merge)
    engine = Sessions(config, ctx, agg, reader(config, agg), int(config.gap_ms))
    async for out in drive(inp, config.event_time, engine, config.idle_timeout_ms):
        yield out
