"""Running a coroutine to its end from synchronous code (`FlowRuntime.run`, the CLI).

`run_sync` is ``asyncio.run`` that never formats what the coroutine returns;
`run_in_thread` runs a call in a thread of its own, for a caller that already
has a running event loop.
"""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

__all__ = ["run_in_thread", "run_sync"]

_T = TypeVar("_T")


def run_sync(coro: Coroutine[Any, Any, _T]) -> _T:
    """``asyncio.run(coro)``, without ever formatting what ``coro`` returns.

    On Python 3.11 ``asyncio.run`` restores the SIGINT handler at exit; the
    handler is a partial holding the main task, and ``signal.signal`` /
    ``getsignal`` format it (an enum lookup that fails), task result
    included: a run's whole `RunResult`, every output record, twice (Nexmark
    q0 at 1M events: 1.2 s became 5 s). Here the main task returns None.
    """
    box: list[_T] = []

    async def main() -> None:
        box.append(await coro)

    asyncio.run(main())
    return box[0]


def run_in_thread(call: Callable[[], _T]) -> _T:
    """``call()`` in a new thread (with no running loop), waited for here.

    Its exception, if any, is raised here; a KeyboardInterrupt while waiting
    leaves the thread to finish on its own (it is a daemon).
    """
    box: list[_T] = []
    failure: list[BaseException] = []

    def target() -> None:
        try:
            box.append(call())
        except BaseException as exc:  # handed to the caller, re-raised there
            failure.append(exc)

    worker = threading.Thread(target=target, name="flowstream-run", daemon=True)
    worker.start()
    worker.join()
    if failure:
        raise failure[0]
    return box[0]
