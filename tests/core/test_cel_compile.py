"""The CEL compiler: syntax, what it compiles, errors, fallback and cost."""

from __future__ import annotations

import math
from typing import Any

import cel
import pytest

from flowstream.core.cel import CelError, compile_function, estimate_cost, parse
from flowstream.core.cel.syntax import CelSyntaxError, UInt
from flowstream.core.expr import describe_expr, expr_cost, expr_function


def run(source: str, item: Any = None) -> Any:
    return expr_function(source)(item)


@pytest.mark.parametrize(
    ("source", "value"),
    [
        ("1u", UInt(1)),
        ("0x1Fu", UInt(31)),
        ("0x10", 16),
        ("-9223372036854775808", -(2**63)),
        ("1e3", 1000.0),
        (".5", 0.5),
        ('b"\\xff\\101"', b"\xffA"),
        ('"\\x41\\u00e9\\101\\U0001F600"', "A\u00e9A\U0001f600"),
        ('r"\\n"', "\\n"),
        ("R'a\\'", "a\\"),
        ('"""a\nb"""', "a\nb"),
        ("'''it's'''", "it's"),
        ('"\\a\\b\\f\\n\\r\\t\\v\\\\\\"\\`\\?"', '\a\b\f\n\r\t\v\\"`?'),
        ("null", None),
    ],
)
def test_literals_parse_as_cel_defines_them(source: str, value: Any) -> None:
    tree = parse(source)
    assert tree == ("lit", value)
    assert type(tree[1]) is type(value)


def test_precedence_follows_the_language_definition() -> None:
    for source in [
        "1 + 2 * 3 - 4 / 2 % 3",
        "1 < 2 == true",
        "!true || false && true",
        "true ? 1 : false ? 2 : 3",
        "-2 * -3",
        "1 + 2 in [3]",
        "[1, 2,][0] + {'a': 1,}.a",
    ]:
        assert run(source) == cel.compile(source).execute({"x": None}), source


def test_text_the_parser_does_not_accept_raises() -> None:
    for source in ["1 +", "(1", "9223372036854775808", "'abc", "x.", "a{"[:1] + "@"]:
        with pytest.raises(CelSyntaxError):
            parse(source)


@pytest.mark.parametrize(
    "source",
    [
        "x.auction % 123 == 0",
        "x.a > 1 && x.b.startsWith('a') || !has(x.c)",
        "x.l.filter(v, v % 2 == 0).map(v, v * 2)",
        "x.l.exists_one(v, v == 3) ? 'one' : 'not one'",
        "size(x.s) + x.s.size() + int('12') + int(2.5)",
        "x.s.matches('^a+b$') && x.s.contains('a') && x.s.endsWith('b')",
        "[1, 2, 3].all(v, v in x.l) || {'k': x.a}['k'] == 3",
        "double(x.a) / 2.0 + 1.5",
        "string(x.a) + 'z'",
    ],
)
def test_the_subset_is_compiled_and_agrees_with_the_library(source: str) -> None:
    item = {"auction": 246, "a": 3, "b": "ab", "l": [1, 2, 3, 4], "s": "aab"}
    assert describe_expr(source) == "compiled"
    assert run(source, item) == cel.compile(source).execute({"x": item})


def test_what_is_not_compiled_says_why_and_still_runs() -> None:
    assert describe_expr("x.ts") == "field path"
    reason = describe_expr("timestamp(x.t) > timestamp('2020-01-01T00:00:00Z')")
    assert reason == "interpreted: the function timestamp() is not compiled"
    assert run("timestamp(x.t).getFullYear()", {"t": "2021-05-01T00:00:00Z"}) == 2021


def test_odd_values_fall_back_to_the_interpreter_per_item() -> None:
    # 2**63 is a uint to the library; the compiled code hands it over.
    f = expr_function("x + 1u")
    assert f(2**63) == 2**63 + 1
    with pytest.raises(CelError, match="no such overload"):
        f(1)  # int + uint


