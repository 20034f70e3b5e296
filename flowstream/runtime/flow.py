"""`FlowRuntime`: the entry point that ties registry, validation, events and runs."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypeVar

from .backends import create_executor
from .events import EventBus
from .options import RunOptions
from .registry import NodeRegistry
from .validation import Graph, validate

if TYPE_CHECKING:
    from collections.abc import Coroutine, Iterable

    from ..core.workflow import Workflow
    from .protocol import Executor, ExecutorObserver
    from .result import RunResult

__all__ = ["FlowRuntime", "run_sync"]

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

    def executor(self, workflow: Workflow | Graph, **options: Any) -> Executor:
        """Return an executor for one run (to `stop` or `cancel` it later).

        The executor is ``options``' ``backend`` (`RunOptions`); every
        observer sees it before this returns.

        Raises:
            WorkflowValidationError: The workflow is invalid.
            UnknownBackend: No such backend.
        """
        graph = workflow if isinstance(workflow, Graph) else self.validate(workflow)
        executor = create_executor(graph, self.bus, replace(RunOptions(), **options))
        for observe in self.observers:
            observe(executor)
        return executor

    async def arun(self, workflow: Workflow | Graph, **options: Any) -> RunResult:
        """Run a workflow to the end and return its `RunResult`.

        Options are the fields of `RunOptions` (``mode``, ``fuse``,
        ``max_parallel``, ``capacity``, ``drain_timeout``, ``sleep``).

        Raises:
            WorkflowValidationError: The workflow is invalid (nothing ran).
        """
        return await self.executor(workflow, **options).run()

    def run(self, workflow: Workflow | Graph, **options: Any) -> RunResult:
        """Blocking form of `arun`, for scripts (starts its own event loop)."""
        return run_sync(self.arun(workflow, **options))
