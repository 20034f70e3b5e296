"""The crossing: one call of a module's function, and where its memory is.

wasmtime's public ``Func.__call__`` looks the function's type up, converts
every argument and result through objects, and so costs tens of
microseconds, most of a batch-of-one call. `RawCrossing` makes the very
same C call (``wasmtime_func_call``) with argument and result arrays built
once, through the ctypes bindings wasmtime-py itself uses. Those bindings
are not public API, so the raw crossing is used only when they are found
as expected; otherwise `PublicCrossing` makes the call the public way.
Both raise wasmtime's own ``Trap`` and ``WasmtimeError``.

Memory is read and written with ``ctypes.memmove``/``string_at`` at the
address wasmtime reports, after checking bounds against the size it
reports (both asked again at every call: memory moves when it grows).
"""

from __future__ import annotations

import ctypes
import logging
import os
from typing import Any

__all__ = ["PublicCrossing", "RawCrossing", "crossing"]

logger = logging.getLogger("flowstream.wasm")
_I32 = 1 << 31
FORCE_PUBLIC = os.environ.get("FLOWSTREAM_WASM_PUBLIC_CALLS") == "1"
"""Set ``FLOWSTREAM_WASM_PUBLIC_CALLS=1`` to always take the public path."""


def _i32(value: int) -> int:
    # Pointers are unsigned, wasm's i32 parameters signed: same bits.
    return value - (1 << 32) if value >= _I32 else value


class PublicCrossing:
    """Calls through wasmtime's public API."""

    __slots__ = ("func", "mem", "store")

    def __init__(self, store: Any, func: Any, memory: Any) -> None:
        self.store = store
        self.func = func
        self.mem = memory

    def deadline(self, ticks: int) -> None:
        """Set the epoch deadline of the next call, ``ticks`` from now."""
        self.store.set_epoch_deadline(ticks)

    def call(self, ptr: int, size: int) -> int:
        """Call ``func(ptr, size)`` and return its i64."""
        result: int = self.func(self.store, _i32(ptr), _i32(size))
        return result

    def memory(self) -> tuple[int, int]:
        """The memory's address in this process and its size in bytes."""
        base = self.mem.data_ptr(self.store)
        return ctypes.addressof(base.contents), self.mem.data_len(self.store)


class RawCrossing:
    """Calls ``wasmtime_func_call`` directly, with arrays made once."""

    __slots__ = (
        "_api",
        "_call",
        "_context",
        "_data",
        "_deadline",
        "_ffi",
        "_func",
        "_mem",
        "_params",
        "_results",
        "_size",
        "_trap_type",
        "store",
    )

    def __init__(self, store: Any, func: Any, memory: Any) -> None:
        import wasmtime
        from wasmtime import _bindings as c, _ffi as ffi

        self._api = wasmtime
        self._ffi = ffi
        self.store = store  # keeps the context alive
        self._context = store._context()
        self._func = ctypes.byref(func._func)
        self._mem = ctypes.byref(memory._memory)
        # The C functions themselves (the bindings wrap each in a Python
        # function that only forwards its arguments).
        self._call = c._wasmtime_func_call
        self._data = c._wasmtime_memory_data
        self._size = c._wasmtime_memory_data_size
        self._deadline = c._wasmtime_context_set_epoch_deadline
        self._trap_type = ctypes.POINTER(ffi.wasm_trap_t)
        self._params = (ffi.wasmtime_val_t * 2)()
        for p in self._params:
            p.kind = ffi.WASMTIME_I32.value  # type: ignore[assignment]
        self._results = (ffi.wasmtime_val_t * 1)()

    def deadline(self, ticks: int) -> None:
        """Set the epoch deadline of the next call, ``ticks`` from now."""
        self._deadline(self._context, ticks)

    def call(self, ptr: int, size: int) -> int:
        """Call ``func(ptr, size)`` and return its i64."""
        params = self._params
        params[0].of.i32 = _i32(ptr)
        params[1].of.i32 = _i32(size)
        trap = self._trap_type()
        error = self._call(
            self._context, self._func, params, 2, self._results, 1, ctypes.byref(trap)
        )
        if error:
            raise self._api.WasmtimeError._from_ptr(error)
        if trap:
            raise self._api.Trap._from_ptr(trap)
        result: int = self._results[0].of.i64
        return result

    def memory(self) -> tuple[int, int]:
        """The memory's address in this process and its size in bytes."""
        base = self._data(self._context, self._mem)
        return ctypes.addressof(base.contents), self._size(self._context, self._mem)


def crossing(store: Any, func: Any, memory: Any) -> PublicCrossing | RawCrossing:
    """The raw crossing if wasmtime's bindings are as expected, else the public one."""
    if not FORCE_PUBLIC:
        try:
            return RawCrossing(store, func, memory)
        except (ImportError, AttributeError, TypeError) as exc:
            global _WARNED
            if not _WARNED:
                _WARNED = True
                logger.info("wasm calls take wasmtime's public path: %r", exc)
    return PublicCrossing(store, func, memory)


_WARNED = False
