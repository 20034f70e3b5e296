"""What a user generator does per item, read from its source: map or filter.

A composed chain of user generators (`runtime.local.composed`) counts the
items that pass between two of them with a counter on the edge, a C call per
item. Many user generators are plain per-item maps::

    async def double(inp):
        async for x in inp:
            yield 2 * x

Such a generator yields exactly one item for each it takes, with nothing
between the two that could wait: at every point where the chain is suspended
it has yielded as many items as it took (one fewer if it failed on the last
one). Its output count is then its input count, exactly, and the edge needs no
counter. A *filter* (``async for x in inp: if cond: yield x``) yields at most
one item per item taken: a chain of maps and filters never makes more items
than it takes, so its output needs no bound of its own.

The shape is read from the function's source (`ast`) and trusted only when
compiling its file again gives the very code object the function runs (so a
file edited since import, or code compiled from a string, is no map, only
unknown). Anything that is not exactly one of the two shapes is unknown:
counted, bounded, as before.
"""

from __future__ import annotations

import ast
import functools
import types
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["ItemLoop", "ItemShape", "checked_source", "item_loop", "item_shape"]

ItemShape = Literal["map", "filter"]
"""``map``: one item out per item in; ``filter``: at most one."""

_CO_ASYNC_GENERATOR = 0x200  # inspect.CO_ASYNC_GENERATOR
# Nodes that could suspend the generator or yield more items if found in an
# expression evaluated between taking an item and yielding its result.
_ASYNC_OR_YIELD = (ast.Await, ast.Yield, ast.YieldFrom, ast.NamedExpr)


@dataclass(frozen=True, eq=False)
class ItemLoop:
    """A verified map or filter: its definition and the parts of its loop.

    Attributes:
        shape: ``"map"`` or ``"filter"``.
        fdef: The function's definition, as parsed from its file (shared:
            copy before changing it).
        inp: The name of its input parameter.
        loop: The ``async for`` statement.
        test: A filter's condition ``C`` (None for a map).
        value: What it yields, ``E`` (None for a bare ``yield``).
        result: The ``yield E`` statement.
        guarded: The loop sits in a ``try``/``finally``.
    """

    shape: ItemShape
    fdef: ast.AsyncFunctionDef
    inp: str
    loop: ast.AsyncFor
    test: ast.expr | None
    value: ast.expr | None
    result: ast.Expr
    guarded: bool


def item_shape(fn: Any) -> ItemShape | None:
    """Return the per-item shape of ``fn`` if it is a plain map or filter, else None.

    Args:
        fn: A user node's async generator function (or bound method), its
            code, or an async generator made by it (then the code that
            generator runs is read). Its first positional parameter (after
            a bound ``self``) is its input.

    Returns:
        ``"map"`` for ``async for T in inp: yield E``, ``"filter"`` for
        ``async for T in inp: if C: yield E`` (either may sit alone in a
        ``try``/``finally`` whose cleanup yields and returns nothing), where
        ``E`` and ``C`` neither await nor yield; None for anything else,
        including a function whose source cannot be read and checked.
    """
    loop = item_loop(fn)
    return None if loop is None else loop.shape


def item_loop(fn: Any) -> ItemLoop | None:
    """`item_shape` with the loop it found (`ItemLoop`), or None."""
    skip = 1 if isinstance(fn, types.MethodType) else 0  # its self is bound
    code = fn if isinstance(fn, types.CodeType) else None
    if code is None:
        code = getattr(fn, "ag_code", None) or getattr(fn, "__code__", None)
    if not isinstance(code, types.CodeType):
        return None
    return _shape_of(code, skip)


@functools.lru_cache(maxsize=1024)
def _shape_of(code: types.CodeType, skip: int) -> ItemLoop | None:
    if not code.co_flags & _CO_ASYNC_GENERATOR:
        return None
    try:
        fdef = checked_source(code)
    except Exception:  # inspect and tokenize raise many kinds: not a map
        return None
    return None if fdef is None else _shape(fdef, skip)


