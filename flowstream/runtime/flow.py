"""`FlowRuntime`: the entry point that ties registry, validation, events and runs."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypeVar

from .events import EventBus
from .executor import RunOptions, WorkflowExecutor
from .registry import NodeRegistry
from .validation import Graph, validate

if TYPE_CHECKING:
    from collections.abc import Coroutine

    from ..core.workflow import Workflow
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
    """

    def __init__(
        self, registry: NodeRegistry | None = None, bus: EventBus | None = None
    ) -> None:
        self.registry = registry if registry is not None else NodeRegistry.default()
        self.bus = bus if bus is not None else EventBus()

    def validate(self, workflow: Workflow, *, source: str | None = None) -> Graph:
        """Check a workflow; see `flowstream.runtime.validation.validate`.

        Raises:
            WorkflowValidationError: Lists every problem.
        """
        return validate(workflow, self.registry, source=source)

    def executor(self, workflow: Workflow | Graph, **options: Any) -> WorkflowExecutor:
        """Return an executor for one run (to `stop` or `cancel` it later).

        Raises:
            WorkflowValidationError: The workflow is invalid.
        """
        graph = workflow if isinstance(workflow, Graph) else self.validate(workflow)
        return WorkflowExecutor(graph, self.bus, replace(RunOptions(), **options))

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