@pytest.mark.parametrize(
    ("source", "item", "reason"),
    [
        ("x + 1", 2**63 - 1, "overflow"),
        ("x / 0", 1, "division by zero"),
        ("x % 0", 1, "modulus by zero"),
        ("x.missing", {"a": 1}, "no such key: missing"),
        ("x.a + 1", {"a": 1.5}, "no such overload"),
        ("x[3]", [1], "index out of bounds: 3"),
        ("!x", 1, "no such overload"),
    ],
)
def test_an_error_on_an_item_is_a_cel_error_naming_expression_and_reason(
    source: str, item: Any, reason: str
) -> None:
    with pytest.raises(CelError) as info:
        run(source, item)
    assert str(info.value).startswith(f"{source}: ")
    assert reason in str(info.value)
    assert describe_expr(source) in ("compiled", "field path")


def test_logic_absorbs_an_error_when_the_other_side_decides() -> None:
    assert run("x.missing > 1 || true", {}) is True
    assert run("x.missing > 1 && false", {}) is False
    assert run("false && x.missing", {}) is False
    with pytest.raises(CelError):
        run("x.missing > 1 || false", {})
    with pytest.raises(CelError):
        run("true && x.missing", {})


def test_doubles_follow_ieee() -> None:
    assert run("x / 0.0", 1.0) == math.inf
    assert run("x / 0.0", -1.0) == -math.inf
    assert run("x * 1.0 / 0.0", 1.0) == math.inf
    with pytest.raises(CelError, match="no such overload"):
        run("x % 2.0", 1.0)
    assert math.isnan(run("x / x", 0.0))
    assert run("x == x", math.nan) is False
    with pytest.raises(CelError):
        run("x < 1.0", math.nan)


def test_a_comprehension_over_its_budget_fails_the_item_not_the_process() -> None:
    source = "x.map(a, x.map(b, a + b))"
    f = compile_function(source, cel.compile(source).execute, max_cost=10_000).function
    assert len(f(list(range(50)))) == 50  # 50 + 50 * 50 = 2,550 steps
    with pytest.raises(CelError, match="cost budget exceeded"):
        f(list(range(1000)))  # would take 1,001,000


def test_the_interpreter_is_guarded_by_the_estimate_for_the_item() -> None:
    # Not compiled (timestamp), so the measured item size bounds it.
    source = "x.map(a, x.map(b, timestamp('2020-01-01T00:00:00Z')))"
    f = compile_function(source, cel.compile(source).execute, max_cost=100_000).function
    assert len(f([1, 2])) == 2
    with pytest.raises(CelError, match="cost budget exceeded"):
        f(list(range(1000)))


def test_the_static_estimate_grows_with_nesting() -> None:
    flat = expr_cost("x.filter(v, v > 1)")
    nested = expr_cost("x.map(a, x.map(b, 1))")
    deep = expr_cost("x.map(a, x.map(b, x.map(c, 1)))")
    assert flat is not None
    assert nested is not None
    assert deep is not None
    assert flat < 10_000 < nested < 10_000_000 < deep
    ten = "[" + ", ".join(str(i) for i in range(10)) + "]"
    literal = ten + ".map(a, " + ten + ".map(b, " + ten + ".map(c, 1)))"
    assert 1_000 <= estimate_cost(parse(literal), 1) <= 30_000
    # the interpreter's map and filter copy their result every step
    quadratic = expr_cost("x.filter(v, timestamp(v) > timestamp(1))", 10_000)
    assert quadratic is not None
    assert quadratic > 10**7


def test_a_long_chain_of_conditions_is_still_compiled() -> None:
    # Each operand of && / || is evaluated in a try block; nested naively,
    # 20 of them exceed Python's limit of statically nested blocks.
    chain = " && ".join(f"x.a{i} > {i}" for i in range(40))
    assert describe_expr(chain) == "compiled"
    record = {f"a{i}": i + 1 for i in range(40)}
    assert run(chain, record) is True
    assert run(chain, {**record, "a39": 0}) is False
    assert run(chain, {"a0": 0}) is False  # decided though later fields are missing
    with pytest.raises(CelError, match="no such key: a1"):
        run(chain, {"a0": 1})
