"""Window nodes: aggregate items over tumbling, sliding or session windows.

Every window node reads one input and emits one record per fired window::

    {"key": k, "start": s, "end": e, "value": v, "count": n}

``key`` is left out for global (unkeyed) windows; ``start``/``end`` are seconds
(or epoch milliseconds, ints, with ``time_unit: ms``) and the window is
``[start, end)``. Records come out in window-end order
(windows with the same end: in the order their keys first appeared). All three
types are stream-safe: they emit as windows close, and at the end of input
every open window fires, in order.

Config shared by the three types:

* Time. ``time: processing`` (the default) stamps each item with the event
  loop's clock when it arrives; windows close on the clock even with no new
  input. Event time reads a timestamp in seconds (taken to the microsecond)
  from each item, with ``timestamp`` (CEL over ``x``, e.g. ``x.ts``) or
  ``timestamp_field`` (a mapping key, much faster). ``time_unit: ms`` reads
  timestamps as milliseconds (as epoch-ms event times are) and emits
  ``start``/``end`` as int milliseconds. The watermark is the
  largest event time seen minus ``allowed_lateness_ms``; a window fires when
  the watermark reaches its end.
* Key. ``key`` (CEL) or ``key_field`` gives one set of windows per key;
  without either, windows are global.
* Aggregate. ``op``: ``count`` (the default), ``sum``, ``min``, ``max``,
  ``mean``, ``first``, ``last`` or ``collect``, over ``value`` (CEL, default
  ``x``). ``first``, ``last`` and the order of ``collect`` follow the items'
  timestamps (ties: arrival order). ``max_rows`` is the arg-max: the list of
  the window's *items* whose ``value`` equals the window's maximum (all
  ties, in timestamp order), in one linear pass and keeping only those items
  (e.g. the highest bids of each window: ``op: max_rows, value: x.price``).
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

import copy
from operator import itemgetter
from typing import TYPE_CHECKING, Annotated, Any, Literal

import msgspec

from ..core.expr import Expr, FnRef, compile_expr, expr_function, resolve_callable
from ..core.node import node
from ._bounds import DEFAULT_MAX_KEYS, OnMaxKeys, check_max_keys
from ._windowing import US, BadItem, FixedWindows, Sessions, drive, to_us

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from typing import TypeAlias

    from ..core.node import NodeContext

    Reader: TypeAlias = Callable[[Any, int | None], tuple[int, str, Any, Any]]

__all__ = [
    "Session",
    "Sliding",
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


class WindowConfig(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True
):
    """The config fields every window type shares (see the module docstring)."""

    time: Literal["processing", "event"] | None = None
    timestamp: Expr | None = None
    timestamp_field: str | None = None
    allowed_lateness_ms: NonNegative = 0.0
    key: Expr | None = None
    key_field: str | None = None
    op: Op | None = None
    value: Expr | None = None
    fn: FnRef | None = None
    initial: Any = msgspec.UNSET
    aggs: dict[str, WindowAggregate] | None = None
    late: Literal["drop", "update"] = "drop"
    retain_ms: NonNegative | None = None
    max_keys: int | None = DEFAULT_MAX_KEYS
    on_max_keys: OnMaxKeys = "fail"
    time_unit: Literal["s", "ms"] = "s"
    """The unit of timestamps read and of the emitted ``start``/``end``."""

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
    if c.retain_ms is not None and c.late != "update":
        found.append("'retain_ms' applies only with late: update")
    for name in ("allowed_lateness_ms", "retain_ms"):
        if getattr(c, name) == float("inf"):
            found.append(f"'{name}' must be finite")
    chosen = [n for n in ("op", "aggs", "fn") if getattr(c, n) is not None]
    if len(chosen) > 1:
        found.append(f"set one of 'op', 'aggs' or 'fn', not {' and '.join(chosen)}")
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


def _check_sizes(**sizes: float) -> None:
    """Sizes are > 0 (msgspec checks that), finite and at least a microsecond."""
    for name, size in sizes.items():
        if not size < float("inf") or to_us(size) < 1:
            msg = f"'{name}' must be a finite number of ms >= 0.001, got {size:g}"
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


# --- aggregation -------------------------------------------------------------------


def _add(acc: Any, v: Any, t: int) -> Any:
    return acc + v


def _min(acc: Any, v: Any, t: int) -> Any:
    return v if acc is None or v < acc else acc


def _max(acc: Any, v: Any, t: int) -> Any:
    return v if acc is None or v > acc else acc


def _first(acc: Any, v: Any, t: int) -> Any:
    return [t, v] if acc is None or t < acc[0] else acc


def _last(acc: Any, v: Any, t: int) -> Any:
    return [t, v] if acc is None or t >= acc[0] else acc


def _merge_first(a: Any, b: Any) -> Any:
    return a if b is None or (a is not None and a[0] <= b[0]) else b


def _merge_last(a: Any, b: Any) -> Any:
    return b if a is None or (b is not None and b[0] >= a[0]) else a


def _optional(f: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    return lambda a, b: b if a is None else a if b is None else f(a, b)


def _plus(a: Any, b: Any) -> Any:
    return a + b


def _same(acc: Any, n: int) -> Any:
    return acc


_TIE: Any = object()
"""A ``max_rows`` step's answer for an item tying the maximum: commit appends it."""


