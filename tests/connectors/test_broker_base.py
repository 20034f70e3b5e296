"""What the broker families share: a missing client disables only its family."""

from __future__ import annotations

import sys
from typing import Any

import pytest

from flowstream import FlowRuntime, Workflow


@pytest.mark.parametrize(
    ("node_type", "config", "module", "extra"),
    [
        ("redis.source", {"stream": "s"}, "redis", "redis"),
        ("nats.source", {"stream": "S"}, "nats", "nats"),
        ("kafka.source", {"topics": ["t"]}, "aiokafka", "kafka"),
    ],
)
async def test_missing_client_fails_only_its_node_naming_the_extra(
    monkeypatch: pytest.MonkeyPatch,
    node_type: str,
    config: dict[str, Any],
    module: str,
    extra: str,
) -> None:
    for name in [m for m in sys.modules if m == module or m.startswith(module + ".")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, module, None)  # import fails
    wf = Workflow("w").node("src", node_type, **config)
    result = await FlowRuntime().arun(wf)
    assert not result.ok
    assert result.error is not None
    assert f"pip install 'flowstream[{extra}]'" in result.error
    assert node_type in result.error
    # The other families still run.
    other = Workflow("w").node("n", "source.range", stop=3)
    assert (await FlowRuntime().arun(other)).output("n") == [0, 1, 2]