def checked_source(code: types.CodeType) -> ast.AsyncFunctionDef | None:
    """The function's definition, if compiling its file gives exactly ``code``.

    The whole file is compiled: how a function compiles depends on its
    module (a method call on an imported module's name compiles otherwise).
    """
    import linecache  # here: it imports tokenize, 5 ms of every start-up

    filename = code.co_filename
    linecache.checkcache(filename)
    source = "".join(linecache.getlines(filename))
    if not source:
        return None
    tree, module = _compiled(filename, source)
    if not _contains(module, code):
        return None  # not the code that runs (edited since import...)
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.AsyncFunctionDef)
            and node.name == code.co_name
            and min([node.lineno, *(d.lineno for d in node.decorator_list)])
            == code.co_firstlineno
        ):
            return node
    return None


@functools.lru_cache(maxsize=16)
def _compiled(filename: str, source: str) -> tuple[ast.Module, types.CodeType]:
    tree = ast.parse(source, filename)
    return tree, compile(tree, filename, "exec", dont_inherit=True)


def _contains(code: types.CodeType, wanted: types.CodeType) -> bool:
    """Whether ``wanted`` is ``code`` or a code object nested in it."""
    if code == wanted:
        return True
    return any(
        isinstance(const, types.CodeType) and _contains(const, wanted)
        for const in code.co_consts
    )


def _shape(fdef: ast.AsyncFunctionDef, skip: int) -> ItemLoop | None:
    args = fdef.args
    positional = [*args.posonlyargs, *args.args]
    if len(positional) <= skip:
        return None
    inp = positional[skip].arg
    body = list(fdef.body)
    if body and _is_docstring(body[0]):
        body = body[1:]
    if len(body) != 1:
        return None
    (stmt,) = body
    guarded = isinstance(stmt, ast.Try)
    if isinstance(stmt, ast.Try):
        # try/finally around the loop: the cleanup may not yield, nor end
        # the generator quietly after a failure (a return in it would).
        if stmt.handlers or stmt.orelse or len(stmt.body) != 1:
            return None
        if any(_has(s, (ast.Yield, ast.YieldFrom, ast.Return)) for s in stmt.finalbody):
            return None
        stmt = stmt.body[0]
    if not isinstance(stmt, ast.AsyncFor) or stmt.orelse:
        return None
    if not (isinstance(stmt.iter, ast.Name) and stmt.iter.id == inp):
        return None
    if not _plain_target(stmt.target, inp) or len(stmt.body) != 1:
        return None
    (inner,) = stmt.body
    if _plain_yield(inner):
        assert isinstance(inner, ast.Expr)
        assert isinstance(inner.value, ast.Yield)
        return ItemLoop("map", fdef, inp, stmt, None, inner.value.value, inner, guarded)
    if (
        isinstance(inner, ast.If)
        and not inner.orelse
        and len(inner.body) == 1
        and _plain(inner.test)
        and _plain_yield(inner.body[0])
    ):
        result = inner.body[0]
        assert isinstance(result, ast.Expr)
        assert isinstance(result.value, ast.Yield)
        value = result.value.value
        return ItemLoop("filter", fdef, inp, stmt, inner.test, value, result, guarded)
    return None


def _is_docstring(stmt: ast.stmt) -> bool:
    return (
        isinstance(stmt, ast.Expr)
        and isinstance(stmt.value, ast.Constant)
        and isinstance(stmt.value.value, str)
    )


def _plain_target(target: ast.expr, inp: str) -> bool:
    """A name, or a tuple/list of names, none of them the input itself."""
    if isinstance(target, ast.Name):
        return target.id != inp
    if isinstance(target, ast.Tuple | ast.List):
        return all(_plain_target(t, inp) for t in target.elts)
    return False


def _plain_yield(stmt: ast.stmt) -> bool:
    """``yield E`` as a statement, ``E`` plain."""
    if not isinstance(stmt, ast.Expr) or not isinstance(stmt.value, ast.Yield):
        return False
    value = stmt.value.value
    return value is None or _plain(value)


def _plain(expr: ast.expr) -> bool:
    """Evaluating ``expr`` can neither suspend nor yield (nor bind a name)."""
    return not _has(expr, _ASYNC_OR_YIELD) and not any(
        isinstance(node, ast.comprehension) and node.is_async for node in ast.walk(expr)
    )


def _has(node: ast.AST, kinds: tuple[type[ast.AST], ...]) -> bool:
    return any(isinstance(sub, kinds) for sub in ast.walk(node))