def _max_rows(acc: Any, v: Any, t: int) -> Any:
    # v is (score, item); acc is [best score, [[t, item], ...]].
    score = v[0]
    if acc is None or score > acc[0]:
        return [score, [[t, v[1]]]]
    return _TIE if score == acc[0] else acc


def _merge_max_rows(a: Any, b: Any) -> Any:
    if a[0] == b[0]:
        return [a[0], a[1] + b[1]]
    return a if a[0] > b[0] else b


def _rows(acc: Any, n: int) -> list[Any]:
    return [v for _, v in sorted(acc[1], key=itemgetter(0))]


def _collected(acc: Any, n: int) -> list[Any]:
    return [v for _, v in sorted(acc, key=itemgetter(0))]


# op: (initial accumulator, step (None: the commit appends), merge, result)
_OPS: dict[str, tuple[Any, Any, Callable[[Any, Any], Any], Any]] = {
    "sum": (0, _add, _plus, _same),
    "mean": (0, _add, _plus, lambda acc, n: acc / n),
    "min": (None, _min, _optional(min), _same),
    "max": (None, _max, _optional(max), _same),
    "first": (None, _first, _merge_first, lambda acc, n: acc[1]),
    "last": (None, _last, _merge_last, lambda acc, n: acc[1]),
    "collect": (None, None, _plus, _collected),
    "max_rows": (None, _max_rows, _optional(_merge_max_rows), _rows),
}


