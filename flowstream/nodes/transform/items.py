"""Per-item transforms: map, filter, flat_map, select, key_by, JSON, map_async.

Each stateless 1-in/1-out node here also carries a batch kernel: in a fused
chain the runtime applies the kernels to whole batches in one task.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

import msgspec

from ...core.codec import decode_json, encode_json
from ...core.expr import Expr, FnRef, expr_function, resolve_callable
from ...core.node import ItemKernel, Kernel, node
from ...core.values import Json
from .._common import ItemFunction, item_function

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from ...core.node import NodeContext
from ._shared import _describe


def _map_kernel(config: ItemFunction) -> Kernel:
    return ItemKernel("map", item_function(config))


def _filter_kernel(config: ItemFunction) -> Kernel:
    return ItemKernel("filter", item_function(config))


@node("transform.map", config=ItemFunction, kernel=_map_kernel)
async def map_items(
    inp: AsyncIterator[Any], *, config: ItemFunction
) -> AsyncIterator[Any]:
    """Replace each item by ``expr`` (CEL over ``x``) or ``fn(x)``. Stream-safe.

    Example:
        ``{id: double, type: transform.map, config: {expr: "x * 2"}}`` turns
        ``1, 2, 3`` into ``2, 4, 6``.
    """
    f = item_function(config)
    async for x in inp:
        yield f(x)


@node("transform.filter", config=ItemFunction, kernel=_filter_kernel)
async def filter_items(
    inp: AsyncIterator[Any], *, config: ItemFunction
) -> AsyncIterator[Any]:
    """Keep the items for which ``expr`` or ``fn(x)`` is true. Stream-safe.

    Example:
        ``{id: odd, type: transform.filter, config: {expr: "x % 2 == 1"}}``
        keeps ``1, 3`` of ``1, 2, 3``.
    """
    f = item_function(config)
    async for x in inp:
        if f(x):
            yield x


# --- flat_map ------------------------------------------------------------------


def _flat_map_function(config: ItemFunction) -> Callable[[Any], Any]:
    f = item_function(config)

    def elements(x: Any) -> list[Any]:
        result = f(x)
        if type(result) is list:
            return result
        if isinstance(result, str | bytes | bytearray | dict) or not hasattr(
            result, "__iter__"
        ):
            msg = f"flat_map needs a list from its function, got {_describe(result)}"
            raise TypeError(msg)
        # Drained here, so an iterator failing halfway emits none of the item.
        return list(result)

    return elements


def _flat_map_kernel(config: ItemFunction) -> Kernel:
    elements = _flat_map_function(config)

    def kernel(batch: list[Any]) -> list[Any]:
        out: list[Any] = []
        for x in batch:
            out.extend(elements(x))
        return out

    return kernel


@node("transform.flat_map", config=ItemFunction, kernel=_flat_map_kernel)
async def flat_map(
    inp: AsyncIterator[Any], *, config: ItemFunction
) -> AsyncIterator[Any]:
    """Replace each item by the elements of the list ``expr``/``fn`` returns.

    Stream-safe. An empty list drops the item; a result that is not a list (a
    string or a mapping, say) is a failure of that item.

    Example:
        ``{id: pairs, type: transform.flat_map, config: {expr: "[x, x * 10]"}}``
        turns ``[1, 2]`` into ``[1, 10, 2, 20]``.
    """
    elements = _flat_map_function(config)
    async for x in inp:
        for y in elements(x):
            yield y


# --- select --------------------------------------------------------------------


class Select(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Config of ``transform.select``; the output holds exactly these fields.

    Attributes:
        pick: Fields of the input copied as they are.
        rename: ``{old: new}``: the input's field ``old`` copied as ``new``.
        fields: ``{name: expr}``: fields computed with CEL over the item ``x``.
        keep_others: Also copy every input field not renamed (then ``pick``
            is pointless and refused).
    """

    pick: list[str] | None = None
    rename: dict[str, str] | None = None
    fields: dict[str, Expr] | None = None
    keep_others: bool = False

    def __post_init__(self) -> None:
        if not (self.pick or self.rename or self.fields or self.keep_others):
            msg = "set at least one of 'pick', 'rename' or 'fields'"
            raise ValueError(msg)
        if self.keep_others and self.pick:
            msg = "'pick' with 'keep_others: true' is redundant: every field is kept"
            raise ValueError(msg)
        names = [
            *(self.pick or ()),
            *(self.rename or {}).values(),
            *(self.fields or {}),
        ]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            msg = (
                f"output field {', '.join(map(repr, twice))} is set twice "
                "(by 'pick', 'rename' or 'fields')"
            )
            raise ValueError(msg)


