"""The one wasmtime engine, its epoch clock, and compiled modules.

wasmtime is imported lazily (the ``wasm`` extra): without it only the wasm
nodes fail, with a `SandboxError` naming the extra.

Time limits use epoch interruption: one daemon thread advances the engine's
epoch every `TICK_S` (by wall time, catching up when it woke late) while
calls run, and each call sets its deadline in ticks. wasmtime checks the
epoch at function entries and loop back-edges, so an endless loop stops
within a tick or so of its limit. Idle, the thread parks (no wake-ups); it
ends once no sandbox is alive.
"""

from __future__ import annotations

import atexit
import base64
import binascii
import hashlib
import math
import threading
import time
import weakref
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flowstream.errors import SandboxError

if TYPE_CHECKING:
    import wasmtime


__all__ = [
    "INLINE_PREFIX",
    "TICK_S",
    "WASI_MODULE",
    "CompiledModule",
    "allowed_wasi",
    "attach",
    "clock",
    "compile_module",
    "deadline_ticks",
    "decode_inline",
    "engine",
    "enter",
    "leave",
    "pending_ticks",
    "read_module",
    "wasmtime_api",
]

TICK_S = 0.002
"""How often the epoch advances: a time limit is kept to about this much."""
PARK_AFTER_S = 0.1
"""How long the clock goes on ticking after the last call before it parks."""
INLINE_PREFIX = "base64:"
"""A ``module`` value holding the module itself (binary or text format)."""
WASI_MODULE = "wasi_snapshot_preview1"
MAX_COMPILED = 32  # compiled modules kept, least recently used dropped
EXTRA = "pip install 'flowstream[wasm]'"

# Which WASI functions each grant lets a module import. Networking (sock_*)
# and poll_oneoff (a sleep the epoch cannot interrupt) are never granted.
_ANY_GRANT = frozenset(
    {
        "args_get",
        "args_sizes_get",
        "environ_get",
        "environ_sizes_get",
        "proc_exit",
        "sched_yield",
    }
)
_WASI: dict[str, frozenset[str]] = {
    "clock": frozenset({"clock_time_get", "clock_res_get"}),
    "random": frozenset({"random_get"}),
    "files": frozenset(
        {
            *(
                f"fd_{name}"
                for name in (
                    "advise allocate close datasync fdstat_get fdstat_set_flags "
                    "fdstat_set_rights filestat_get filestat_set_size "
                    "filestat_set_times pread prestat_get prestat_dir_name pwrite "
                    "read readdir renumber seek sync tell write"
                ).split()
            ),
            *(
                f"path_{name}"
                for name in (
                    "create_directory filestat_get filestat_set_times link open "
                    "readlink remove_directory rename symlink unlink_file"
                ).split()
            ),
        }
    ),
}


def allowed_wasi(grants: tuple[str, ...]) -> frozenset[str]:
    """The WASI functions a module granted ``grants`` may import."""
    if not grants:
        return frozenset()
    return _ANY_GRANT.union(*(_WASI[g] for g in grants))


def wasmtime_api() -> Any:
    """The ``wasmtime`` package.

    Raises:
        SandboxError: It is not installed; the message names the extra.
    """
    try:
        import wasmtime
    except ImportError as exc:
        msg = f"the wasm nodes need wasmtime, which is not installed ({EXTRA}): {exc}"
        raise SandboxError(msg) from None
    return wasmtime


class _Clock:
    """The engine, and the thread that advances its epoch while calls run.

    The thread ticks while any call is in flight and for `PARK_AFTER_S`
    after the last one (so a busy stream does not wake it per call); then it
    parks until a call starts, and it ends once no sandbox is alive.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.live: weakref.WeakSet[Any] = weakref.WeakSet()
        self.thread: threading.Thread | None = None
        self.busy = 0  # calls in flight
        self.last_call = 0.0  # when the last call ended
        self.parked = False
        self.wake = threading.Event()
        # Ticks are counted from start (time.monotonic); epoch is how many
        # the thread has made since. Both restart when it unparks.
        self.start = 0.0
        self.epoch = 0
        self._engine: wasmtime.Engine | None = None

    def engine(self) -> wasmtime.Engine:
        if self._engine is None:
            api = wasmtime_api()
            config = api.Config()
            config.epoch_interruption = True
            # No shared memories: every memory stays under its store's limit.
            config.wasm_threads = False
            self._engine = api.Engine(config)
        return self._engine

    def attach(self, sandbox: Any) -> None:
        engine = self.engine()
        with self.lock:
            self.live.add(sandbox)
            if self.thread is None:
                self.parked = False
                self.start, self.epoch = time.monotonic(), 0
                self.thread = threading.Thread(
                    target=self._tick, args=(engine,), name="wasm-epoch", daemon=True
                )
                self.thread.start()

    def enter(self) -> None:
        """A call starts: the epoch must advance until it ends."""
        # Under the lock, so the thread cannot park between our count and
        # our look at whether it is parked.
        with self.lock:
            self.busy += 1
            if self.parked:
                # Ticks count from now: the time parked is no call's time.
                self.start, self.epoch = time.monotonic(), 0
                self.parked = False
                self.wake.set()

    def leave(self) -> None:
        """A call ended."""
        with self.lock:
            self.busy -= 1
            self.last_call = time.monotonic()

    def close(self) -> None:
        """Stop the thread and release the engine (at exit)."""
        with self.lock:
            self.live = weakref.WeakSet()
            thread = self.thread
            self.wake.set()
        if thread is not None:
            thread.join(timeout=1.0)
        if self._engine is not None and (thread is None or not thread.is_alive()):
            self._engine.close()
            self._engine = None

    def pending(self) -> int:
        """Ticks due by wall time that the thread has not yet counted.

        A call adds them to its deadline: the thread catches up on them
        at its next wake-up, and they are not the call's time.
        """
        return max(0, int((time.monotonic() - self.start) / TICK_S) - self.epoch)

    def _tick(self, engine: wasmtime.Engine) -> None:
        while True:
            time.sleep(TICK_S)
            # By wall time: a late wake-up (a loaded machine) catches up,
            # so deadlines stay deadlines in time, not in wake-ups.
            due = int((time.monotonic() - self.start) / TICK_S)
            while self.epoch < due:
                engine.increment_epoch()
                self.epoch += 1
            with self.lock:
                if not self.live:
                    self.thread = None
                    return
                if self.busy or time.monotonic() - self.last_call < PARK_AFTER_S:
                    continue
                self.parked = True
                self.wake.clear()
            while not self.wake.wait(timeout=1.0):
                with self.lock:
                    if not self.live:
                        self.thread = None
                        return


_CLOCK = _Clock()


def clock() -> _Clock:
    """The process's epoch clock (tests look at its state)."""
    return _CLOCK


