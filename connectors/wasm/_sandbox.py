"""A `Sandbox`: one instance of a module, called through the flowstream ABI.

The ABI (docs/sandbox.md has the whole of it, for module authors):

* the module exports its ``memory``, ``alloc(size: i32) -> i32`` (a pointer
  to ``size`` writable bytes, kept for the host until it calls ``dealloc``)
  and ``dealloc(ptr: i32, size: i32)``;
* the node's ``function`` has the type ``(ptr: i32, len: i32) -> i64``: it
  reads a MessagePack array (the batch) at ``ptr``, and returns
  ``out_ptr << 32 | out_len``, where a MessagePack document holds its
  answer: an array, one entry per input item, or a string, an error message
  that fails the whole call; the output must stay valid until the module's
  next call (the host copies it at once).

The host keeps one input buffer per instance, allocated once and grown when
a batch needs more, so a call costs one write, one call and one read. A
call that traps, runs over its time limit or breaks the ABI discards the
instance: the next call gets a fresh one, so no state of a failed call
survives into the next.
"""

from __future__ import annotations

import ctypes
from typing import TYPE_CHECKING, Any

import msgspec

from flowstream.errors import SandboxError, TimeLimitExceeded

from . import _engine
from ._crossing import crossing

if TYPE_CHECKING:
    from flowstream import Limits

    from ._engine import CompiledModule

__all__ = ["Sandbox", "open_sandbox"]

_MASK = 0xFFFF_FFFF
_MIN_BUFFER = 4096


def _signature(ty: Any) -> str:
    params = ",".join(str(p) for p in ty.params)
    results = ",".join(str(r) for r in ty.results)
    return f"({params}) -> ({results})"


_EXPECTED = {
    "alloc": "(i32) -> (i32)",
    "dealloc": "(i32,i32) -> ()",
}
_FUNCTION = "(i32,i32) -> (i64)"


def check_module(compiled: CompiledModule, function: str, limits: Limits) -> None:
    """Refuse a module that imports what it was not granted or lacks an export.

    Raises:
        SandboxError: Names the import or export at fault.
    """
    api = _engine.wasmtime_api()
    allowed = _engine.allowed_wasi(limits.wasi)
    for module, name in compiled.imports:
        if module == _engine.WASI_MODULE:
            if name in allowed:
                continue
            granted = ", ".join(limits.wasi) or "none"
            msg = (
                f"{compiled.label} imports {module}.{name}, which this node does "
                f"not grant (limits.wasi: {granted}); a sandboxed module gets no "
                "WASI function unless the workflow grants it"
            )
        else:
            msg = (
                f"{compiled.label} imports {module}.{name}, which flowstream does "
                "not provide: a sandboxed module may import only the WASI "
                "functions its node grants"
            )
        raise SandboxError(msg)
    exports = {e.name: e.type for e in compiled.module.exports}
    if not isinstance(exports.get("memory"), api.MemoryType):
        msg = f"{compiled.label} exports no memory named 'memory' (see the ABI)"
        raise SandboxError(msg)
    for name, want in (*_EXPECTED.items(), (function, _FUNCTION)):
        ty = exports.get(name)
        if not isinstance(ty, api.FuncType):
            known = ", ".join(
                n for n, t in exports.items() if isinstance(t, api.FuncType)
            )
            msg = (
                f"{compiled.label} exports no function {name!r} "
                f"(its functions: {known or 'none'})"
            )
            raise SandboxError(msg)
        got = _signature(ty)
        if got != want:
            msg = f"{compiled.label}: {name} has the type {got}, the ABI needs {want}"
            raise SandboxError(msg)


