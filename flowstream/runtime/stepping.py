"""Driving coroutines and async generators without the event loop when possible.

A coroutine that completes without suspending can be run by ``send(None)``
alone: that is a plain call, well under a microsecond, where a task costs about
13 µs. Only when it actually suspends (``send`` returns the future it waits on)
do we hand it to the loop, through `Resume`, which carries on where ``send``
stopped.

`rebatch` drives a node's async generator item by item and flushes the batch
collected so far exactly when the generator is about to wait, so batches are
large under load and single items at low load, with no linger timer. The step
is always resumed in the task that started it, so code that ties state to its
task keeps working — except a deadline that cancels the task
(``asyncio.timeout``): falling due while the step is held and the task
delivers, it cancels the delivery. Deadlines of our own wake their wait
instead (`ReceiveChannel.receive_until`); a node's own is named when it
strikes (`local.segments`).
"""

from __future__ import annotations

import contextlib
import gc
import types
from typing import TYPE_CHECKING, Any, final

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Coroutine, Generator, Iterator

__all__ = [
    "BATCH_FULL",
    "DONE",
    "NEED_BATCH",
    "Resume",
    "Until",
    "abandon",
    "advance",
    "batch_full",
    "gc_frozen_enter",
    "gc_frozen_exit",
    "gc_paused",
    "need_batch",
    "rebatch",
]


@final
class Resume:
    """Await the rest of a coroutine step that already yielded ``signal``.

    The loop sees the signal (a future, or None for a bare yield) as if the
    coroutine had yielded it itself; values and exceptions the loop sends back
    (cancellation included) go on into the coroutine.
    """

    __slots__ = ("_signal", "_step")

    def __init__(self, step: Coroutine[Any, Any, Any] | Any, signal: Any) -> None:
        self._step = step
        self._signal = signal

    def __await__(self) -> Generator[Any, Any, Any]:
        step, signal = self._step, self._signal
        while True:
            try:
                value = yield signal
            except BaseException as exc:  # cancellation too: it belongs to the step
                try:
                    signal = step.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    signal = step.send(value)
                except StopIteration as stop:
                    return stop.value


class _Signal:
    """A value a driven coroutine yields to its driver, never to the loop."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<{self.name}>"


NEED_BATCH = _Signal("need batch")
"""Yielded (through `need_batch`) by a feed whose batch is used up."""
BATCH_FULL = _Signal("batch full")
"""Yielded (through `batch_full`) by a collector whose batch is full."""
DONE = _Signal("done")
"""Returned by `advance` and `Until` when the driven coroutine finished."""


@types.coroutine
def need_batch() -> Generator[Any, Any, None]:
    """Suspend the driven coroutine until its driver has put a new batch in.

    Only for code run by `advance`/`Until`: the signal goes up the chain of
    awaits (through every async generator in between) to the driver's
    ``send``, never to the event loop.
    """
    yield NEED_BATCH


@types.coroutine
def batch_full() -> Generator[Any, Any, None]:
    """Suspend the driven coroutine until its driver took the full batch."""
    yield BATCH_FULL


def advance(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run ``coro`` on until it signals, waits, or finishes (then `DONE`).

    Returns `NEED_BATCH`, `BATCH_FULL`, `DONE`, or the future (or None) that
    it waits on, which the driver awaits with `Until`.
    """
    try:
        return coro.send(None)
    except StopIteration:
        return DONE


@final
class Until:
    """Await the rest of a driven coroutine's wait, up to its next signal.

    Like `Resume`, but a step that ends in `NEED_BATCH` or `BATCH_FULL`
    returns that signal to the driver instead of handing it to the loop, and
    one that finishes returns `DONE`.
    """

    __slots__ = ("_coro", "_signal")

    def __init__(self, coro: Coroutine[Any, Any, Any], signal: Any) -> None:
        self._coro = coro
        self._signal = signal

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, signal = self._coro, self._signal
        while True:
            try:
                value = yield signal
            except BaseException as exc:  # cancellation too: it belongs to coro
                try:
                    signal = coro.throw(exc)
                except StopIteration:
                    return DONE
            else:
                try:
                    signal = coro.send(value)
                except StopIteration:
                    return DONE
            if signal is NEED_BATCH or signal is BATCH_FULL:
                return signal


