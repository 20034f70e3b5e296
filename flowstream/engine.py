"""The composition root: the runtime wired to the node library.

`flowstream.runtime` knows nothing of the node types it runs: its
`NodeRegistry` starts empty and every runtime function takes one. This module
sits above the node library (and above the packs installed under the
``flowstream.nodes`` entry-point group) and assembles the defaults users get:

- `default_registry`: a new registry with the built-in types and installed
  packs;
- `FlowRuntime`: validates and runs workflows with one registry (that
  default unless given) and one event bus.

The interfaces (CLI, server) and the public helpers that need a default
(`flowstream.dataflow`, `flowstream.routed`, `flowstream.testing`) import it;
nothing in ``core``, ``runtime``, ``nodes`` or ``connectors`` may
(``tests/test_layers.py``).
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import TYPE_CHECKING

from .runtime.backends import create_executor
from .runtime.blocking import run_in_thread, run_sync
from .runtime.events import EventBus
from .runtime.options import RunOptions
from .runtime.registry import NodeRegistry
from .runtime.validation import Graph, validate

if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Unpack

    from .core.workflow import Workflow
    from .runtime.options import RunSettings
    from .runtime.protocol import Executor, ExecutorObserver
    from .runtime.result import RunResult

__all__ = ["FlowRuntime", "default_registry"]


def default_registry(*, entry_points: bool = True) -> NodeRegistry:
    """Return a new registry with the built-in types and installed packs.

    Args:
        entry_points: Also load the packs installed under the
            ``flowstream.nodes`` entry-point group (the ``connectors``
            families among them); false: the built-ins alone.
    """
    # Imported here, not at module level: `import flowstream.engine` (the
    # command line's start) should not pay for the whole node library.
    from .nodes import BUILTIN_NODES

    registry = NodeRegistry(BUILTIN_NODES)
    if entry_points:
        registry.load_entry_points()
    return registry


class FlowRuntime:
    """Validates and runs workflows with one registry and one event bus.

    Args:
        registry: Node types; defaults to the built-ins plus installed packs
            (`default_registry`).
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
        self.registry = registry if registry is not None else default_registry()
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
