"""How the driver hands node types to the Ray actors (no cluster needed)."""

from __future__ import annotations

import pickle
from typing import TYPE_CHECKING

import pytest
from ray import cloudpickle

from flowstream import NodeSpec, Workflow, default_registry, node
from flowstream.core.expr import ExprError
from flowstream.nodes.transform import map_items
from flowstream.runtime.ray.nodetypes import NodeTypes, node_types
from flowstream.runtime.validation import validate

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


@node("test.triple")
async def triple(inp: AsyncIterator[int]) -> AsyncIterator[int]:
    async for x in inp:
        yield 3 * x


def shipped(types: NodeTypes) -> NodeTypes:
    """What an actor gets: the driver's object through Ray's pickling."""
    got = pickle.loads(cloudpickle.dumps(types))  # type: ignore[no-untyped-call]
    assert isinstance(got, NodeTypes)
    return got


def test_built_in_and_module_level_types_go_by_reference() -> None:
    registry = default_registry(entry_points=False)
    registry.register(triple)
    wf = (
        Workflow("refs", parallelism=2)
        .node("src", "source.range", stop=4)
        .node("three", "test.triple")
        .node("map", "transform.map", expr="x + 1")
        .node("sums", "transform.reduce", op="sum", key="x % 2", value="x")
        .node("out", "sink.collect")
        .connect("src -> three")
        .connect("three -> map")
        .connect("map -> sums")
        .connect("sums -> out")
    )
    graph = validate(wf, registry)
    assert any(g.internal for g in graph.nodes.values())  # a partition step
    types = node_types(graph)
    assert types.by_value == {}
    assert types.by_reference == {
        "source.range": "flowstream.nodes.source:range_source",
        "test.triple": f"{__name__}:triple",
        "transform.map": "flowstream.nodes.transform.items:map_items",
        "transform.reduce": "flowstream.nodes.transform.aggregate:reduce",
        "sink.collect": "flowstream.nodes.sink:collect_sink",
    }
    rebuilt = shipped(types).registry()
    # The very objects the driver validated with, not copies.
    assert rebuilt.get("transform.map") is map_items
    assert rebuilt.get("test.triple") is triple
    assert len(rebuilt) == 5
    assert validate(wf, rebuilt).nodes.keys() == graph.nodes.keys()


def test_a_type_made_in_a_function_goes_by_value() -> None:
    def make(factor: int) -> NodeSpec:
        @node("test.times")
        async def times(inp: AsyncIterator[int]) -> AsyncIterator[int]:
            async for x in inp:
                yield factor * x

        return times

    spec = make(7)
    registry = default_registry(entry_points=False)
    registry.register(spec)
    wf = (
        Workflow("local")
        .node("src", "source.range", stop=3)
        .node("times", "test.times")
        .node("out", "sink.collect")
        .connect("src -> times")
        .connect("times -> out")
    )
    types = node_types(validate(wf, registry))
    assert list(types.by_value) == ["test.times"]
    assert "test.times" not in types.by_reference
    copy = shipped(types).registry().get("test.times")
    assert copy.type_id == "test.times"
    assert copy.inputs == ("in",)


def test_types_named_by_reference_in_the_workflow_are_left_to_the_worker() -> None:
    wf = (
        Workflow("ref")
        .node("src", "source.range", stop=3)
        .node("three", f"{__name__}:triple")
        .connect("src -> three")
    )
    types = node_types(validate(wf, default_registry(entry_points=False)))
    source = "flowstream.nodes.source:range_source"
    assert types.by_reference == {"source.range": source}
    assert types.by_value == {}


def test_a_reference_that_is_not_the_type_in_the_worker_is_named() -> None:
    wrong = NodeTypes(by_reference={"transform.map": "flowstream.nodes:BUILTIN_NODES"})
    with pytest.raises(
        ExprError,
        match=r"'flowstream.nodes:BUILTIN_NODES' is not node type 'transform.map' "
        "in this process",
    ):
        wrong.registry()
    missing = NodeTypes(by_reference={"test.gone": "tests.no_such_module:gone"})
    gone = r"cannot import module 'tests\.no_such_module'"
    with pytest.raises(ExprError, match=gone):
        missing.registry()
