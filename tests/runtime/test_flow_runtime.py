from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flowstream import FlowRuntime, default_registry
from flowstream.core.node import node
from flowstream.core.workflow import Workflow

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

FORMATTED: list[str] = []


class Loud:
    """An output item that records every time something formats it."""

    def __repr__(self) -> str:
        FORMATTED.append("repr")
        return "Loud()"


@node("test.loud")
async def loud() -> AsyncIterator[Any]:
    for _ in range(3):
        yield Loud()


def test_run_never_formats_its_result() -> None:
    # asyncio.run restores the SIGINT handler at exit, and on Python 3.11 that
    # formats the main task, result included: every output record, twice.
    registry = default_registry(entry_points=False)
    registry.register(loud)
    wf = Workflow("loud").node("src", "test.loud")
    FORMATTED.clear()
    result = FlowRuntime(registry).run(wf)
    assert result.ok
    assert len(result.output("src")) == 3
    assert FORMATTED == []
