"""Declarative functions: CEL expressions and ``"module:attr"`` references.

A config field typed `Expr` holds a CEL expression (safe, not Turing-complete,
compiled once). Validation finds every `Expr` field through the config type's
annotations and compiles it, so a typo is reported before anything runs; the
compiled program is cached, so the node reuses it. `expr_function` turns the
expression into Python (`flowstream.core.cel`) when it is in the compiled
subset, and runs the ``cel`` interpreter otherwise; `describe_expr` says which.
Every per-item failure is a `CelError` naming the expression and the reason.

A field typed `FnRef` names a Python callable as ``"package.module:attr"``. It
imports code, so only trusted callers may use it (the server restricts it).
"""

from __future__ import annotations

import functools
import importlib
import re
import typing
from typing import Annotated, Any

import msgspec

from .cel import CelError, CompiledCel, compile_function, default_max_cost, static_cost
from .live import LiveRef
from .markers import Marker, marked_fields

if typing.TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    import cel

__all__ = [
    "CelError",
    "Expr",
    "ExprError",
    "FnRef",
    "check_expr",
    "compile_expr",
    "describe_expr",
    "expr_cost",
    "expr_fields",
    "expr_function",
    "import_ref",
    "resolve_callable",
]


_CEL = Marker("cel")
_FN = Marker("fn")

Expr = Annotated[str, _CEL, msgspec.Meta(description="a CEL expression over x")]
"""A config field holding a CEL expression; the item is the variable ``x``."""

FnRef = Annotated[
    str,
    _FN,
    msgspec.Meta(pattern=r"^[\w.]+:[\w.]+$", description="a Python callable"),
]
"""A config field naming a Python callable as ``"package.module:attr"``."""


class ExprError(ValueError):
    """An expression that does not compile, or a reference that does not resolve."""


class _LiveProgram:
    """What `compile_expr` gives for a live callable: ``execute`` calls it on ``x``."""

    __slots__ = ("fn",)

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn

    def execute(self, env: dict[str, Any] | None = None) -> Any:
        """Call the callable on the environment's ``x`` (the item)."""
        return self.fn((env or {}).get("x"))


def compile_expr(source: str) -> cel.Program:
    """Compile a CEL expression once; later calls with the same text are free.

    A `LiveRef` (a Python callable in place of the expression) compiles to a
    program whose ``execute`` calls it on ``x``.

    Raises:
        ExprError: The expression does not compile; the message shows where.
    """
    if isinstance(source, LiveRef):
        return typing.cast("cel.Program", _LiveProgram(_live_callable(source)))
    return _compile_text(source)


def check_expr(source: str) -> None:
    """Check that ``source`` is a valid CEL expression (over ``x``).

    An expression in the compiled subset (docs/cel.md) is checked by
    flowstream's own parser and code generator, so validating a workflow
    does not import the ``cel`` library (0.2 s and more of a command's
    start-up: it imports its own command line). Anything else, and every
    syntax error, is judged by the library, whose report `ExprError` shows.

    Raises:
        ExprError: The expression does not compile.
    """
    if isinstance(source, LiveRef) or _compiles_here(source):
        return
    _compile_text(source)


@functools.lru_cache(maxsize=4096)
def _compiles_here(source: str) -> bool:
    from .cel.codegen import Unsupported, generate
    from .cel.syntax import CelSyntaxError, parse

    try:
        generate(parse(source), "x")
    except (CelSyntaxError, Unsupported):
        return False
    return True


@functools.lru_cache(maxsize=4096)
def _compile_text(source: str) -> cel.Program:
    try:
        # Imported on first use: the cel package pulls in its CLI's
        # dependencies, ~200 ms and ~25 MB a process that uses no CEL saves.
        import cel

        return cel.compile(source)
    except (ValueError, TypeError, RuntimeError) as exc:
        msg = f"invalid CEL expression {source!r}: {_cel_reason(str(exc))}"
        raise ExprError(msg) from None


_CEL_POSITION = re.compile(r"<input>:(\d+):(\d+): (.*)")
_EXPECTING = re.compile(r" expecting (\{[^}]*\}|\S+)")
_PARSER_SAYS = (
    (re.compile(r"^(?:extraneous|mismatched) input (.*)$"), "unexpected {}"),
    (re.compile(r"^no viable alternative at input (.*)$"), "cannot parse {}"),
    (re.compile(r"^token recognition error at: (.*)$"), "unknown character {}"),
    (re.compile(r"^missing (.*) at (.*)$"), "missing {} before {}"),
)


def _cel_reason(text: str) -> str:
    """Reduce the CEL parser's report to one short line with its position.

    The parser lists every token it would have accepted (``expecting {'[',
    '{', '(', ...}``): that list is dropped unless it is short.
    """
    found = _CEL_POSITION.search(text)
    if found is None:
        return text.splitlines()[0] if text else "does not compile"
    line, column, reason = found.groups()
    reason = reason.removeprefix("Syntax error: ")
    expected = _EXPECTING.search(reason)
    if expected is not None:
        reason = reason[: expected.start()] + reason[expected.end() :]
        options = expected.group(1).strip("{}").split(", ")
        if len(options) <= 3:
            reason += " (expected " + " or ".join(options) + ")"
    for pattern, form in _PARSER_SAYS:
        said = pattern.match(reason)
        if said is not None:
            reason = form.format(*said.groups())
            break
    reason = reason.replace("'<EOF>'", "<EOF>").replace("<EOF>", "end of expression")
    where = f"column {column}" if line == "1" else f"line {line}, column {column}"
    return f"syntax error at {where}: {reason}"


