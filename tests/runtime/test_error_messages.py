"""A failed run names the node, the record it failed on and why, on one line."""

from __future__ import annotations

from typing import Any

import pytest

from flowstream import FlowRuntime, Workflow
from flowstream.core.expr import ExprError, compile_expr
from flowstream.errors import preview


def amount(x: dict[str, Any]) -> int:
    return int(x["amount"]) * 2


def run(mode: str, config: dict[str, Any], values: list[Any], *, fuse: bool) -> str:
    wf = (
        Workflow("errors", mode=mode)  # type: ignore[arg-type]
        .node("src", "source.values", values=values)
        .node("double", "transform.map", **config)
        .node("out", "sink.collect")
        .connect("src -> double")
        .connect("double -> out")
    )
    result = FlowRuntime().run(wf, fuse=fuse)
    assert result.status == "failed"
    assert result.error is not None
    return result.error


@pytest.mark.parametrize("mode", ["dag", "stream"])
@pytest.mark.parametrize("fuse", [True, False])
def test_a_record_without_a_field_is_shown_with_the_reason(
    mode: str, fuse: bool
) -> None:
    error = run(
        mode,
        {"fn": f"{__name__}:amount"},
        [{"amount": 1}, {"user": "ann", "total": 3}],
        fuse=fuse,
    )
    assert error == (
        "node 'double' (transform.map) failed on item "
        '{"user":"ann","total":3}: KeyError: \'amount\' is missing'
    )


@pytest.mark.parametrize("fuse", [True, False])
def test_a_cel_failure_names_the_expression_and_the_item(fuse: bool) -> None:
    error = run(
        "stream", {"expr": "x.a / x.b"}, [{"a": 1, "b": 1}, {"a": 4, "b": 0}], fuse=fuse
    )
    assert error.startswith(
        'node \'double\' (transform.map) failed on item {"a":4,"b":0}: CelError: '
    )
    assert "x.a / x.b" in error
    assert "division by zero" in error
    assert "\n" not in error


def test_a_long_record_is_cut_and_its_length_said() -> None:
    item = {"text": "x" * 1000}
    shown = preview(item)
    assert shown.startswith('{"text":"xxx')
    assert shown.endswith("… (1,011 characters)")
    assert len(shown) < 200


def test_a_value_json_cannot_hold_is_shown_by_repr() -> None:
    class Point:
        def __repr__(self) -> str:
            return "Point(1, 2)"

    assert preview({"p": Point()}) == '{"p":"Point(1, 2)"}'
    assert preview(b"\x00\x01") == '"AAE="'  # bytes as msgspec writes them


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("x +* 2 )", "syntax error at column 4: unexpected '*'"),
        ("x.a ==", "syntax error at column 7: unexpected end of expression"),
        ("x.a @ 2", "syntax error at column 5: unknown character '@'"),
        ("(x", "syntax error at column 3: missing ')' before end of expression"),
    ],
)
def test_a_cel_syntax_error_is_one_short_line(source: str, reason: str) -> None:
    with pytest.raises(ExprError) as info:
        compile_expr(source)
    assert str(info.value) == f"invalid CEL expression {source!r}: {reason}"
