r"""CEL expressions compiled to Python functions, with the interpreter as fallback.

`compile_function` turns a CEL expression into a one-argument Python function.
It parses the text (`syntax`), generates Python source for the compiled subset
(`codegen`, calling `ops` for what is not inlined) and ``compile()``\\ s it once.
What the subset does not cover runs in the ``cel`` library's interpreter,
which stays the reference: the differential test requires both to agree.

Cost is bounded twice: `estimate_cost` gives a static bound that validation
compares with a ceiling, and compiled comprehensions count their iterations
per evaluation against ``max_cost`` (the interpreter is guarded by the same
estimate computed from the item's measured size before it is called).
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import TYPE_CHECKING, Any

from . import ops
from .codegen import Unsupported, generate
from .cost import estimate_cost, item_size
from .ops import CelError, Fallback
from .syntax import CelSyntaxError, parse

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "ASSUMED_INPUT_SIZE",
    "DEFAULT_MAX_COST",
    "SERVER_MAX_COST",
    "CelError",
    "CompiledCel",
    "compile_function",
    "default_max_cost",
    "estimate_cost",
    "parse",
    "set_default_max_cost",
    "static_cost",
]

DEFAULT_MAX_COST = 10_000_000
"""Evaluation steps one evaluation may take (CLI and library default)."""

SERVER_MAX_COST = 1_000_000
"""The lower ceiling the server applies to uploaded workflows."""

ASSUMED_INPUT_SIZE = 1_000
"""The length validation assumes for lists and strings read from the item."""

_max_cost = DEFAULT_MAX_COST


def default_max_cost() -> int:
    """The ceiling used when a caller does not give one."""
    return _max_cost


def set_default_max_cost(value: int) -> None:
    """Set the process-wide ceiling (the server lowers it to `SERVER_MAX_COST`)."""
    global _max_cost
    if value < 1:
        msg = f"max_cost must be positive, not {value}"
        raise ValueError(msg)
    _max_cost = value


@dataclasses.dataclass(frozen=True, slots=True)
class CompiledCel:
    """A CEL expression ready to evaluate.

    Attributes:
        function: Evaluates the expression on one item; raises `CelError`.
        compiled: Whether the expression runs as generated Python (else the
            interpreter runs it).
        reason: Why it is interpreted (empty when compiled).
        python: The generated source, for ``flowstream plan`` and debugging.
    """

    function: Callable[[Any], Any]
    compiled: bool
    reason: str = ""
    python: str = ""

    def describe(self) -> str:
        """``"compiled"`` or ``"interpreted: <why>"``."""
        return "compiled" if self.compiled else f"interpreted: {self.reason}"


def static_cost(source: str, input_size: int = ASSUMED_INPUT_SIZE) -> int | None:
    """The static cost estimate of ``source``, or ``None`` if it does not parse here.

    An expression outside the compiled subset is estimated as the interpreter
    runs it (its ``map`` and ``filter`` are quadratic).
    """
    try:
        tree = parse(source)
    except CelSyntaxError:
        return None
    try:
        generate(tree, "x")
    except Unsupported:
        return estimate_cost(tree, input_size, interpreted=True)
    return estimate_cost(tree, input_size)


def compile_function(
    source: str,
    execute: Callable[[dict[str, Any]], Any],
    var: str = "x",
    *,
    max_cost: int | None = None,
) -> CompiledCel:
    """Compile ``source`` to a Python function, or wrap the interpreter.

    Args:
        source: The CEL text (already accepted by the ``cel`` library).
        execute: The library's ``Program.execute`` for the same text: the
            fallback for expressions and items outside the compiled subset.
        var: The name the item is bound to.
        max_cost: Evaluation steps allowed per item (default: `default_max_cost`).
    """
    limit = default_max_cost() if max_cost is None else max_cost
    try:
        tree = parse(source)
    except CelSyntaxError as exc:
        tree, reason = None, f"not parsed here ({exc})"
    interpret = _interpreter(source, execute, var, tree, limit)
    if tree is None:
        return CompiledCel(interpret, compiled=False, reason=reason)
    try:
        python, consts, _ = generate(tree, var)
    except Unsupported as exc:
        return CompiledCel(interpret, compiled=False, reason=str(exc))

    def named(exc: CelError) -> CelError:
        return CelError(f"{source}: {exc}")

    def over(cost: int) -> CelError:
        return CelError(f"cost budget exceeded: more than {limit} comprehension steps")

    namespace: dict[str, Any] = {
        "_ops": ops,
        "_CelError": CelError,
        "_Fallback": Fallback,
        "_interpret": interpret,
        "_named": named,
        "_over": over,
        "_limit": limit,
        **consts,
    }
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            code = compile(python, f"<cel {source[:60]}>", "exec")
    except (SyntaxError, SyntaxWarning) as exc:  # a generator bug: stay correct
        return CompiledCel(
            interpret, compiled=False, reason=f"generated code refused: {exc}"
        )
    exec(code, namespace)
    function = namespace["_cel"]
    function.__qualname__ = f"cel[{source}]"
    return CompiledCel(function, compiled=True, python=python)


def _interpreter(
    source: str,
    execute: Callable[[dict[str, Any]], Any],
    var: str,
    tree: Any,
    limit: int,
) -> Callable[[Any], Any]:
    """The interpreter, guarded by the cost estimate for the item's measured size."""
    # Without a comprehension the cost is linear in the item, which the
    # interpreter converts anyway: only comprehensions need the guard.
    guarded = tree is not None and _has_macro(tree)

    def interpret(item: Any) -> Any:
        size = item_size(item, limit) if guarded else 0
        if guarded and estimate_cost(tree, size, interpreted=True) > limit:
            msg = (
                f"{source}: cost budget exceeded: this item's estimate is over {limit}"
            )
            raise CelError(msg)
        try:
            return execute({var: item})
        except Exception as exc:  # the binding raises many types; one for callers
            msg = f"{source}: {exc}"
            raise CelError(msg) from None

    interpret.__qualname__ = f"cel[{source}]"
    return interpret


def _has_macro(node: Any) -> bool:
    """Whether a syntax tree holds a comprehension."""
    if isinstance(node, tuple):
        if node and node[0] == "macro":
            return True
        return any(_has_macro(part) for part in node[1:])
    if isinstance(node, list):
        return any(_has_macro(part) for part in node)
    return False
