"""Control flow between ports: merge, zip, route and split streams.

Every node here has ports named by its config (``ports=`` on `node`): the
inputs of ``control.merge`` and ``control.zip``, the outputs of
``control.route`` and ``control.split``. A workflow connects them by name
(``"route.big -> alert"``), and validation rejects a port the config does not
declare.
"""

from __future__ import annotations

import contextlib
import re
import zlib
from typing import TYPE_CHECKING, Any

import msgspec

from ..core.expr import Expr, expr_function
from ..core.node import ERROR_PORT, OUT_PORT, node
from ..runtime.merging import merge_batches

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

    from ..core.node import NodeContext

__all__ = ["merge", "merge_batches", "route", "split", "split_port", "zip_items"]

_PORT_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
DEFAULT_PORT = "default"
MAX_SPLIT = 1024


def _check_port_names(
    field: str, names: Sequence[str], reserved: Sequence[str]
) -> None:
    if not names:
        msg = f"{field} must name at least one port"
        raise ValueError(msg)
    seen: set[str] = set()
    for name in names:
        if not _PORT_NAME.match(name):
            msg = (
                f"{field}: port name {name!r} must start with a letter or _ and "
                "hold only letters, digits, _ and -"
            )
            raise ValueError(msg)
        if name in reserved:
            taken = ", ".join(repr(r) for r in reserved)
            msg = f"{field}: port name {name!r} is reserved ({taken} always exist)"
            raise ValueError(msg)
        if name in seen:
            msg = f"{field}: port name {name!r} appears twice"
            raise ValueError(msg)
        seen.add(name)


# --- merge ---------------------------------------------------------------------