def _select_function(config: Select) -> Callable[[Any], dict[str, Any]]:
    pick = tuple(config.pick or ())
    rename = tuple((config.rename or {}).items())
    computed = tuple(
        (name, expr_function(source)) for name, source in (config.fields or {}).items()
    )
    keep = config.keep_others
    renamed = frozenset(old for old, _ in rename)

    def select(x: Any) -> dict[str, Any]:
        if not isinstance(x, dict):
            msg = f"select needs a record (a mapping), got {_describe(x)}"
            raise TypeError(msg)
        # Always a new dict: the input may be shared with other branches.
        out = {k: v for k, v in x.items() if k not in renamed} if keep else {}
        try:
            for name in pick:
                out[name] = x[name]
            for old, new in rename:
                out[new] = x[old]
        except KeyError as exc:
            msg = f"the record has no field {exc.args[0]!r}"
            raise LookupError(msg) from None
        for name, f in computed:
            out[name] = f(x)
        return out

    return select


def _select_kernel(config: Select) -> Kernel:
    select = _select_function(config)
    return lambda batch: list(map(select, batch))


@node("transform.select", config=Select, kernel=_select_kernel)
async def select(inp: AsyncIterator[Any], *, config: Select) -> AsyncIterator[Any]:
    """Build a new record per item: picked, renamed and computed fields.

    Stream-safe. The input is never changed. A missing picked or renamed
    field, a non-record item or a failing expression is a failure of that
    item.

    Example:
        ``{id: shape, type: transform.select, config: {pick: [id],
        fields: {name: "x.user.name", total: "x.price * x.qty"}}}``
        turns ``[{id: 7, user: {name: ada}, price: 2, qty: 3}]``
        into ``[{id: 7, name: ada, total: 6}]``.
    """
    f = _select_function(config)
    async for x in inp:
        yield f(x)


# --- key_by --------------------------------------------------------------------


