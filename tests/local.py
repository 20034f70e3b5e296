"""White-box access to the local executor, for the tests that check its state."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flowstream.runtime.local import WorkflowExecutor

if TYPE_CHECKING:
    from flowstream.runtime.protocol import Executor


def local(executor: Executor) -> WorkflowExecutor:
    """``executor`` as the local executor it is (the default backend)."""
    assert isinstance(executor, WorkflowExecutor)
    return executor
