"""WebAssembly nodes: ``wasm.map``, ``wasm.filter``, ``wasm.flat_map``.

They run an exported function of a WebAssembly module, sandboxed by
wasmtime (the ``wasm`` extra): no WASI unless the workflow grants it, a
time limit per call, a memory limit. Items cross into the module's linear
memory as MessagePack, a batch per call. docs/sandbox.md describes the ABI
a module author follows, the limits and a server's rules for uploads.

A family of its own (its own ``flowstream.nodes`` entry point) because it
needs a native dependency that is optional: without wasmtime the nodes are
still listed, and using one fails with a message naming the extra, while
every other node type works.

The code is split by concept:

* `connectors.wasm._engine`: the engine, its epoch clock (time limits),
  reading and compiling modules, the WASI grants;
* `connectors.wasm._sandbox`: one instance and the ABI's crossing;
* `connectors.wasm.nodes`: the node types and their config.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._engine import TICK_S as TICK_S, allowed_wasi as allowed_wasi
from ._sandbox import Sandbox, open_sandbox
from .nodes import WasmFunction, wasm_filter, wasm_flat_map, wasm_map

if TYPE_CHECKING:
    from flowstream import NodeSpec

__all__ = [
    "NODES",
    "Sandbox",
    "WasmFunction",
    "open_sandbox",
    "wasm_filter",
    "wasm_flat_map",
    "wasm_map",
]

NODES: tuple[NodeSpec, ...] = (wasm_map, wasm_filter, wasm_flat_map)
"""This family's node types (its ``flowstream.nodes`` entry point)."""