class KeyBy(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Config of ``transform.key_by``: set exactly one of ``key`` or ``field``.

    Attributes:
        key: A CEL expression over the item ``x`` giving its key.
        field: A top-level field of the item to use as its key.
    """

    key: Expr | None = None
    field: str | None = None

    def __post_init__(self) -> None:
        if (self.key is None) == (self.field is None):
            msg = "set exactly one of 'key' (a CEL expression) or 'field' (a name)"
            raise ValueError(msg)


def _key_function(config: KeyBy) -> Callable[[Any], Any]:
    if config.key is not None:
        return expr_function(config.key)
    name = config.field

    def field(x: Any) -> Any:
        try:
            return x[name]
        except (KeyError, TypeError, IndexError):
            msg = f"key_by: {_describe(x)} has no field {name!r}"
            raise LookupError(msg) from None

    return field


def _key_by_function(config: KeyBy) -> Callable[[Any], dict[str, Any]]:
    key = _key_function(config)
    return lambda x: {"key": key(x), "value": x}


def _key_by_kernel(config: KeyBy) -> Kernel:
    keyed = _key_by_function(config)
    return lambda batch: list(map(keyed, batch))


@node("transform.key_by", config=KeyBy, kernel=_key_by_kernel)
async def key_by(inp: AsyncIterator[Any], *, config: KeyBy) -> AsyncIterator[Any]:
    """Wrap each item as a keyed record ``{"key": k, "value": item}``. Stream-safe.

    This is the shape keyed nodes accept (``transform.scan`` and
    ``transform.reduce`` with ``keyed: true``): the key travels with the item,
    so several downstream nodes can group by it without each computing it.

    Example:
        ``{id: by_user, type: transform.key_by, config: {key: "x.user"}}``
        turns ``[{user: ada, n: 1}]``
        into ``[{key: ada, value: {user: ada, n: 1}}]``.
    """
    f = _key_by_function(config)
    async for x in inp:
        yield f(x)


# --- JSON ----------------------------------------------------------------------


def _parse(x: Any) -> Any:
    if not isinstance(x, bytes | str | Json):
        msg = f"json_parse needs bytes, str or Json, got {_describe(x)}"
        raise TypeError(msg)
    return decode_json(x)


def _json_parse_kernel(config: None) -> Kernel:
    return lambda batch: list(map(_parse, batch))


@node("transform.json_parse", kernel=_json_parse_kernel)
async def json_parse(inp: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """Decode each JSON document (bytes, str or `Json`) into plain values.

    Stream-safe. A malformed document is a failure of that item: under
    ``continue_on_error`` it goes to the dead letters with msgspec's message
    (which says where the document breaks). Takes no config.

    Example:
        ``{id: parse, type: transform.json_parse}``
        turns ``['{"a": 1}', "[1, 2]"]`` into ``[{a: 1}, [1, 2]]``.
    """
    async for x in inp:
        yield _parse(x)


class JsonStringify(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True
):
    """Config of ``transform.json_stringify``.

    Attributes:
        as_bytes: Emit UTF-8 bytes instead of str.
    """

    as_bytes: bool = False


def _stringify_function(config: JsonStringify) -> Callable[[Any], Any]:
    if config.as_bytes:
        return encode_json
    return lambda x: encode_json(x).decode()


def _json_stringify_kernel(config: JsonStringify) -> Kernel:
    f = _stringify_function(config)
    return lambda batch: list(map(f, batch))


@node("transform.json_stringify", config=JsonStringify, kernel=_json_stringify_kernel)
async def json_stringify(
    inp: AsyncIterator[Any], *, config: JsonStringify
) -> AsyncIterator[Any]:
    """Encode each value as compact JSON text (str, or bytes with ``as_bytes``).

    Stream-safe. Bytes inside values are written as ``{"$bytes": base64}``
    and `Json` values are spliced in as they are. A value with no JSON form
    (NaN, a Stream, an arbitrary object) is a failure of that item.

    Example:
        ``{id: text, type: transform.json_stringify}``
        turns ``[{a: [1, 2]}]`` into ``['{"a":[1,2]}']``.
    """
    f = _stringify_function(config)
    async for x in inp:
        yield f(x)


class MapAsyncConfig(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True
):
    """Config of ``transform.map_async``.

    Attributes:
        fn: The callable, ``"package.module:attr"``: ``async def f(x)`` (or a
            plain function, or one returning an awaitable).
    """

    fn: FnRef


class MapAsync:
    """Replace each item by ``await fn(x)``: one call per item. Stream-safe.

    With the node's ``concurrency: N`` (beside ``config``) up to N calls run
    at once, and ``ordered: false`` emits each result as soon as it is ready
    (else in input order). A call's failure goes through the node's retry
    policy and error handling for that item alone. Under stream checkpoints,
    the calls in flight when a barrier comes finish before it passes.

    Example:
        ``{id: fetch, type: transform.map_async, concurrency: 20, config:
        {fn: "mymodule:lookup"}}`` calls ``lookup`` for up to 20 items at once.

        Reuse clients and connections across calls: opening an HTTP client
        or a database connection inside ``fn`` pays a new connection (and
        TLS handshake) per item. ``fn`` has no hook to open or close
        anything, so a call that needs a client is better written as a class
        node whose ``initialize`` opens it (an ``httpx.AsyncClient``, a
        pool) and whose ``shutdown`` closes it, even when the run fails;
        its ``async def execute(self, x)`` takes ``concurrency: N`` and
        ``ordered`` like this node (docs/guide/writing-nodes.md, "A
        class"). For plain HTTP requests, ``http.request`` does this
        already.
    """

    def __init__(self, config: MapAsyncConfig) -> None:
        self._fn = fn = resolve_callable(config.fn)
        if inspect.iscoroutinefunction(fn):
            # The callable itself is the call: no wrapping coroutine per item.
            self.execute = fn  # type: ignore[method-assign]

    async def initialize(self, ctx: NodeContext) -> None:
        """Nothing to open."""

    async def shutdown(self) -> None:
        """Nothing to close."""

    async def execute(self, inp: Any) -> Any:
        """Call ``fn`` on one item and return its result."""
        result = self._fn(inp)
        if inspect.isawaitable(result):
            result = await result
        return result


map_async = node("transform.map_async", config=MapAsyncConfig)(MapAsync)
