"""The compiled CEL functions agree with the ``cel`` library, value for value.

Expressions and items come from the grammar in ``cel_grammar``. For every
pair, the compiled function and the library must return the same value (same
type too), or both raise. Items the compiled code hands to the interpreter are
counted, not compared (they run the library itself). ``make bench`` runs the
same property much longer (``CEL_DIFF_EXAMPLES``).
"""

from __future__ import annotations

import os
from typing import Any

import cel
from hypothesis import HealthCheck, assume, given, settings

from flowstream.core.cel import CelError, compile_function

from .cel_grammar import expressions, items, same

EXAMPLES = int(os.environ.get("CEL_DIFF_EXAMPLES", "400"))


class UsedInterpreter(BaseException):
    """Raised by the stand-in interpreter: this item fell back."""


def _refuse(_: dict[str, Any]) -> Any:
    raise UsedInterpreter


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(source=expressions, item=items)
def test_compiled_cel_agrees_with_the_library(source: str, item: Any) -> None:
    check(source, item)


def check(source: str, item: Any) -> str:
    """Compare compiled and interpreted ``source`` on ``item``; say what happened."""
    try:
        program = cel.compile(source)
    except Exception:  # the library refuses it: nothing to compare
        assume(False)
        raise
    compiled = compile_function(source, _refuse)
    if not compiled.compiled:
        return "interpreted"
    try:
        expected: Any = program.execute({"x": item})
        failed = None
    except Exception as exc:
        failed = exc
    got: Any = None
    error: str | None = None
    try:
        got = compiled.function(item)
    except UsedInterpreter:
        return "fallback"
    except CelError as exc:
        error = str(exc)
    if error is not None:
        where = f"{source!r} on {item!r}"
        assert failed is not None, (
            f"{where}: compiled raised {error}, library gave {expected!r}"
        )
        return "error"
    assert failed is None, (
        f"{source!r} on {item!r}: library raised {failed!r}, compiled gave {got!r}"
    )
    assert same(got, expected), (
        f"{source!r} on {item!r}: compiled {got!r} != library {expected!r}"
    )
    return "value"