class Merge(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Config of ``control.merge``.

    Attributes:
        inputs: The input port names, one per producer the workflow wants to
            tell apart.
        tag: Emit ``{"input": port, "item": x}`` instead of ``x``, so that
            downstream nodes know which input each item came from.
    """

    inputs: list[str] = msgspec.field(default_factory=lambda: ["in"])
    tag: bool = False

    def __post_init__(self) -> None:
        _check_port_names("inputs", self.inputs, ())


def _merge_ports(config: Merge) -> tuple[Sequence[str], Sequence[str]]:
    return config.inputs, ()


def _tag(port: str, batch: list[Any]) -> list[Any]:
    return [{"input": port, "item": x} for x in batch]


@node("control.merge", config=Merge, ports=_merge_ports, batched=True, aligned=True)
async def merge(
    *inputs: AsyncIterator[list[Any]], config: Merge
) -> AsyncIterator[list[Any]]:
    """Forward the items of every input as they arrive; end when all inputs end.

    Order is kept within each input; across inputs, whichever is ready first
    goes first, and inputs that are ready together take turns (a busy input
    never starves the others). Works on whole batches (`merge_batches`, one
    wait per batch), so it costs nearly nothing per item. Stream-safe; holds
    no state. One port can already take several producers;
    named ports say which producer is which (and ``tag: true`` keeps it in
    the items).

    Example:
        ``{id: both, type: control.merge, config: {inputs: [a, b], tag: true}}``
        turns ``{a: [1, 2], b: [3]}`` into ``[{input: a, item: 1},
        {input: a, item: 2}, {input: b, item: 3}]`` (in any order across inputs).
    """
    ports = config.inputs
    if len(inputs) == 1:
        # A single input may be a fused upstream: read it in this task only.
        async for batch in inputs[0]:
            yield (
                [{"input": ports[0], "item": x} for x in batch] if config.tag else batch
            )
        return
    async with contextlib.aclosing(merge_batches(inputs)) as merged:
        async for i, part in merged:
            if part is not None:
                yield (
                    [{"input": ports[i], "item": x} for x in part]
                    if config.tag
                    else part
                )


# --- zip -----------------------------------------------------------------------


class Zip(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Config of ``control.zip``.

    Attributes:
        inputs: The input port names, in the order of the emitted lists.
        as_dict: Emit ``{port: item}`` mappings instead of lists.
    """

    inputs: list[str] = msgspec.field(default_factory=lambda: ["left", "right"])
    as_dict: bool = False

    def __post_init__(self) -> None:
        _check_port_names("inputs", self.inputs, ())


def _zip_ports(config: Zip) -> tuple[Sequence[str], Sequence[str]]:
    return config.inputs, ()


@node("control.zip", config=Zip, ports=_zip_ports)
def zip_items(*items: Any, config: Zip) -> Any:
    """Pair the n-th items of every input; stop when the shortest input ends.

    A one-shot function of one item per input: the runtime calls it once per
    set of one item from each port, in order, and ends it (closing the other
    inputs, whose producers then stop sending here) as soon as one input
    ends. Leftover items of longer inputs are dropped. Stream-safe, but an
    input that runs ahead of the others fills its channel and then holds its
    producer back (backpressure): zip two branches of one source only when
    they keep the same pace. Under stream checkpoints the inputs are read as
    they come, into queues in the node's state (the barrier must pass every
    input, so items waiting for a partner are part of the epoch); an input
    more than a batch ahead is not read until the others catch up, except
    while an epoch is aligned: then it is read up to its barrier, so inputs
    of different rates make the state grow by up to a channel's worth per
    epoch.

    Example:
        ``{id: pairs, type: control.zip, config: {inputs: [l, r], as_dict: true}}``
        turns ``{l: [1, 2, 3], r: [a, b]}`` into ``[{l: 1, r: a}, {l: 2, r: b}]``.
    """
    if config.as_dict:
        return dict(zip(config.inputs, items, strict=True))
    return list(items)


# --- route ---------------------------------------------------------------------


class Route(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Config of ``control.route``.

    Attributes:
        routes: Output port name -> CEL predicate over the item ``x``. Port
            ``default`` always exists and takes the items no predicate matches.
        first_match: Send each item only to the first matching port, in the
            order the routes are written; otherwise to every matching port.
    """

    routes: dict[str, Expr]
    first_match: bool = False

    def __post_init__(self) -> None:
        _check_port_names(
            "routes", list(self.routes), (OUT_PORT, ERROR_PORT, "default")
        )


def _route_ports(config: Route) -> tuple[Sequence[str], Sequence[str]]:
    return ("in",), (*config.routes, DEFAULT_PORT)


@node("control.route", config=Route, ports=_route_ports)
async def route(
    *inputs: AsyncIterator[Any], config: Route, ctx: NodeContext
) -> AsyncIterator[Any]:
    """Send each item to the output ports whose predicate is true, else ``default``.

    Every predicate must give a bool (``x.size`` is an error; write
    ``x.size > 0``). All predicates are evaluated before anything is sent, so
    an item whose predicate fails is sent nowhere and goes to the node's
    error handling whole (retry, or the ``error`` port). Nothing is emitted on
    ``out``. Stream-safe; holds no state.

    Example:
        ``{id: sort, type: control.route, config: {routes: {even: "x % 2 == 0",
        big: "x > 2"}}}`` turns ``[1, 2, 3, 4]`` into ``{even: [2, 4],
        big: [3, 4], default: [1]}``.
    """
    predicates = [(port, expr_function(src)) for port, src in config.routes.items()]
    first_match = config.first_match
    emit = ctx.emit
    async for x in inputs[0]:
        targets: list[str] = []
        for port, predicate in predicates:
            verdict = predicate(x)
            if verdict is not True and verdict is not False:
                msg = (
                    f"the predicate of route {port!r} ({config.routes[port]!r}) "
                    f"must give a bool, got {type(verdict).__name__} {verdict!r:.60}"
                )
                raise TypeError(msg)
            if verdict:
                targets.append(port)
                if first_match:
                    break
        for port in targets or (DEFAULT_PORT,):
            emit(port, x)
    return
    yield  # an async generator that emits only through ctx


# --- split ---------------------------------------------------------------------


class Split(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Config of ``control.split``.

    Attributes:
        n: How many output ports, named ``p0`` .. ``p{n-1}``.
        key: The partition key, a CEL expression over the item ``x``.
    """

    n: int
    key: Expr

    def __post_init__(self) -> None:
        if not 1 <= self.n <= MAX_SPLIT:
            msg = f"n must be between 1 and {MAX_SPLIT}, got {self.n}"
            raise ValueError(msg)


def _split_ports(config: Split) -> tuple[Sequence[str], Sequence[str]]:
    return ("in",), tuple(f"p{i}" for i in range(config.n))


# Map keys sorted: equal dicts always encode (and so hash) the same.
_key_encoder = msgspec.json.Encoder(order="deterministic")


def split_port(key: Any, n: int) -> int:
    """Return the partition (``0 <= p < n``) of a key, the same in every process.

    The hash is CRC-32 of the key's JSON encoding with map keys sorted, so it
    does not depend on Python's per-process string hashing. Keys of
    different types are different keys (``1``, ``1.0`` and ``"1"``).

    Raises:
        TypeError: The key has no JSON form.
    """
    try:
        data = _key_encoder.encode(key)
    except (TypeError, msgspec.EncodeError) as exc:
        msg = f"cannot hash split key {key!r:.60}: {exc}"
        raise TypeError(msg) from exc
    return zlib.crc32(data) % n


@node("control.split", config=Split, ports=_split_ports)
async def split(
    *inputs: AsyncIterator[Any], config: Split, ctx: NodeContext
) -> AsyncIterator[Any]:
    """Partition items by a hash of ``key`` over ports ``p0`` .. ``p{n-1}``.

    The same key always goes to the same port, across runs and processes
    (see `split_port`), so each port sees every item of its keys, in order.
    Nothing is emitted on ``out``. Stream-safe; holds no state.

    Example:
        ``{id: shard, type: control.split, config: {n: 2, key: "x.user"}}``
        turns ``[{user: ann}, {user: bob}, {user: ann}]`` into
        ``{p0: [{user: ann}, {user: ann}], p1: [{user: bob}]}``.
    """
    key = expr_function(config.key)
    n = config.n
    ports = [f"p{i}" for i in range(n)]
    emit = ctx.emit
    async for x in inputs[0]:
        emit(ports[split_port(key(x), n)], x)
    return
    yield  # an async generator that emits only through ctx
