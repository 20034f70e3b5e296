"""`runtime.shapes.item_shape`: plain maps and filters, and nothing else.

A composed chain derives a count from a map instead of counting it, so a
function wrongly called a map would make counts wrong: every shape that is
not exactly a map or a filter must be unknown (None).
"""

from __future__ import annotations

import importlib
import linecache
import sys
from typing import TYPE_CHECKING, Any

import pytest

from flowstream.runtime.shapes import item_shape

from ._shape_samples import (
    async_comprehension,
    attribute_target,
    awaits_first,
    awaits_in_expr,
    closing_map,
    double,
    filter_else,
    loop_else,
    nothing,
    odd,
    other_input,
    pairs,
    plain_function,
    returns_in_finally,
    setup_first,
    swallows,
    twice,
    walrus,
    yields_at_end,
    yields_in_finally,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path


@pytest.mark.parametrize(
    ("fn", "shape"),
    [
        (double, "map"),
        (pairs, "map"),
        (closing_map, "map"),
        (nothing, "map"),
        (odd, "filter"),
    ],
)
def test_maps_and_filters_are_recognised(fn: Any, shape: str) -> None:
    assert item_shape(fn) == shape


def test_a_generator_object_is_read_by_the_code_it_runs() -> None:
    gen = double(_never())
    assert item_shape(gen) == "map"
    assert item_shape(double.__code__) == "map"


async def _never() -> AsyncIterator[int]:
    return
    yield


@pytest.mark.parametrize(
    "fn",
    [
        awaits_in_expr,
        awaits_first,
        twice,
        setup_first,
        yields_at_end,
        loop_else,
        swallows,
        returns_in_finally,
        yields_in_finally,
        filter_else,
        walrus,
        async_comprehension,
        other_input,
        attribute_target,
        plain_function,
        len,
        None,
    ],
    ids=lambda fn: getattr(fn, "__name__", repr(fn)),
)
def test_anything_else_is_unknown(fn: Any) -> None:
    assert item_shape(fn) is None


def test_a_nested_function_or_a_method_is_read_in_its_file() -> None:
    async def inner(inp: AsyncIterator[int]) -> AsyncIterator[int]:
        async for x in inp:
            yield x

    class Node:
        async def execute(self, inp: AsyncIterator[int]) -> AsyncIterator[int]:
            async for x in inp:
                if x:
                    yield x

    assert item_shape(inner) == "map"
    assert item_shape(Node().execute) == "filter"  # its input follows self
    assert item_shape(Node.execute) is None  # unbound: self would be the input


def test_code_without_its_source_is_unknown() -> None:
    namespace: dict[str, Any] = {}
    source = "async def m(inp):\n    async for x in inp:\n        yield x\n"
    exec(compile(source, "<no file>", "exec"), namespace)
    assert item_shape(namespace["m"]) is None


def test_source_that_is_not_the_running_code_is_unknown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Edited after import: what the file says now is not what runs.
    monkeypatch.syspath_prepend(str(tmp_path))
    edited = tmp_path / "shapes_edited.py"
    edited.write_text("async def m(inp):\n    async for x in inp:\n        yield x\n")
    kept = tmp_path / "shapes_kept.py"
    kept.write_text("async def k(inp):\n    async for x in inp:\n        yield -x\n")
    try:
        fn = importlib.import_module("shapes_edited").m
        edited.write_text(
            "async def m(inp):\n    async for x in inp:\n"
            "        yield x\n        yield x\n"
        )
        linecache.checkcache(str(edited))
        assert item_shape(fn) is None
        assert item_shape(importlib.import_module("shapes_kept").k) == "map"
    finally:
        sys.modules.pop("shapes_edited", None)
        sys.modules.pop("shapes_kept", None)


def test_source_compiled_under_another_file_name_is_unknown() -> None:
    # Code compiled from a string but named after a real file (a docs page
    # run by a test does this): the lines there are not its source.
    namespace: dict[str, Any] = {}
    source = "\n" * 3 + "async def m(inp):\n    async for x in inp:\n        yield x\n"
    exec(compile(source, __file__, "exec"), namespace)
    assert item_shape(namespace["m"]) is None
