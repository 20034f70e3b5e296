"""Choosing the executor that runs a plan: ``RunOptions.backend``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import FlowstreamError

if TYPE_CHECKING:
    from .events import EventBus
    from .options import RunOptions
    from .protocol import Executor
    from .validation import Graph

__all__ = ["BACKENDS", "UnknownBackend", "create_executor"]

BACKENDS = ("local", "ray")
"""The executors flowstream has (``ray`` needs the ``ray`` extra)."""


class UnknownBackend(FlowstreamError, ValueError):
    """The run asked for an executor that does not exist here (the caller's fault)."""


def create_executor(graph: Graph, bus: EventBus, options: RunOptions) -> Executor:
    """Return a new executor of ``options.backend`` for one run of ``graph``.

    Raises:
        UnknownBackend: No such backend.
    """
    if options.backend == "local":
        # The one place outside the local executor that names it.
        from .local import WorkflowExecutor

        return WorkflowExecutor(graph, bus, options)
    if options.backend == "ray":
        try:
            from .ray import RayExecutor
        except ImportError as exc:
            msg = (
                f"the ray backend needs Ray, which is not installed here ({exc}); "
                "install flowstream[ray]"
            )
            raise UnknownBackend(msg) from exc
        return RayExecutor(graph, bus, options)
    msg = (
        f"unknown backend {options.backend!r}; this installation has: "
        f"{', '.join(BACKENDS)}"
    )
    raise UnknownBackend(msg)