_FIELD_PATH = re.compile(r"^\s*([A-Za-z_]\w*)((?:\s*\.\s*[A-Za-z_]\w*)*)\s*$")


def expr_function(
    source: str, var: str = "x", *, max_cost: int | None = None
) -> Callable[[Any], Any]:
    """Return a one-argument function that evaluates ``source`` with ``var`` bound.

    The expression runs as generated Python when it is in the compiled subset
    (see docs/cel.md), else in the ``cel`` interpreter. A bare field path
    (``x``, ``x.ts``, ``x.user.id``) is a plain lookup. Every failure on an
    item raises `CelError`.

    Args:
        source: The CEL expression.
        var: The name the item is bound to.
        max_cost: Comprehension steps one evaluation may take (default: the
            process-wide ceiling, `flowstream.core.cel.default_max_cost`).

    A `LiveRef` (a Python callable given in place of the expression, see
    `flowstream.core.live`) is returned as it is: nothing is compiled.

    Raises:
        ExprError: The expression does not compile.
    """
    if isinstance(source, LiveRef):
        return _live_callable(source)
    compile_expr(source)  # validates even what takes the fast path
    path = _FIELD_PATH.match(source)
    if path is not None and path.group(1) == var:
        return _field_getter(source, [k.strip() for k in path.group(2).split(".")[1:]])
    limit = default_max_cost() if max_cost is None else max_cost
    return _compiled(source, var, limit).function


@functools.lru_cache(maxsize=1024)
def _compiled(source: str, var: str, max_cost: int) -> CompiledCel:
    program = _compile_text(source)
    return compile_function(source, program.execute, var, max_cost=max_cost)


def describe_expr(source: str, var: str = "x") -> str:
    """How ``source`` runs: ``"field path"``, ``"compiled"``, ``"interpreted: <why>"``.

    Raises:
        ExprError: The expression does not compile.
    """
    if isinstance(source, LiveRef):
        return "Python callable"
    compile_expr(source)
    path = _FIELD_PATH.match(source)
    if path is not None and path.group(1) == var:
        return "field path"
    return _compiled(source, var, default_max_cost()).describe()


def expr_cost(source: str, input_size: int | None = None) -> int | None:
    """The static cost estimate of ``source`` (``None``: it cannot be bounded).

    Lists and strings read from the item count as ``input_size`` long
    (default `flowstream.core.cel.ASSUMED_INPUT_SIZE`).
    """
    if isinstance(source, LiveRef):
        return 0  # Python code: trusted, not costed
    if input_size is None:
        return static_cost(source)
    return static_cost(source, input_size)


def _field_getter(source: str, keys: list[str]) -> Callable[[Any], Any]:
    def get(item: Any) -> Any:
        value = item
        for key in keys:
            if type(value) is not dict:
                msg = f"{source}: cannot read field {key!r} of a {type(value).__name__}"
                raise CelError(msg)
            try:
                value = value[key]
            except KeyError:
                msg = f"{source}: no such key: {key}"
                raise CelError(msg) from None
        return value

    get.__qualname__ = f"field[{source}]"
    return get


def import_ref(ref: str) -> Any:
    """Import ``"package.module:attr"`` (attr may be dotted) and return it.

    Raises:
        ExprError: The module cannot be imported or has no such attribute.
    """
    module_name, sep, attr = ref.partition(":")
    if not sep or not module_name or not attr:
        msg = f"{ref!r} is not a reference; write 'package.module:attr'"
        raise ExprError(msg)
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as exc:  # a module may fail with anything while it imports
        reason = f"{type(exc).__name__}: {exc}"
        msg = f"cannot import module {module_name!r} for {ref!r}: {reason}"
        raise ExprError(msg) from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            msg = f"module {module_name!r} has no attribute {attr!r}"
            raise ExprError(msg) from None
    return obj


def resolve_callable(ref: str) -> Callable[..., Any]:
    """Import ``"package.module:attr"`` and check that it is callable.

    Raises:
        ExprError: The module cannot be imported, the attribute is missing, or
            it is not callable.
    """
    if isinstance(ref, LiveRef):
        return _live_callable(ref)
    obj = import_ref(ref)
    if not callable(obj):
        msg = f"{ref!r} is a {type(obj).__name__}, not a callable"
        raise ExprError(msg)
    return typing.cast("Callable[..., Any]", obj)


def _live_callable(ref: LiveRef) -> Callable[..., Any]:
    """The callable a `LiveRef` holds.

    Raises:
        ExprError: It holds something else (a node type).
    """
    if not callable(ref.target):
        msg = f"{ref!s} is a {type(ref.target).__name__}, not a callable"
        raise ExprError(msg)
    return typing.cast("Callable[..., Any]", ref.target)


def expr_fields(config: msgspec.Struct) -> Iterator[tuple[str, str, str]]:
    """Yield ``(field path, kind, source)`` for every expression or reference.

    ``kind`` is ``"cel"`` or ``"fn"``. Fields may be plain, optional, lists of
    or dict values of `Expr`/`FnRef`; the path names the element
    (``predicates.even``, ``exprs[2]``).
    """
    for found in marked_fields(config, _KINDS):
        yield found.path, found.kind, found.value


_KINDS = frozenset({"cel", "fn"})