def engine() -> wasmtime.Engine:
    """The process's engine (epoch interruption on).

    Raises:
        SandboxError: wasmtime is not installed.
    """
    return _CLOCK.engine()


def attach(sandbox: Any) -> None:
    """Keep the epoch clock's thread while ``sandbox`` is alive."""
    _CLOCK.attach(sandbox)


def enter() -> None:
    """A call into a module starts: the epoch advances until `leave`."""
    _CLOCK.enter()


def leave() -> None:
    """The call ended."""
    _CLOCK.leave()


def pending_ticks() -> int:
    """Ticks the clock owes (it woke late): a deadline set now adds them."""
    return _CLOCK.pending()


def deadline_ticks(time_limit_ms: float) -> int:
    """Epoch ticks for a call limited to ``time_limit_ms``.

    One more than the limit divided by the tick: the current tick may be
    about to end when the call starts.
    """
    return math.ceil(time_limit_ms / 1000.0 / TICK_S) + 1


def decode_inline(text: str) -> bytes:
    """The bytes of an inline ``base64:`` module.

    Raises:
        ValueError: The text after the prefix is not base64.
    """
    try:
        return base64.b64decode(text.removeprefix(INLINE_PREFIX), validate=True)
    except binascii.Error as exc:
        msg = f"module is not valid base64 after {INLINE_PREFIX!r}: {exc}"
        raise ValueError(msg) from None


def read_module(source: str) -> tuple[bytes, str]:
    """The module's bytes and a label for messages, from a config's ``module``.

    Raises:
        SandboxError: The file cannot be read.
    """
    if source.startswith(INLINE_PREFIX):
        data = decode_inline(source)
        return data, f"inline module ({len(data)} bytes)"
    try:
        return Path(source).read_bytes(), source
    except OSError as exc:
        msg = f"cannot read wasm module {source!r}: {exc.strerror or exc}"
        raise SandboxError(msg) from None


class CompiledModule:
    """A module compiled once, with what a node needs to know about it."""

    __slots__ = ("digest", "imports", "label", "module")

    def __init__(self, module: wasmtime.Module, label: str, digest: str) -> None:
        self.module = module
        self.label = label
        self.digest = digest
        self.imports = [(i.module, i.name) for i in module.imports]


_COMPILED: OrderedDict[str, CompiledModule] = OrderedDict()
_MODULES: weakref.WeakSet[Any] = weakref.WeakSet()
_COMPILE_LOCK = threading.Lock()


def compile_module(data: bytes, label: str) -> CompiledModule:
    """Compile a module in the binary or text format, cached by content.

    Raises:
        SandboxError: wasmtime refuses it (not WebAssembly, invalid).
    """
    digest = hashlib.sha256(data).hexdigest()
    with _COMPILE_LOCK:
        found = _COMPILED.get(digest)
        if found is not None:
            _COMPILED.move_to_end(digest)
            return found
    api = wasmtime_api()
    # Anything not starting with the binary magic is read as the text format.
    source: bytes | str = data
    if not data.startswith(b"\x00asm"):
        try:
            source = data.decode()
        except UnicodeDecodeError:
            msg = f"{label} is neither a WebAssembly binary nor text (UTF-8)"
            raise SandboxError(msg) from None
    try:
        module = api.Module(engine(), source)
    except api.WasmtimeError as exc:
        msg = f"cannot compile {label}: {_first_lines(str(exc))}"
        raise SandboxError(msg) from None
    compiled = CompiledModule(module, label, digest)
    _MODULES.add(module)
    with _COMPILE_LOCK:
        _COMPILED[digest] = compiled
        while len(_COMPILED) > MAX_COMPILED:
            _COMPILED.popitem(last=False)
    return compiled


def _first_lines(text: str, limit: int = 3) -> str:
    return " / ".join(line.strip() for line in text.strip().splitlines()[:limit])


@atexit.register
def _close_all() -> None:
    # wasmtime's finalizers call into its native library, which is gone if
    # they run at interpreter teardown: release everything while it is not.
    for box in list(_CLOCK.live):
        box.close()
    for module in list(_MODULES):
        module.close()
    _COMPILED.clear()
    _CLOCK.close()
