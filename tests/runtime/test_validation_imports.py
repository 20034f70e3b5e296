"""Validating CEL in the compiled subset does not import the cel library."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from flowstream.core.expr import ExprError, check_expr


def modules_after(code: str) -> set[str]:
    probe = textwrap.dedent(code) + "\nimport sys\nprint(' '.join(sys.modules))\n"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    return set(done.stdout.split())


def test_validating_compiled_cel_leaves_the_library_unimported() -> None:
    loaded = modules_after(
        """
        from flowstream import FlowRuntime, Workflow
        wf = (
            Workflow("v")
            .node("src", "source.values", values=[{"a": 1}])
            .node("keep", "transform.filter", expr="x.a % 2 == 1 && has(x.a)")
            .connect("src -> keep")
        )
        FlowRuntime().validate(wf)
        """
    )
    assert "cel" not in loaded


def test_outside_the_subset_the_library_judges() -> None:
    # Valid CEL that flowstream's compiler leaves to the interpreter.
    source = "x.exists_one(v, v > 1)"  # fine for the library either way
    check_expr(source)


@pytest.mark.parametrize("source", ["x +* 2", "x.a ==", "[1, 2"])
def test_syntax_errors_still_come_from_the_library(source: str) -> None:
    with pytest.raises(ExprError, match="syntax error at column"):
        check_expr(source)