class Aggregator:
    """Makes, updates, merges and reads the records of one config."""

    def __init__(self, cfg: WindowConfig, merge: str | None = None) -> None:
        self.keyed = cfg.key is not None or cfg.key_field is not None
        if cfg.aggs is not None:
            self.names: list[str] | None = list(cfg.aggs)
            specs: list[tuple[str, str | None]] = [
                (a.op, a.value) for a in cfg.aggs.values()
            ]
        else:
            self.names = None
            specs = [("fn" if cfg.fn else cfg.op or "count", cfg.value)]
        self.custom = cfg.fn is not None
        self.sources: list[str] = []
        self.values: list[Callable[[Any], Any]] = []
        self.inits: list[Callable[[], Any]] = []
        self.steps: list[tuple[int, int, Callable[[Any, Any, int], Any]]] = []
        self.appends: list[tuple[int, int]] = []
        self.merges: list[Callable[[Any, Any], Any]] = []
        self.results: list[Callable[[Any, int], Any]] = []
        for slot, (op, source) in enumerate(specs, start=2):
            if op == "count":
                self.inits.append(lambda: None)
                self.merges.append(lambda a, b: None)
                self.results.append(lambda acc, n: n)
                continue
            v = len(self.values)
            self.sources.append(source or "x")
            value = _identity if source in (None, "x") else _cel(source)
            if op == "max_rows":
                value = _with_item(value)
            self.values.append(value)
            if op == "fn":
                assert cfg.fn is not None  # the config checked fn and initial
                self._custom(cfg.fn, cfg.initial, merge, slot, v)
                continue
            initial, step, merge_op, result = _OPS[op]
            self.inits.append(list if op == "collect" else _const(initial))
            if step is None:
                self.appends.append((slot, v))
            else:
                self.steps.append((slot, v, step))
            self.merges.append(merge_op)
            self.results.append(result)
        self.count_only = not self.values
        self.ms = cfg.time_unit == "ms"

    def _custom(
        self, fn_ref: str, initial: Any, merge: str | None, slot: int, v: int
    ) -> None:
        fn = resolve_callable(fn_ref)
        self.inits.append(lambda: copy.deepcopy(initial))
        self.steps.append((slot, v, lambda acc, x, t: fn(acc, x)))
        self.merges.append(resolve_callable(merge) if merge else _no_merge)
        self.results.append(_same)

    def new(self, key: Any) -> list[Any]:
        """Return the record of an empty window."""
        return [key, 0, *[init() for init in self.inits]]

    def evaluate(self, x: Any) -> list[Any]:
        """Return the item's values, one per aggregate that reads one."""
        out = []
        for i, f in enumerate(self.values):
            try:
                out.append(f(x))
            except Exception as exc:
                msg = f"cannot evaluate the value {self.sources[i]!r}: {_why(exc)}"
                raise BadItem(msg) from None
        return out

    def step(self, rec: list[Any], vals: list[Any], t: int) -> list[Any]:
        """Phase one: the record's new accumulators with the item (no mutation).

        Raises:
            BadItem: A built-in aggregate cannot take the value.
            Exception: The user's ``fn`` failed (a failure of the node).
        """
        try:
            return [f(rec[slot], vals[v], t) for slot, v, f in self.steps]
        except Exception as exc:
            if self.custom:
                raise
            msg = f"cannot aggregate the value: {_why(exc)}"
            raise BadItem(msg) from None

    def commit(self, rec: list[Any], news: list[Any], vals: list[Any], t: int) -> None:
        """Phase two: store what `step` computed; cannot fail."""
        rec[1] += 1
        for (slot, v, _), new in zip(self.steps, news, strict=True):
            if new is _TIE:
                rec[slot][1].append([t, vals[v][1]])
            else:
                rec[slot] = new
        for slot, v in self.appends:
            rec[slot].append([t, vals[v]])

    def merge(self, a: list[Any], b: list[Any]) -> list[Any]:
        """Return a new record holding both records' items (``a`` is the earlier).

        Raises:
            Exception: The user's ``merge`` failed.
        """
        merged = [a[0], a[1] + b[1]]
        for slot, m in enumerate(self.merges, start=2):
            merged.append(m(a[slot], b[slot]))
        return merged

    def output(self, rec: list[Any], start: int, end: int) -> dict[str, Any]:
        """Return the emitted record of one window."""
        n = rec[1]
        if self.names is None:
            value = self.results[0](rec[2], n)
        else:
            value = {
                name: result(rec[slot], n)
                for slot, (name, result) in enumerate(
                    zip(self.names, self.results, strict=True), start=2
                )
            }
        s: float
        e: float
        if self.ms:
            s, e = start // 1000, end // 1000
        else:
            s, e = start / US, end / US
        if self.keyed:
            return {"key": rec[0], "start": s, "end": e, "value": value, "count": n}
        return {"start": s, "end": e, "value": value, "count": n}


