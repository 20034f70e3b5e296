"""The `Executor` protocol: what the CLI, the server and `FlowRuntime` use.

An executor runs one plan once. The local executor (`flowstream.runtime.local`,
one process, one event loop) is one implementation; a distributed one (Ray) is
another. Interfaces depend on this protocol only, and get an executor from
`flowstream.runtime.backends.create_executor`; they watch a run through its
`bus` and `statistics`, never through an executor's internals.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, TypeAlias, runtime_checkable

if TYPE_CHECKING:
    from ..core.events import NodeStats
    from .channel import ChannelStatistics
    from .events import EventBus
    from .result import RunResult

__all__ = ["Executor", "ExecutorObserver"]


@runtime_checkable
class Executor(Protocol):
    """Runs one plan once; make a new executor for each run.

    Attributes:
        run_id: The run's id, on every event of the run (it changes when
            ``retry_workflow`` starts the run over).
        bus: Where the run's events go.
    """

    run_id: str
    bus: EventBus

    async def run(self) -> RunResult:
        """Run to the end and return the result.

        A node failure does not raise: the result says ``failed`` and names
        the node. Cancelling the task that awaits this raises as usual.
        """
        ...

    def stop(self) -> None:
        """Stop gracefully (sources end, in-flight items drain); again: cancel."""
        ...

    def cancel(self) -> None:
        """Cancel now; the result says ``cancelled``."""
        ...

    def statistics(self) -> dict[str, NodeStats]:
        """Each node's counters now (for progress displays and metrics)."""
        ...

    def channel_statistics(self) -> dict[tuple[str, str], ChannelStatistics]:
        """Each input channel's fill now, as ``(node, port) -> stats``."""
        ...


ExecutorObserver: TypeAlias = Callable[[Executor], None]
"""Called with each executor a `FlowRuntime` makes, before the run starts."""
