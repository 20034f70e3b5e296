"""Hypothesis strategies for the differential CEL test: expressions and items.

Shared by ``tests/core/test_cel_differential.py`` (a bounded run in ``make
test``) and ``benchmarks/bench_cel.py`` (a long run in ``make bench``).
"""

from __future__ import annotations

import math
from typing import Any

from hypothesis import strategies as st

__all__ = ["expressions", "items", "same"]

INT64 = 2**63
ints = st.one_of(
    st.integers(-5, 5),
    st.integers(-(2**40), 2**40),
    st.sampled_from(
        [INT64 - 1, INT64 - 2, -INT64, -INT64 + 1, 2**53, 2**53 + 1, 2**62]
    ),
)
floats = st.one_of(
    st.sampled_from([0.0, -0.0, 1.5, -2.5, math.inf, -math.inf, math.nan, 1e300, 3.0]),
    st.floats(allow_nan=True, allow_infinity=True, width=64),
)
texts = st.one_of(
    st.sampled_from(["", "a", "ab", "abc", "aab", "é", "a\nb", "ba"]),
    st.text(max_size=4),
)
scalars = st.one_of(
    ints,
    floats,
    texts,
    st.booleans(),
    st.none(),
    st.sampled_from([b"", b"ab", b"\xff"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.sampled_from(["a", "b", "c", "l"]), inner, max_size=4),
    ),
    max_leaves=10,
)
items = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "a": st.one_of(ints, floats),
            "b": st.one_of(ints, texts, st.booleans()),
            "c": values,
            "l": st.lists(st.one_of(ints, texts, st.booleans()), max_size=6),
            "s": texts,
        },
    ),
    values,
)

_INT_LITERALS = [
    "0",
    "1",
    "2",
    "3",
    "-1",
    "123",
    "9223372036854775807",
    "-9223372036854775808",
]
_LITERALS = [
    *_INT_LITERALS,
    "1u",
    "0u",
    "18446744073709551615u",
    "1.5",
    "0.0",
    "-2.5",
    "1e3",
    '"a"',
    '"ab"',
    "'b'",
    '""',
    'r"a\\n"',
    '"\\u00e9"',
    '"""x"""',
    'b"ab"',
    "true",
    "false",
    "null",
    "0x10",
]
_FIELDS = [
    "x * 1.0",
    "x.a / 2.0",
    "x",
    "x.a",
    "x.b",
    "x.c",
    "x.l",
    "x.s",
    'x["a"]',
    "x.c.a",
    "x.l[0]",
    "x.z",
]
_BINARY = ["+", "-", "*", "/", "%", "==", "!=", "<", "<=", ">", ">=", "in", "&&", "||"]
_MACROS = ["all", "exists", "exists_one", "map", "filter"]


@st.composite
def _expr(draw: st.DrawFn, depth: int, names: tuple[str, ...]) -> str:
    atoms = [*_LITERALS, *_FIELDS, *names]
    if depth <= 0:
        return draw(st.sampled_from(atoms))
    choice = draw(st.integers(0, 9))
    sub = _expr(depth - 1, names)
    if choice <= 2:
        return draw(st.sampled_from(atoms))
    if choice <= 5:
        op = draw(st.sampled_from(_BINARY))
        left, right = draw(sub), draw(sub)
        if draw(st.booleans()):
            return f"({left}) {op} ({right})"
        return f"{left} {op} {right}"
    if choice == 6:
        kind = draw(st.integers(0, 3))
        if kind == 0:
            return f"!({draw(sub)})"
        if kind == 1:
            return f"-({draw(sub)})"
        if kind == 2:
            return f"({draw(sub)}) ? ({draw(sub)}) : ({draw(sub)})"
        return f"[{draw(sub)}, {draw(sub)}]"
    if choice == 7:
        name = draw(
            st.sampled_from(
                [
                    *("size", "int", "uint", "double", "string", "bytes", "dyn", "has"),
                    *(
                        "contains",
                        "startsWith",
                        "endsWith",
                        "matches",
                        "sizem",
                        "map_lit",
                    ),
                ]
            )
        )
        if name == "has":
            return draw(st.sampled_from(["has(x.a)", "has(x.c.a)", "has(x.z)"]))
        if name in ("contains", "startsWith", "endsWith"):
            return f"({draw(sub)}).{name}({draw(sub)})"
        if name == "matches":
            pattern = draw(
                st.sampled_from(['"a+b"', '"^a"', '"b$"', '"[a-c]"', '"."', '"\\\\d"'])
            )
            return f"({draw(sub)}).matches({pattern})"
        if name == "sizem":
            return f"({draw(sub)}).size()"
        if name == "map_lit":
            return f'{{"a": {draw(sub)}, "b": {draw(sub)}}}'
        return f"{name}({draw(sub)})"
    var = draw(st.sampled_from(["v", "w"]))
    macro = draw(st.sampled_from(_MACROS))
    target = draw(st.sampled_from(["x.l", "x.c", "x", "[1, 2, 3]", '["a", "b"]', "[]"]))
    body = draw(_expr(depth - 1, (*names, var)))
    if macro == "map" and draw(st.booleans()):
        made = f"{target}.map({var}, {draw(_expr(depth - 1, (*names, var)))}, {body})"
    else:
        made = f"{target}.{macro}({var}, {body})"
    if macro in ("map", "filter") and target in ("x.c", "x"):
        # Over a map (x.c, or an item that is one) the list follows the map's
        # iteration order, which CEL leaves unspecified (the library's varies
        # between runs): compare its size, which does not depend on it.
        return f"{made}.size()"
    return made


expressions = _expr(3, ())


def same(a: Any, b: Any) -> bool:
    """Equal values of equal types (nan equals nan, -0.0 differs from 0.0)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return bool(a == b)
