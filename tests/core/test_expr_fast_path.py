"""Bare field paths skip the CEL interpreter but behave like CEL."""

from __future__ import annotations

from typing import Any

import cel
import pytest
from hypothesis import given, strategies as st

from flowstream.core.expr import CelError, ExprError, expr_function

keys = st.sampled_from(["a", "b", "ts", "user_id"])
leaves = st.one_of(st.integers(-(2**40), 2**40), st.text(max_size=5), st.booleans())
records = st.recursive(
    st.dictionaries(keys, leaves, max_size=4),
    lambda inner: st.dictionaries(keys, inner, max_size=4),
    max_leaves=12,
)


@given(record=records, path=st.lists(keys, min_size=1, max_size=3))
def test_field_path_matches_cel(record: dict[str, Any], path: list[str]) -> None:
    source = "x." + ".".join(path)
    fast = expr_function(source)
    assert fast.__qualname__ == f"field[{source}]"
    program = cel.compile(source)
    try:
        expected = program.execute({"x": record})
    except Exception:
        with pytest.raises(CelError):
            fast(record)
    else:
        assert fast(record) == expected


def test_other_expressions_still_use_cel() -> None:
    assert expr_function("x.a + 1").__qualname__ == "cel[x.a + 1]"
    assert expr_function("y.a", var="y")({"a": 3}) == 3


def test_a_field_path_of_an_unknown_variable_is_still_refused() -> None:
    # The fast path is taken only after CEL compiled the expression.
    with pytest.raises(ExprError):
        expr_function("x.")