class Sandbox:
    """One module instance under `Limits`; `call` runs a batch through it.

    Not thread-safe: one node's kernel owns it.
    """

    __slots__ = (
        "__weakref__",
        "_address",
        "_alloc",
        "_api",
        "_buffer",
        "_capacity",
        "_crossing",
        "_dealloc",
        "_decode",
        "_encode",
        "_memory",
        "_store",
        "compiled",
        "function",
        "limits",
        "ticks",
    )

    def __init__(self, compiled: CompiledModule, function: str, limits: Limits) -> None:
        check_module(compiled, function, limits)
        self._api = _engine.wasmtime_api()
        self.compiled = compiled
        self.function = function
        self.limits = limits
        self.ticks = _engine.deadline_ticks(limits.time_limit_ms)
        self._encode = msgspec.msgpack.Encoder().encode
        self._decode = msgspec.msgpack.Decoder().decode
        self._store: Any = None
        _engine.attach(self)
        _engine.enter()  # a start function runs, under the limit too
        try:
            self._instantiate()
        finally:
            _engine.leave()

    def _instantiate(self) -> None:
        api = self._api
        store = api.Store(_engine.engine())
        limits = self.limits
        store.set_limits(
            memory_size=limits.memory_bytes,
            table_elements=100_000,
            instances=1,
            tables=4,
            memories=1,
        )
        store.set_epoch_deadline(self.ticks + _engine.pending_ticks())
        module = self.compiled.module
        try:
            if self.compiled.imports:
                wasi = api.WasiConfig()
                for d in limits.dirs:
                    wasi.preopen_dir(d, d)
                store.set_wasi(wasi)
                linker = api.Linker(_engine.engine())
                linker.define_wasi()
                instance = linker.instantiate(store, module)
            else:
                instance = api.Instance(store, module, [])
        except (api.Trap, api.WasmtimeError) as exc:
            text = _trap_text(exc)
            msg = f"cannot start {self.compiled.label}: {text}"
            if ("memory" in text and "limit" in text) or "minimum" in text:
                msg += f" (limits.memory_pages is {limits.memory_pages})"
            raise SandboxError(msg) from None
        exports = instance.exports(store)
        self._store = store
        self._memory = exports["memory"]
        self._alloc = exports["alloc"]
        self._dealloc = exports["dealloc"]
        self._crossing = crossing(store, exports[self.function], self._memory)
        self._buffer = 0
        self._capacity = 0
        self._address = self._crossing.memory()[0]

    def close(self) -> None:
        """Release the instance now (a later `call` starts a fresh one)."""
        store, self._store = self._store, None
        if store is not None:
            store.close()

    def call(self, batch: list[Any]) -> Any:
        """Run the function on ``batch``; return its decoded answer (a list).

        Raises:
            TimeLimitExceeded: The call ran over ``limits.time_limit_ms``.
            SandboxError: The module trapped, answered with an error message
                or broke the ABI (the message says which).
            msgspec.EncodeError: An item has no MessagePack form.
        """
        payload = self._encode(batch)
        _engine.enter()
        try:
            if self._store is None:
                self._instantiate()
            answer = self._decode(self._run(payload))
        except self._api.Trap as exc:
            self.close()
            if exc.trap_code == self._api.TrapCode.INTERRUPT:
                msg = (
                    "time limit exceeded: the call ran over "
                    f"limits.time_limit_ms={self.limits.time_limit_ms:g}"
                )
                raise TimeLimitExceeded(msg) from None
            msg = f"wasm trap in {self.function}: {_trap_text(exc)}"
            raise SandboxError(msg) from None
        except (SandboxError, self._api.WasmtimeError, msgspec.DecodeError) as exc:
            self.close()
            if isinstance(exc, SandboxError):
                raise
            msg = f"{self.function} broke the ABI: {exc}"
            raise SandboxError(msg) from None
        finally:
            _engine.leave()
        if type(answer) is str:
            msg = f"{self.function} failed: {answer}"
            raise SandboxError(msg)
        if type(answer) is not list or len(answer) != len(batch):
            self.close()
            got = (
                f"a list of {len(answer)}"
                if type(answer) is list
                else type(answer).__name__
            )
            msg = (
                f"{self.function} answered {got} for a batch of {len(batch)}; "
                "the ABI needs one entry per item"
            )
            raise SandboxError(msg)
        return answer

    def _run(self, payload: bytes) -> bytes:
        size = len(payload)
        if size > self._capacity:
            self._grow(size)
        crossing = self._crossing
        # Where the memory was when the last call (or _grow) ended: nothing
        # ran in the module since, so it has not moved, and _grow checked
        # that the buffer lies inside it.
        ctypes.memmove(self._address + self._buffer, payload, size)
        crossing.deadline(self.ticks + _engine.pending_ticks())
        packed = crossing.call(self._buffer, size)
        out_ptr = (packed >> 32) & _MASK
        out_len = packed & _MASK
        address, end = crossing.memory()  # the call may have grown it
        self._address = address
        if out_ptr + out_len > end:
            msg = (
                f"{self.function} returned an output at {out_ptr} of {out_len} "
                "bytes, outside its memory"
            )
            raise SandboxError(msg)
        return ctypes.string_at(address + out_ptr, out_len)

    def _grow(self, size: int) -> None:
        store = self._store
        capacity = max(size, self._capacity + self._capacity // 2, _MIN_BUFFER)
        capacity = -(-capacity // 1024) * 1024
        store.set_epoch_deadline(self.ticks + _engine.pending_ticks())
        if self._capacity:
            self._dealloc(store, self._buffer, self._capacity)
            self._capacity = 0
        ptr = self._alloc(store, capacity) & _MASK
        self._address, end = self._crossing.memory()
        if ptr == 0 or ptr + capacity > end:
            msg = (
                f"alloc({capacity}) failed (returned {ptr}) for a batch of "
                f"{size} bytes; limits.memory_pages is {self.limits.memory_pages}"
            )
            raise SandboxError(msg)
        self._buffer, self._capacity = ptr, capacity


def _trap_text(exc: BaseException) -> str:
    """A trap's cause in one line: wasmtime puts a backtrace before it."""
    text = str(exc).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if "Caused by:" in lines:
        lines = lines[lines.index("Caused by:") + 1 :]
    elif lines and lines[0].startswith("error while executing"):
        lines = [line for line in lines if not line[:1].isdigit()][-1:]
    return " / ".join(lines[:3]) or type(exc).__name__


def open_sandbox(module: str, function: str, limits: Limits) -> Sandbox:
    """Load (or find compiled) the module named by a config and instantiate it.

    Raises:
        SandboxError: The module cannot be read, compiled, checked or started.
    """
    data, label = _engine.read_module(module)
    compiled = _engine.compile_module(data, label)
    return Sandbox(compiled, function, limits)
