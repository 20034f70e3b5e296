from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import pytest

from flowstream import default_registry
from flowstream.core.workflow import ContinueOnError, Workflow
from flowstream.errors import WorkflowValidationError
from flowstream.nodes import debug
from flowstream.runtime.validation import validate
from flowstream.testing import assert_emits, run_nodes, run_workflow

from .test_transform import docstring_example

if TYPE_CHECKING:
    from flowstream.runtime.registry import NodeRegistry

LOGGER = "flowstream.node.under_test"


def registry() -> NodeRegistry:
    reg = default_registry(entry_points=False)
    reg.register(debug.log, replace=True)
    return reg


def records(caplog: pytest.LogCaptureFixture, name: str = LOGGER) -> list[Any]:
    return [r for r in caplog.records if r.name == name]


async def test_docstring_example_runs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    decl, inp, out = docstring_example(debug.log)
    assert "stream-safe" in (debug.log.fn.__doc__ or "").lower()
    await assert_emits(debug.log, inp, out, decl["config"])
    # Fused, then unfused: items 1 and 3 each time.
    assert [r.item for r in records(caplog)] == [1, 3, 1, 3]


async def test_passes_items_through_unchanged_and_logs_structured_records(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    items = [{"a": 1}, "s", [1, 2]]
    out = await run_nodes(debug.log, items, {"level": "debug", "message": "saw 100%"})
    assert out["out"] == items
    assert all(x is y for x, y in zip(out["out"], items, strict=True))
    logged = records(caplog)
    assert [r.levelno for r in logged] == [logging.DEBUG] * 3
    assert [r.seq for r in logged] == [1, 2, 3]
    assert [r.item for r in logged] == items
    assert {r.node_id for r in logged} == {"under_test"}
    assert logged[0].getMessage() == "saw 100% #1: {'a': 1}"


async def test_every_nth_item(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    out = await run_nodes(debug.log, range(10), {"every": 4})
    assert out["out"] == list(range(10))
    assert [r.item for r in records(caplog)] == [0, 4, 8]
    assert [r.seq for r in records(caplog)] == [1, 5, 9]


async def test_level_is_configurable(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    await run_nodes(debug.log, [1], {"level": "info"})
    await run_nodes(debug.log, [2], {"level": "WARNING"})
    await run_nodes(debug.log, [3], {"level": "error"})
    assert [(r.item, r.levelname) for r in records(caplog)] == [
        (2, "WARNING"),
        (3, "ERROR"),
    ]


async def test_disabled_level_skips_the_projection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    # "x.missing" would fail on every item, but debug records are not wanted.
    out = await run_nodes(debug.log, [{"a": 1}], {"level": "debug", "expr": "x.nope"})
    assert out["out"] == [{"a": 1}]
    assert records(caplog) == []


@pytest.mark.parametrize("fuse", [True, False], ids=["fused", "unfused"])
async def test_failing_projection_is_an_item_failure(
    caplog: pytest.LogCaptureFixture, fuse: bool
) -> None:
    caplog.set_level(logging.INFO, logger="flowstream.node.n")
    wf = (
        Workflow("t")
        .node("src", "source.values", values=[{"k": 1}, {"k": 2}, {}, {"k": 3}])
        .node("n", "debug.log", expr="x.k", every=2, error_handling=ContinueOnError())
        .connect("src -> n")
    )
    result = await run_workflow(wf, registry(), fuse=fuse)
    assert result.status == "completed", result.error
    assert result.output("n") == [{"k": 1}, {"k": 2}, {"k": 3}]
    assert [d.item for d in result.dead_letters] == [{}]
    # The failed item is not counted, and the count survived the restart.
    logged = records(caplog, "flowstream.node.n")
    assert [(r.seq, r.item) for r in logged] == [(1, 1), (3, 3)]

    stop = (
        Workflow("t")
        .node("src", "source.values", values=[{"k": 1}, {}])
        .node("n", "debug.log", expr="x.k")
        .connect("src -> n")
    )
    failed = await run_workflow(stop, registry(), fuse=fuse)
    assert failed.status == "failed"
    assert failed.error is not None
    assert "node 'n' (debug.log)" in failed.error


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"level": "loud"}, "level must be one of debug, info"),
        ({"every": 0}, "every must be >= 1"),
        ({"expr": "x +"}, "config.expr"),
        ({"lvl": "info"}, "lvl"),
        ({"every": "2"}, "config.every"),
    ],
)
def test_bad_config_names_node_and_field(config: dict[str, Any], expected: str) -> None:
    wf = (
        Workflow("t")
        .node("src", "source.values", values=[1])
        .node("n", "debug.log", config)
        .connect("src -> n")
    )
    with pytest.raises(WorkflowValidationError) as info:
        validate(wf, registry())
    [problem] = info.value.problems
    assert problem.node == "n"
    assert expected in str(problem)
