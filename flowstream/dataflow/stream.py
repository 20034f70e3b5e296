"""`DataStream[T]`: the typed items of one node's output, and what follows it.

Each method adds one node to the dataflow's workflow and returns the stream of
its output, typed by what the node emits::

    flow = Dataflow("evens")
    evens = flow.source(range_source(10)).filter(lambda x: x % 2 == 0)
    squares = evens.map(lambda x: x * x)          # DataStream[int]
    out = squares.collect()
    result = flow.run()
    out.items(result)                               # [0, 4, 16, 36, 64]

Functions are live callables (`flowstream.core.live`): they run in place of
a CEL expression or a ``"module:attr"`` reference, fused as the builder's
nodes are. Every node type has a method on `DataStream` (here, or in the
mixins `flowstream.dataflow.joins` and `flowstream.dataflow.stateful`) or a
function in `flowstream.dataflow.connectors` (`NODE_TYPES` lists them, a
test checks it against the registry); `DataStream.then` adds any other
node type, by name or as an ``@node`` function, which is then registered in
the dataflow's registry.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Generic, TypeVar

from ..core.node import ERROR_PORT
from .base import builds
from .joins import JoinMethods
from .records import (
    DeadLetterRecord as DeadLetterRecord,
    JoinChange as JoinChange,
    Joined as Joined,
    Keyed as Keyed,
)
from .stateful import StatefulMethods

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence

    from ..core.node import NodeSpec
    from ..runtime.result import RunResult
    from .connectors import Sink
    from .flow import Dataflow
    from .windows import Aggregate, WindowKind, WindowResult

__all__ = [
    "Collected",
    "DataStream",
    "DeadLetterRecord",
    "JoinChange",
    "Joined",
    "Keyed",
    "KeyedStream",
    "Routes",
]

T_co = TypeVar("T_co", covariant=True)
U = TypeVar("U")
K = TypeVar("K")
R = TypeVar("R")


class DataStream(JoinMethods[T_co], StatefulMethods[T_co]):
    """The items of one output port of one node; methods add nodes after it.

    The join methods come from `JoinMethods`, the folds and windows from
    `StatefulMethods`; the rest are here.

    Attributes:
        flow: The dataflow the stream belongs to.
        node: The node id.
        port: The output port (``out``, ``error``, a route's name...).
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return f"<DataStream {self.node}.{self.port}>"

    def _out(self, node: str) -> DataStream[Any]:
        return DataStream(self.flow, node)

    def with_settings(self, **settings: Any) -> DataStream[T_co]:
        """Set workflow settings of this stream's node (``retry``, ``fuse``...).

        Returns the same stream, for chaining.
        """
        decl = self.flow.workflow.get_node(self.node)
        for key, value in settings.items():
            if key not in type(decl).__struct_fields__ or key in ("id", "type"):
                msg = f"{key!r} is not a node setting; config goes to the method"
                raise TypeError(msg)
            setattr(decl, key, value)
        return self

    @property
    def error(self) -> DataStream[DeadLetterRecord]:
        """The node's dead letters (items it could not process, with reasons)."""
        return DataStream(self.flow, self.node, ERROR_PORT)

    # --- one item in, one or none out ------------------------------------------

    @builds("transform.map")
    def map(self, fn: Callable[[T_co], U], *, name: str | None = None) -> DataStream[U]:
        """``fn(item)`` for each item (``transform.map``)."""
        return DataStream(self.flow, self._then("transform.map", {"fn": fn}, name))

    @builds("transform.filter")
    def filter(
        self, fn: Callable[[T_co], object], *, name: str | None = None
    ) -> DataStream[T_co]:
        """The items for which ``fn(item)`` is true (``transform.filter``)."""
        return DataStream(self.flow, self._then("transform.filter", {"fn": fn}, name))

    @builds("transform.flat_map")
    def flat_map(
        self, fn: Callable[[T_co], Iterable[U]], *, name: str | None = None
    ) -> DataStream[U]:
        """Every item of ``fn(item)``, for each item (``transform.flat_map``)."""
        return DataStream(self.flow, self._then("transform.flat_map", {"fn": fn}, name))

    @builds("transform.map_async")
    def map_async(
        self,
        fn: Callable[[T_co], Awaitable[U]],
        *,
        concurrency: int = 1,
        ordered: bool = True,
        name: str | None = None,
    ) -> DataStream[U]:
        """``await fn(item)``, ``concurrency`` at once (``transform.map_async``)."""
        node_id = self._then("transform.map_async", {"fn": fn}, name)
        stream: DataStream[U] = DataStream(self.flow, node_id)
        return stream.with_settings(concurrency=concurrency, ordered=ordered)

    @builds("transform.key_by")
    def key_by(
        self, key: Callable[[T_co], K], *, name: str | None = None
    ) -> KeyedStream[K, T_co]:
        """Records ``{"key": key(item), "value": item}`` (``transform.key_by``).

        Keyed nodes after it (`KeyedStream.window`, ``reduce``, ``scan``) group
        by that key.
        """
        return KeyedStream(
            self.flow, self._then("transform.key_by", {"key": key}, name)
        )

    @builds("transform.dedupe")
    def dedupe(
        self,
        key: Callable[[T_co], object] | None = None,
        *,
        max_keys: int | None = None,
        ttl_ms: float | None = None,
        name: str | None = None,
    ) -> DataStream[T_co]:
        """The first item of each key (``transform.dedupe``; set a bound)."""
        config = {"key": key, "max_keys": max_keys, "ttl_ms": ttl_ms}
        return DataStream(self.flow, self._then("transform.dedupe", config, name))

    @builds("transform.select")
    def select(
        self,
        *,
        pick: Sequence[str] | None = None,
        rename: Mapping[str, str] | None = None,
        fields: Mapping[str, Callable[[T_co], object] | str] | None = None,
        keep_others: bool = False,
        name: str | None = None,
    ) -> DataStream[dict[str, Any]]:
        """Records with the chosen fields (``transform.select``)."""
        config = {
            "pick": None if pick is None else list(pick),
            "rename": None if rename is None else dict(rename),
            "fields": None if fields is None else dict(fields),
            "keep_others": keep_others,
        }
        return DataStream(self.flow, self._then("transform.select", config, name))

    @builds("transform.json_parse")
    def json_parse(self, *, name: str | None = None) -> DataStream[Any]:
        """Each item (JSON text or bytes) decoded (``transform.json_parse``)."""
        return DataStream(self.flow, self._then("transform.json_parse", {}, name))

    @builds("transform.json_stringify")
    def json_stringify(
        self, *, as_bytes: bool = False, name: str | None = None
    ) -> DataStream[Any]:
        """Each item as JSON text (or bytes) (``transform.json_stringify``)."""
        config = {"as_bytes": as_bytes}
        return DataStream(
            self.flow, self._then("transform.json_stringify", config, name)
        )

    @builds("debug.log")
    def log(
        self, message: str = "item", *, level: str = "info", name: str | None = None
    ) -> DataStream[T_co]:
        """Log each item and pass it on (``debug.log``)."""
        config = {"message": message, "level": level}
        return DataStream(self.flow, self._then("debug.log", config, name))

    @builds("http.request")
    def http_request(
        self,
        url: str | None = None,
        *,
        method: str = "GET",
        name: str | None = None,
        **config: Any,
    ) -> DataStream[Any]:
        """One HTTP request per item; the response record (``http.request``)."""
        merged = {"url": url, "method": method, **config}
        return DataStream(self.flow, self._then("http.request", merged, name))

    @builds("wasm.map")
    def wasm_map(
        self, module: str, function: str, *, name: str | None = None
    ) -> DataStream[Any]:
        """A sandboxed WebAssembly function per item (``wasm.map``)."""
        config = {"module": module, "function": function}
        return DataStream(self.flow, self._then("wasm.map", config, name))

    @builds("wasm.filter")
    def wasm_filter(
        self, module: str, function: str, *, name: str | None = None
    ) -> DataStream[T_co]:
        """The items a sandboxed WebAssembly predicate keeps (``wasm.filter``)."""
        config = {"module": module, "function": function}
        return DataStream(self.flow, self._then("wasm.filter", config, name))

    @builds("wasm.flat_map")
    def wasm_flat_map(
        self, module: str, function: str, *, name: str | None = None
    ) -> DataStream[Any]:
        """Every item a sandboxed WebAssembly function returns (``wasm.flat_map``)."""
        config = {"module": module, "function": function}
        return DataStream(self.flow, self._then("wasm.flat_map", config, name))

    @builds("routed.flow")
    def routed(
        self, flow: str, *, concurrency: int = 8, name: str | None = None
    ) -> DataStream[Any]:
        """Run a routed flow (a workflow file) per item (``routed.flow``)."""
        config = {"flow": flow, "concurrency": concurrency}
        return DataStream(self.flow, self._then("routed.flow", config, name))

    # --- time -----------------------------------------------------------------

    @builds("time.delay")
    def delay(self, ms: float, *, name: str | None = None) -> DataStream[T_co]:
        """Each item ``ms`` later (``time.delay``)."""
        return DataStream(self.flow, self._then("time.delay", {"ms": ms}, name))

    @builds("transform.throttle")
    def throttle(
        self, rate: int, *, per_ms: float = 1000.0, name: str | None = None
    ) -> DataStream[T_co]:
        """At most ``rate`` items per ``per_ms`` (``transform.throttle``)."""
        config = {"rate": rate, "per_ms": per_ms}
        return DataStream(self.flow, self._then("transform.throttle", config, name))

    @builds("transform.batch")
    def batch(
        self,
        size: int | None = None,
        *,
        interval_ms: float | None = None,
        name: str | None = None,
    ) -> DataStream[list[T_co]]:
        """Lists of up to ``size`` items, or what came in ``interval_ms``."""
        config = {"size": size, "interval_ms": interval_ms}
        return DataStream(self.flow, self._then("transform.batch", config, name))

    # --- shape ----------------------------------------------------------------

    @builds("control.route")
    def route(
        self,
        routes: Mapping[str, Callable[[T_co], object]],
        *,
        first_match: bool = False,
        name: str | None = None,
    ) -> Routes[T_co]:
        """Send each item to the named routes whose predicate holds.

        Returns the `Routes`: ``routes["big"]`` (or ``routes.default``, for
        items no route took) is a stream.
        """
        config = {"routes": dict(routes), "first_match": first_match}
        return Routes(self.flow, self._then("control.route", config, name))

    @builds("control.split")
    def split(
        self, n: int, key: Callable[[T_co], object], *, name: str | None = None
    ) -> list[DataStream[T_co]]:
        """``n`` streams; each key always goes to the same one (a stable hash)."""
        node_id = self._then("control.split", {"n": n, "key": key}, name)
        return [DataStream(self.flow, node_id, f"p{i}") for i in range(n)]

    def merge(
        self, *others: DataStream[T_co], name: str | None = None
    ) -> DataStream[T_co]:
        """This stream and ``others`` as one (see `Dataflow.merge`)."""
        return self.flow.merge(self, *others, name=name)

    # --- any node -------------------------------------------------------------

    def then(
        self,
        node: str | NodeSpec,
        config: Mapping[str, Any] | None = None,
        *,
        name: str | None = None,
        **settings: Any,
    ) -> DataStream[Any]:
        """Add any node type after this stream: by id, or an ``@node`` function.

        An ``@node`` function is registered in the dataflow's registry. Its
        config may hold callables where it takes expressions or references.
        """
        node_id = self.flow.add_node(
            node, config, inputs={"in": self}, name=name, **settings
        )
        return DataStream(self.flow, node_id)

    # --- ends -----------------------------------------------------------------

    def sink(self, sink: Sink[T_co], *, name: str | None = None) -> str:
        """Send the items to a sink (`flowstream.dataflow.connectors`); its id."""
        return self._then(sink.type_id, sink.config, name or sink.name)

    @builds("sink.collect")
    def collect(self, *, name: str | None = None) -> Collected[T_co]:
        """Keep the items in the run's result: ``collected.items(result)``."""
        return Collected(self._then("sink.collect", {}, name))

    @builds("sink.null")
    def drop(self, *, name: str | None = None) -> str:
        """Consume and drop the items (``sink.null``); returns the node id."""
        return self._then("sink.null", {}, name)

    def for_each(self, fn: Callable[[T_co], object], *, name: str | None = None) -> str:
        """Call ``fn(item)`` for each item (live results), then drop it."""
        return self.map(_Effect(fn), name=name).drop()


class _Effect:
    """Call a function for its effect and pass the item on."""

    __slots__ = ("__qualname__", "fn")

    def __init__(self, fn: Callable[[Any], object]) -> None:
        self.fn = fn
        self.__qualname__ = f"for_each_{getattr(fn, '__name__', 'fn')}"

    def __call__(self, item: Any) -> Any:
        self.fn(item)
        return item


def _on_value(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda kv: fn(kv["value"])


class KeyedStream(DataStream[Keyed[K, T_co]], Generic[K, T_co]):
    """Keyed records from `DataStream.key_by`; windows and folds group by the key."""

    __slots__ = ()

    def window(  # type: ignore[override]
        self,
        kind: WindowKind,
        aggregate: Aggregate[T_co, R],
        *,
        timestamp: Callable[[T_co], float] | None = None,
        name: str | None = None,
        **config: Any,
    ) -> DataStream[WindowResult[R]]:
        """Aggregate each key's items per window; functions see the items."""
        agg = dict(aggregate.config)
        if callable(agg.get("value")):
            agg["value"] = _on_value(agg["value"])
        elif "fn" in agg:
            agg["value"] = _on_value(lambda x: x)
        merged = {**kind.config, **agg, **config, "key_field": "key"}
        if timestamp is not None:
            merged["timestamp"] = _on_value(timestamp)
        return DataStream(self.flow, self._then(kind.type_id, merged, name))

    def reduce(  # type: ignore[override]
        self, fn: Callable[[R, T_co], R], initial: R, *, name: str | None = None
    ) -> DataStream[Keyed[K, R]]:
        """``fn(acc, item)`` per key, emitted at the end of input."""
        config = {"fn": fn, "initial": initial, "keyed": True}
        return DataStream(self.flow, self._then("transform.reduce", config, name))

    def scan(  # type: ignore[override]
        self, fn: Callable[[R, T_co], R], initial: R, *, name: str | None = None
    ) -> DataStream[Keyed[K, R]]:
        """``fn(acc, item)`` per key, emitted after every item."""
        config = {"fn": fn, "initial": initial, "keyed": True}
        return DataStream(self.flow, self._then("transform.scan", config, name))


class Routes(Generic[T_co]):
    """The output streams of a `DataStream.route`: by name, and ``default``."""

    __slots__ = ("flow", "node")

    def __init__(self, flow: Dataflow, node: str) -> None:
        self.flow = flow
        self.node = node

    def __getitem__(self, route: str) -> DataStream[T_co]:
        decl = self.flow.workflow.get_node(self.node)
        if route not in decl.config["routes"] and route != "default":
            known = ", ".join([*decl.config["routes"], "default"])
            msg = f"node {self.node!r} has no route {route!r} (it has {known})"
            raise KeyError(msg)
        return DataStream(self.flow, self.node, route)

    @property
    def default(self) -> DataStream[T_co]:
        """Items that no route took."""
        return self["default"]

    @property
    def error(self) -> DataStream[DeadLetterRecord]:
        """Items a predicate failed on."""
        return DataStream(self.flow, self.node, ERROR_PORT)


class Collected(Generic[T_co]):
    """A ``sink.collect`` node: read what it kept from a run's result."""

    __slots__ = ("node",)

    def __init__(self, node: str) -> None:
        self.node = node

    def items(self, result: RunResult) -> list[T_co]:
        """The items the node kept in ``result``, in order."""
        return list(result.outputs.get(self.node, {}).get("out", []))
