"""A function that raises StopIteration fails its item; it never ends a batch.

Fused built-in maps and filters run as C ``map``/``filter`` chains, which
end quietly when their function raises `StopIteration`: the rest of the
batch used to vanish with no error and no dead letter. Inside a generator
the same exception is a RuntimeError (PEP 479); kernels now agree.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from flowstream import FlowRuntime, default_registry
from flowstream.core.kernels import ItemKernel, drained
from flowstream.core.workflow import ContinueOnError, Workflow

if TYPE_CHECKING:
    from collections.abc import Iterator


def stop_at(bad: set[int]) -> Any:
    def pick(x: int) -> int:
        if x in bad:
            raise StopIteration
        return x

    return pick


def flow(bad: set[int], where: str) -> Workflow:
    """range(10) -> double -> keep -> plus one; ``where`` raises on ``bad``."""
    fns: dict[str, Any] = {
        "double": lambda x: x * 2,
        "keep": lambda x: x % 3 != 0,
        "inc": lambda x: x + 1,
    }
    if where == "keep":
        raising = stop_at({2 * b for b in bad})
        fns["keep"] = lambda x: raising(x) % 3 != 0
    elif where == "inc":
        fns["inc"] = lambda x: stop_at({2 * b for b in bad})(x) + 1
    else:
        fns["double"] = lambda x: stop_at(bad)(x) * 2
    skip = ContinueOnError()
    return (
        Workflow("stops")
        .node("src", "source.values", values=list(range(10)))
        .node("double", "transform.map", fn=fns["double"], error_handling=skip)
        .node("keep", "transform.filter", fn=fns["keep"], error_handling=skip)
        .node("inc", "transform.map", fn=fns["inc"], error_handling=skip)
        .node("out", "sink.collect")
        .connect("src -> double")
        .connect("double -> keep")
        .connect("keep -> inc")
        .connect("inc -> out")
    )


def expected(bad: set[int]) -> list[int]:
    return [2 * x + 1 for x in range(10) if x not in bad and (2 * x) % 3 != 0]


def dead(bad: set[int], where: str) -> list[int]:
    """The items set aside: what the raising node took."""
    if where == "double":
        return sorted(bad)
    if where == "keep":
        return sorted(2 * b for b in bad)
    return sorted(2 * b for b in bad if (2 * b) % 3 != 0)  # past the filter


@pytest.mark.parametrize("fuse", [True, False])
@pytest.mark.parametrize("where", ["double", "keep", "inc"])
@pytest.mark.parametrize("bad", [{4}, {9}, {0}, {4, 5}, {1, 9}])
async def test_the_item_fails_and_the_rest_of_the_batch_goes_on(
    fuse: bool, where: str, bad: set[int]
) -> None:
    result = await FlowRuntime(default_registry(entry_points=False)).arun(
        flow(bad, where), fuse=fuse
    )
    assert result.ok, result.error
    assert result.output("out") == expected(bad)
    assert sorted(d.item for d in result.dead_letters) == dead(bad, where)
    assert all(d.node_id == where for d in result.dead_letters)
    assert all("StopIteration" in d.reason for d in result.dead_letters)


def test_a_kernel_call_refuses_a_stop_iteration() -> None:
    kernel = ItemKernel("map", stop_at({2}))
    assert kernel([0, 1, 3]) == [0, 1, 3]
    with pytest.raises(RuntimeError, match="raised StopIteration"):
        kernel([0, 1, 2, 3])
    with pytest.raises(RuntimeError, match="raised StopIteration"):
        kernel([1, 2])  # the last item
    keep = ItemKernel("filter", stop_at({2}))
    with pytest.raises(RuntimeError, match="raised StopIteration"):
        keep([1, 2])


def test_drained_tells_an_end_from_a_stop() -> None:
    items = iter([1, 2])
    assert list(map(stop_at({2}), items)) == [1]
    assert not drained(items)
    items = iter([1, 2])
    assert list(map(stop_at(set()), items)) == [1, 2]
    assert drained(items)
    empty: Iterator[int] = iter([])
    assert list(empty) == []
    assert drained(empty)
