"""`FlowRuntime`: the entry point that ties registry, validation, events and runs."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypeVar

from .backends import create_executor
from .events import EventBus
from .options import RunOptions
from .registry import NodeRegistry
from .validation import Graph, validate

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Iterable
    from typing import Unpack

    from ..core.workflow import Workflow
    from .options import RunSettings
    from .protocol import Executor, ExecutorObserver
    from .result import RunResult

__all__ = ["FlowRuntime", "run_in_thread", "run_sync"]

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


class FlowRuntime:
    """Validates and runs workflows with one registry and one event bus.

    Args:
        registry: Node types; defaults to the built-ins plus installed packs.
        bus: Where every run's events go; subscribe to it to watch runs.
        observers: Called with each executor this runtime makes, before its
            run starts (a metrics endpoint, a log context); more can be
            appended to `observers` later.
    """

    def __init__(
        self,
        registry: NodeRegistry | None = None,
        bus: EventBus | None = None,
        *,
        observers: Iterable[ExecutorObserver] = (),
    ) -> None:
        self.registry = registry if registry is not None else NodeRegistry.default()
        self.bus = bus if bus is not None else EventBus()
        self.observers: list[ExecutorObserver] = list(observers)

    def validate(self, workflow: Workflow, *, source: str | None = None) -> Graph:
        """Check a workflow; see `flowstream.runtime.validation.validate`.

        Raises:
            WorkflowValidationError: Lists every problem.
        """
        return validate(workflow, self.registry, source=source)

    def executor(
        self,
        workflow: Workflow | Graph,
        options: RunOptions | None = None,
        /,
        **settings: Unpack[RunSettings],
    ) -> Executor:
        """Return an executor for one run (to `stop` or `cancel` it later).

        The executor is the options' ``backend``; every observer sees it
        before this returns.

        Args:
            workflow: What to run.
            options: How to run it (default `RunOptions()`).
            settings: Fields of `RunOptions` that override ``options``.

        Raises:
            WorkflowValidationError: The workflow is invalid.
            UnknownBackend: No such backend.
        """
        graph = workflow if isinstance(workflow, Graph) else self.validate(workflow)
        chosen = replace(options or RunOptions(), **settings)
        executor = create_executor(graph, self.bus, chosen)
        for observe in self.observers:
            observe(executor)
        return executor

    async def arun(
        self,
        workflow: Workflow | Graph,
        options: RunOptions | None = None,
        /,
        **settings: Unpack[RunSettings],
    ) -> RunResult:
        """Run a workflow to the end and return its `RunResult`.

        ``options`` (a `RunOptions`) and ``settings`` (its fields as
        keywords: ``mode``, ``fuse``, ``max_parallel``, ``capacity``,
        ``drain_timeout``...) say how.

        Raises:
            WorkflowValidationError: The workflow is invalid (nothing ran).
        """
        return await self.executor(workflow, options, **settings).run()

    def run(
        self,
        workflow: Workflow | Graph,
        options: RunOptions | None = None,
        /,
        **settings: Unpack[RunSettings],
    ) -> RunResult:
        """Blocking form of `arun`, for scripts (starts its own event loop).

        Called where an event loop is already running (a Jupyter cell, an
        ``async def``), the run takes a worker thread with its own loop and
        this call blocks that loop until it ends; ``await runtime.arun(...)``
        runs on the caller's loop instead.
        """
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return run_sync(self.arun(workflow, options, **settings))
        return run_in_thread(lambda: run_sync(self.arun(workflow, options, **settings)))


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
