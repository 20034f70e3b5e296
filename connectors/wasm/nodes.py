"""The ``wasm.map``, ``wasm.filter`` and ``wasm.flat_map`` node types.

Each runs a WebAssembly module's exported function on whole batches (one
call per batch, see `connectors.wasm._sandbox` for the ABI) under the
node's ``limits``. A call that fails (a trap, the time limit, an answer
that breaks the ABI) fails its batch; the runtime then runs the batch again
item by item, so exactly the failing items go to error handling, each with
the message (``continue_on_error`` sends them to the ``error`` port).

The module is loaded when a run starts (compiled once per process and
content, then cached): a module that cannot load fails the run at its
start, naming the import, export or limit at fault.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flowstream import SandboxedConfig, node
from flowstream.errors import SandboxError

from . import _engine
from ._sandbox import Sandbox, open_sandbox

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

__all__ = ["WasmFunction", "wasm_filter", "wasm_flat_map", "wasm_map"]


class WasmFunction(SandboxedConfig, frozen=True, kw_only=True):
    """Config of the wasm nodes: a module, its function, and `Limits`.

    Attributes:
        module: A path to a ``.wasm`` (binary) or ``.wat`` (text) file, or
            the module itself as ``base64:<bytes>`` (how uploads to a server
            send it: a server reads no path).
        function: The exported function to call, of type
            ``(ptr: i32, len: i32) -> i64`` (docs/sandbox.md).
        limits: Time per call, memory pages, WASI grants (none by default).
    """

    module: str
    function: str

    def __post_init__(self) -> None:
        if not self.module:
            msg = "module must be a path or 'base64:' followed by the module"
            raise ValueError(msg)
        if self.module.startswith(_engine.INLINE_PREFIX):
            _engine.decode_inline(self.module)  # refuse bad base64 now
        if not self.function:
            msg = "function must name an exported function"
            raise ValueError(msg)

    def host_paths(self) -> list[tuple[str, str]]:
        """The module's path, unless the module is inline.

        (Not a `FilePath`: the value may be the module itself.)
        """
        if self.module.startswith(_engine.INLINE_PREFIX):
            return []
        return [("module", self.module)]


def _open(config: WasmFunction) -> Sandbox:
    return open_sandbox(config.module, config.function, config.limits)


def _map_batch(config: WasmFunction) -> Callable[[list[Any]], list[Any]]:
    box = _open(config)
    return box.call


def _filter_batch(config: WasmFunction) -> Callable[[list[Any]], list[Any]]:
    call = _open(config).call
    function = config.function

    def kernel(batch: list[Any]) -> list[Any]:
        keep = call(batch)
        for flag in keep:
            if type(flag) is not bool:
                msg = (
                    f"{function} answered {type(flag).__name__} {flag!r} for an "
                    "item; wasm.filter needs true or false per item"
                )
                raise SandboxError(msg)
        return [x for x, k in zip(batch, keep, strict=True) if k]

    return kernel


def _flat_map_batch(config: WasmFunction) -> Callable[[list[Any]], list[Any]]:
    call = _open(config).call
    function = config.function

    def kernel(batch: list[Any]) -> list[Any]:
        out: list[Any] = []
        for elements in call(batch):
            if type(elements) is not list:
                msg = (
                    f"{function} answered {type(elements).__name__} for an item; "
                    "wasm.flat_map needs a list per item"
                )
                raise SandboxError(msg)
            out.extend(elements)
        return out

    return kernel


async def _per_item(
    kernel: Callable[[list[Any]], list[Any]], inp: AsyncIterator[Any]
) -> AsyncIterator[Any]:
    # Outside a runtime (spec.fn on a plain iterable): one call per item.
    async for x in inp:
        for y in kernel([x]):
            yield y


@node("wasm.map", config=WasmFunction, kernel=_map_batch)
async def wasm_map(
    inp: AsyncIterator[Any], *, config: WasmFunction
) -> AsyncIterator[Any]:
    """Replace each item by what a WebAssembly function answers. Stream-safe.

    Sandboxed: no WASI unless ``limits.wasi`` grants it, a time limit per
    call and a memory limit (``limits``), so a server runs uploads of it.

    Example:
        ``{id: f, type: wasm.map, config: {module: examples/wasm/arith.wat,
        function: double_plus_one}}`` turns ``1, 2, 3`` into ``3, 5, 7``.
    """
    async for y in _per_item(_map_batch(config), inp):
        yield y


@node("wasm.filter", config=WasmFunction, kernel=_filter_batch)
async def wasm_filter(
    inp: AsyncIterator[Any], *, config: WasmFunction
) -> AsyncIterator[Any]:
    """Keep the items for which a WebAssembly function answers true. Stream-safe.

    The function answers one boolean per item; anything else fails the item.

    Example:
        ``{id: odd, type: wasm.filter, config: {module: examples/wasm/arith.wat,
        function: is_odd}}`` keeps ``1, 3`` of ``1, 2, 3``.
    """
    async for y in _per_item(_filter_batch(config), inp):
        yield y


@node("wasm.flat_map", config=WasmFunction, kernel=_flat_map_batch)
async def wasm_flat_map(
    inp: AsyncIterator[Any], *, config: WasmFunction
) -> AsyncIterator[Any]:
    """Replace each item by the list a WebAssembly function answers. Stream-safe.

    An empty list drops the item; an answer that is not a list fails it.

    Example:
        ``{id: twice, type: wasm.flat_map, config: {module:
        examples/wasm/arith.wat, function: twice}}`` turns ``1, 2`` into
        ``1, 1, 2, 2``.
    """
    async for y in _per_item(_flat_map_batch(config), inp):
        yield y