async def rebatch(
    gen: AsyncGenerator[Any, None] | Any, max_batch: int, pending: Any = None
) -> AsyncGenerator[list[Any], None]:
    """Turn an item generator into batches, flushing when it would wait.

    Args:
        gen: The node's async generator (or any async iterator).
        max_batch: Flush when this many items are collected, even if the
            generator has more ready.
        pending: An object whose truth says that side outputs are waiting;
            when true at a flush point, an empty batch is yielded so that the
            caller flushes them.

    Yields:
        Lists of items, never empty unless ``pending`` asked for a flush.
    """
    buf: list[Any] = []
    anext_ = gen.__anext__
    midway: Any = None  # a step of gen that is suspended while we yield
    try:
        while True:
            step = anext_()
            try:
                signal = step.send(None)
            except StopIteration as stop:
                buf.append(stop.value)
                if len(buf) >= max_batch:
                    yield buf
                    buf = []
                continue
            except StopAsyncIteration:
                break
            except Exception as exc:
                # What the generator produced before failing is not lost.
                if buf:
                    yield buf
                raise exc
            # The generator is about to wait: hand over what is ready first.
            if buf or pending:
                midway = step
                yield buf
                buf = []
            try:
                item = await Resume(step, signal)
            except StopAsyncIteration:
                break
            finally:
                midway = None
            buf.append(item)
        if buf or pending:
            yield buf
    finally:
        # Closed early (a stop, a cancel, a failure downstream): the node's
        # generator must run its own cleanup too. If it is suspended inside a
        # step, aclose() would fail ("already running"): end it from there.
        if midway is not None:
            await abandon(midway)
        else:
            aclose = getattr(gen, "aclose", None)
            if aclose is not None:
                await aclose()


class _Abandoned(BaseException):
    """Thrown into a generator step that is closed while it waits.

    Not GeneratorExit: thrown into a frame that awaits another async
    generator, GeneratorExit only *closes* the awaited ``asend`` object
    (PEP 380's rule for close), which leaves that generator stuck "running"
    halfway through its step, so nothing can close it any more. Any other
    exception is thrown down the whole chain of awaits and unwinds every
    frame in it, running each one's cleanup.
    """


async def abandon(step: Any) -> None:
    """Unwind a suspended coroutine (or generator step) and all it awaits.

    Every frame in the chain of awaits runs its cleanup (see `_Abandoned`).
    """
    try:
        signal = step.throw(_Abandoned())
    except (_Abandoned, GeneratorExit, StopIteration, StopAsyncIteration):
        return
    # It awaits something in its cleanup (a finally, an async with): let it.
    with contextlib.suppress(_Abandoned, GeneratorExit, StopAsyncIteration):
        await Resume(step, signal)


@contextlib.contextmanager
def gc_paused(*, long_lived: bool = False) -> Iterator[None]:
    """Pause the cycle collector over a burst of long-lived allocations.

    Validating a workflow and building a run allocate a few objects per node
    that all live as long as the run. The collector, triggered by allocation
    counts, would walk the growing heap again and again for nothing: two
    thirds of the build time of a 10,000-node DAG. Only synchronous code may
    run inside (nothing else gets the loop meanwhile); reference counting
    still frees what is dropped.

    With ``long_lived`` (a graph, a plan: kept as long as their caller keeps
    them), what was made is moved to the oldest generation on the way out,
    without a walk (`gc.freeze` then `gc.unfreeze`, two list splices), where
    the first allocation after would otherwise start a young collection
    walking every object just made (a third of a 10,000-node validation).
    Young objects made before the pause move too: their cyclic garbage, if
    any, is found by the next full collection instead of the next young
    one. Skipped while anything is frozen (a run's `gc_frozen_enter`):
    unfreezing would thaw it.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        if long_lived and not gc.get_freeze_count():
            gc.freeze()
            gc.unfreeze()
        gc.enable()


_frozen = 0  # runs between gc_frozen_enter and gc_frozen_exit


def gc_frozen_enter() -> None:
    """Move every object tracked now out of the collector's sight (`gc.freeze`).

    For a run whose many long-lived objects were just built: collections
    during the run then walk only what the run allocates. Pair with
    `gc_frozen_exit`, which thaws them when the last such run ends (until
    then, cyclic garbage made before the freeze waits to be found).
    """
    global _frozen
    _frozen += 1
    gc.freeze()


def gc_frozen_exit() -> None:
    """End a `gc_frozen_enter`; the last one out thaws everything."""
    global _frozen
    _frozen -= 1
    if not _frozen:
        gc.unfreeze()