def _why(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _identity(x: Any) -> Any:
    return x


def _with_item(value: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda x: (value(x), x)


def _const(value: Any) -> Callable[[], Any]:
    return lambda: value


def _cel(source: str) -> Callable[[Any], Any]:
    return expr_function(source)


def _no_merge(a: Any, b: Any) -> Any:  # the config requires merge with fn
    msg = "cannot merge two sessions without 'merge'"
    raise RuntimeError(msg)


def reader(cfg: WindowConfig, agg: Aggregator) -> Reader:
    """Return ``read(x, now) -> (t, state key, key, values)`` for one config.

    ``now`` is the arrival time (processing time) or None (read the item's
    timestamp); ``t`` is in microseconds. The state key is the key as a str,
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
    scale = US if cfg.time_unit == "s" else 1000
    unit = "seconds" if cfg.time_unit == "s" else "milliseconds"

    def read(x: Any, now: int | None) -> tuple[int, str, Any, Any]:
        if now is not None:
            t = now
        else:
            assert ts is not None
            try:
                seconds = ts(x)
            except Exception as exc:
                msg = f"cannot read the timestamp ({ts_source}): {_why(exc)}"
                raise BadItem(msg) from None
            kind = type(seconds)
            try:
                if kind is int:
                    t = seconds * scale
                elif kind is float:
                    t = round(seconds * scale)  # NaN and infinities raise
                else:
                    raise TypeError(kind.__name__)
            except (ValueError, OverflowError, TypeError):
                msg = (
                    f"the timestamp ({ts_source}) must be a finite number of "
                    f"{unit}, got {seconds!r}"
                )
                raise BadItem(msg) from None
        if kg is None:
            return t, "", None, values(x) if values is not None else None
        try:
            k = kg(x)
        except Exception as exc:
            msg = f"cannot read the key ({key_source}): {_why(exc)}"
            raise BadItem(msg) from None
        if type(k) is str and k[:1] != "\0":
            skey = k
        else:
            # Other keys (and str keys that could collide) are JSON behind a NUL.
            try:
                skey = "\0" + encode(k).decode()
            except (TypeError, msgspec.EncodeError) as exc:
                msg = f"the key ({key_source}) is not a plain value: {_why(exc)}"
                raise BadItem(msg) from None
        return t, skey, k, values(x) if values is not None else None

    return read


# --- node types -----------------------------------------------------------------------


@node("window.tumbling", config=Tumbling, timed=True)
async def tumbling_window(
    inp: AsyncIterator[Any], *, config: Tumbling, ctx: NodeContext
) -> AsyncIterator[dict[str, Any]]:
    """Aggregate items over fixed, non-overlapping windows of ``size_ms``.

    Windows are aligned on multiples of ``size_ms`` from time 0; each item
    falls in exactly one. Stream-safe: a window is emitted when it closes.

    Example:
        config ``{size_ms: 1000, timestamp_field: ts, key_field: user}``;
        input ``[{user: a, ts: 0.2}, {user: b, ts: 0.5}, {user: a, ts: 0.9},
        {user: a, ts: 1.1}]``;
        output ``[{key: a, start: 0.0, end: 1.0, value: 2, count: 2},
        {key: b, start: 0.0, end: 1.0, value: 1, count: 1},
        {key: a, start: 1.0, end: 2.0, value: 1, count: 1}]``.
    """
    agg = Aggregator(config)
    size = config.size_ms
    engine = FixedWindows(config, ctx, agg, reader(config, agg), size, size)
    async for out in drive(inp, config.event_time, engine):
        yield out


@node("window.sliding", config=Sliding, timed=True)
async def sliding_window(
    inp: AsyncIterator[Any], *, config: Sliding, ctx: NodeContext
) -> AsyncIterator[dict[str, Any]]:
    """Aggregate items over windows of ``size_ms`` starting every ``slide_ms``.

    Windows start at multiples of ``slide_ms``; an item belongs to every
    window covering it (about ``size_ms / slide_ms`` of them). Stream-safe. A
    late item that missed some of its windows but not all is added to the
    open ones and also goes to ``error``, naming the windows it missed.

    Example:
        config ``{size_ms: 2000, slide_ms: 1000, timestamp_field: ts, op: sum,
        value: x.n}``;
        input ``[{ts: 0.5, n: 1}, {ts: 1.5, n: 2}, {ts: 2.5, n: 4}]``;
        output ``[{start: -1.0, end: 1.0, value: 1, count: 1},
        {start: 0.0, end: 2.0, value: 3, count: 2},
        {start: 1.0, end: 3.0, value: 6, count: 2},
        {start: 2.0, end: 4.0, value: 4, count: 1}]``.
    """
    agg = Aggregator(config)
    read = reader(config, agg)
    engine = FixedWindows(config, ctx, agg, read, config.size_ms, config.slide_ms)
    async for out in drive(inp, config.event_time, engine):
        yield out


@node("window.session", config=Session, timed=True)
async def session_window(
    inp: AsyncIterator[Any], *, config: Session, ctx: NodeContext
) -> AsyncIterator[dict[str, Any]]:
    """Aggregate each key's bursts of activity, split by ``gap_ms`` of quiet.

    A session is ``[first item, last item + gap)``; it closes when no item of
    its key came for ``gap_ms``. An out-of-order item that bridges two
    sessions merges them. Stream-safe. An item more than the allowed lateness
    out of order may start a session next to one already emitted.

    Example:
        config ``{gap_ms: 1000, timestamp_field: ts, key_field: user,
        op: collect, value: x.page}``;
        input ``[{user: a, ts: 0.0, page: home}, {user: a, ts: 0.5, page: cart},
        {user: b, ts: 0.7, page: home}, {user: a, ts: 3.0, page: home}]``;
        output ``[{key: a, start: 0.0, end: 1.5, value: [home, cart], count: 2},
        {key: b, start: 0.7, end: 1.7, value: [home], count: 1},
        {key: a, start: 3.0, end: 4.0, value: [home], count: 1}]``.
    """
    agg = Aggregator(config, config.merge)
    engine = Sessions(config, ctx, agg, reader(config, agg), config.gap_ms)
    async for out in drive(inp, config.event_time, engine):
        yield out
