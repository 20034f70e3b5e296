"""Lifting: a user generator that is a plain map or filter, run as a function.

A user ``@node`` generator such as::

    async def double(inp):
        async for x in inp:
            yield 2 * x

costs a generator resumption per item. `runtime.shapes` recognises it, from
its verified source, as a map (or a filter: ``if C: yield E``); this module
builds from the same AST the per-item function ``def double(x): return 2 * x``
(a filter: ``if C: return E``, else `DROPPED`) and hands it to the runtime as
an `ItemKernel`, the kernel built-in ``transform.map``/``transform.filter``
run with a callable. A lifted node is then a kernel node like those: fused
into one iterator chain per batch, with retries, ``continue_on_error``,
poison records and checkpoints as for any kernel node.

The function is compiled with the generator's file name and line numbers
(tracebacks point at the user's lines), runs in its module's globals and
reads its closure through the same cells (late binding holds), and sees the
node's ``config`` as the generator does. Whatever it cannot reproduce
exactly is not lifted and runs as a generator, as before: a loop in a
``try``/``finally``, a node that takes ``ctx``, a class node, an expression
that reads the input iterator or the frame (``locals()``...), or one that
captures the loop variable in a lambda or generator expression (which would
see later items in the generator). ``FLOWSTREAM_LIFT=0`` turns lifting off
for a process, ``@node(..., lift=False)`` for one node type.

A ``StopIteration`` escaping the body is turned into the ``RuntimeError``
an async generator raises for it (inside ``map`` it would end the batch).
"""

from __future__ import annotations

import ast
import copy
import functools
import os
import types
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from ..core.kernels import DROPPED, ItemKernel
from .shapes import ItemLoop, checked_source, item_loop

if TYPE_CHECKING:
    from ..core.kernels import KernelFactory
    from ..core.node import NodeSpec

__all__ = ["Lifted", "enabled", "lift", "lifted_kernel"]

ENV = "FLOWSTREAM_LIFT"
_OUTER = "__flowstream_lift__"
# Names whose meaning depends on the frame they are evaluated in.
_FRAME_NAMES = frozenset({"locals", "vars", "dir", "eval", "exec", "super"})
_FUTURES = 0x1000000  # __future__.annotations.compiler_flag


@dataclass(frozen=True, eq=False)
class Lifted:
    """A generator's per-item function, compiled; or why there is none.

    Attributes:
        kind: ``"map"`` or ``"filter"``; None when not lifted.
        projects: A filter that yields something else than its item.
        code: The function's code (its free variables are the generator's
            free variables it reads, ``config``, and the filter's sentinel).
        why_not: Why it is not lifted (empty when it is).
        config: The free variable of ``code`` that is the node's config
            (empty if the generator takes none).
        dropped: The free variable of ``code`` that is `DROPPED`.
    """

    kind: Literal["map", "filter"] | None
    projects: bool = False
    code: types.CodeType | None = None
    why_not: str = ""
    config: str = ""
    dropped: str = ""


def enabled() -> bool:
    """Whether lifting is on in this process (``FLOWSTREAM_LIFT`` is not 0)."""
    return os.environ.get(ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def lift(spec: NodeSpec) -> Lifted:
    """How ``spec``'s generator runs: lifted (map or filter), or why not."""
    if spec.kernel is not None:
        return Lifted(None, why_not="a built-in kernel node")
    if spec.shape != "stream":
        return Lifted(None, why_not="a one-shot call")
    if spec.is_class:
        return Lifted(None, why_not="a class node")
    if spec.batched:
        return Lifted(None, why_not="batch-aware")
    if len(spec.inputs) != 1 or spec.ports is not None:
        return Lifted(None, why_not="not one input port")
    if not spec.lift:
        return Lifted(None, why_not="lift=False")
    if spec.wants_ctx:
        return Lifted(None, why_not="takes ctx")
    code = getattr(spec.fn, "__code__", None)
    if not isinstance(code, types.CodeType):
        return Lifted(None, why_not="no code to read")
    return _lifted(code)


def lifted_kernel(spec: NodeSpec) -> KernelFactory | None:
    """A kernel factory running ``spec``'s generator lifted, or None.

    None when lifting is off (`enabled`) or the generator is not lifted.
    """
    if not enabled():
        return None
    found = lift(spec)
    code = found.code
    if code is None:
        return None
    fn = spec.fn
    own = dict(zip(fn.__code__.co_freevars, fn.__closure__ or (), strict=True))
    kind = found.kind
    assert kind is not None
    projects = found.projects

    def factory(config: Any) -> ItemKernel:
        bound = {found.config: config, found.dropped: DROPPED}
        cells = tuple(
            own[name] if name in own else types.CellType(bound[name])
            for name in code.co_freevars
        )
        made = types.FunctionType(code, fn.__globals__, fn.__name__, None, cells)
        made.__qualname__ = fn.__qualname__
        made.__doc__ = fn.__doc__
        return ItemKernel(kind, made, projects=projects, lifted=True)

    return factory


@functools.lru_cache(maxsize=1024)
def _lifted(code: types.CodeType) -> Lifted:
    loop = item_loop(code)
    if loop is None:
        return Lifted(None, why_not=f"not a plain map or filter ({_saw(code)})")
    why = _why_not(loop)
    if why:
        return Lifted(None, why_not=why)
    try:
        made, projects, config, dropped = _compile(loop, code)
    except Exception as exc:  # a construct the synthesis does not handle
        return Lifted(None, why_not=f"could not be compiled as a function: {exc}")
    return Lifted(loop.shape, projects, made, "", config, dropped)


def _why_not(loop: ItemLoop) -> str:
    if loop.guarded:
        return "its loop sits in a try/finally"
    targets = _names(loop.loop.target)
    parts = [e for e in (loop.test, loop.value) if e is not None]
    for expr in parts:
        for sub in ast.walk(expr):
            if isinstance(sub, ast.Name) and sub.id == loop.inp:
                return f"reads its input {loop.inp!r} per item"
            if isinstance(sub, ast.Name) and sub.id in _FRAME_NAMES:
                return f"calls {sub.id}(), which depends on the frame"
            if isinstance(sub, ast.Lambda | ast.GeneratorExp) and any(
                isinstance(n, ast.Name) and n.id in targets for n in ast.walk(sub)
            ):
                # The generator's loop variable is one cell for every item:
                # a lambda made for one item would see the later items.
                return "captures its loop variable in a lambda or generator"
    return ""


def _names(target: ast.expr) -> set[str]:
    return {n.id for n in ast.walk(target) if isinstance(n, ast.Name)}


def _saw(code: types.CodeType) -> str:
    """What the generator looked like, for the reason it is not lifted."""
    if not code.co_flags & 0x200:
        return "not an async generator"
    try:
        fdef = checked_source(code)
    except Exception:
        fdef = None
    if fdef is None:
        return "its source could not be read and checked"
    body = [s for s in fdef.body if not _is_doc(s)]
    if len(body) == 1 and isinstance(body[0], ast.AsyncFor):
        inner = body[0].body
        return f"its loop body has {len(inner)} statement" + "s" * (len(inner) != 1)
    kinds = ", ".join(type(s).__name__ for s in body[:4])
    return f"its body is {kinds}" + (", ..." if len(body) > 4 else "")


def _is_doc(stmt: ast.stmt) -> bool:
    return isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)


def _compile(
    loop: ItemLoop, code: types.CodeType
) -> tuple[types.CodeType, bool, str, str]:
    """Compile the per-item function of ``loop`` (a copy of its AST parts).

    Returns its code, whether it projects, and the names of its free
    variables that are the config and the filter's sentinel.
    """
    fdef = loop.fdef
    used = {n.id for n in ast.walk(fdef) if isinstance(n, ast.Name)}
    used |= {a.arg for a in ast.walk(fdef) if isinstance(a, ast.arg)}

    def fresh(stem: str) -> str:
        name = stem
        while name in used:
            name = "_" + name
        used.add(name)
        return name

    target = copy.deepcopy(loop.loop.target)
    value = (
        copy.deepcopy(loop.value)
        if loop.value is not None
        else ast.copy_location(ast.Constant(None), loop.result)
    )
    plain = isinstance(target, ast.Name)
    param = target.id if isinstance(target, ast.Name) else fresh("item")
    drop = fresh("_DROPPED")
    body: list[ast.stmt] = []
    if not plain:
        store = ast.Assign([target], ast.Name(param, ast.Load()))
        body.append(ast.copy_location(store, loop.loop))
    ret = ast.copy_location(ast.Return(value), loop.result)
    projects = False
    if loop.test is None:
        body.append(ret)
    else:
        test = copy.deepcopy(loop.test)
        keeps_item = (
            plain
            and isinstance(value, ast.Name)
            and isinstance(target, ast.Name)
            and value.id == target.id
        )
        if keeps_item:  # a predicate: filter() keeps the item itself
            ret = ast.copy_location(ast.Return(ast.Constant(True)), loop.result)
            last: ast.expr = ast.Constant(False)
        else:
            projects = True
            last = ast.Name(drop, ast.Load())
        cond = ast.copy_location(ast.If(test, [ret], []), loop.loop.body[0])
        body += [cond, ast.copy_location(ast.Return(last), loop.loop.body[0])]
    err = fresh("exc")
    handlers = [
        ast.ExceptHandler(
            ast.Name(kind, ast.Load()),
            err,
            [
                ast.Raise(
                    ast.Call(
                        ast.Name("RuntimeError", ast.Load()),
                        [ast.Constant(f"async generator raised {kind}")],
                        [],
                    ),
                    ast.Name(err, ast.Load()),
                )
            ],
        )
        for kind in ("StopIteration", "StopAsyncIteration")
    ]
    guarded = ast.Try(body, handlers, [], [])
    inner = ast.FunctionDef(
        fdef.name,
        ast.arguments([], [ast.arg(param)], None, [], [], None, []),
        [ast.copy_location(guarded, loop.loop)],
        [],
        None,
    )
    takes_config = any(a.arg == "config" for a in fdef.args.kwonlyargs)
    config = "config" if takes_config else ""
    outer_args = [*code.co_freevars, *([config] if config else []), drop]
    ret_inner = ast.Return(ast.Name(fdef.name, ast.Load()))
    outer = ast.FunctionDef(
        _OUTER,
        ast.arguments([], [ast.arg(a) for a in outer_args], None, [], [], None, []),
        [ast.copy_location(inner, fdef), ast.copy_location(ret_inner, fdef)],
        [],
        None,
    )
    module = ast.Module([ast.copy_location(outer, fdef)], [])
    ast.fix_missing_locations(module)
    compiled = compile(
        module,
        code.co_filename,
        "exec",
        flags=code.co_flags & _FUTURES,
        dont_inherit=True,
    )
    outer_code = next(c for c in compiled.co_consts if isinstance(c, types.CodeType))
    made = next(c for c in outer_code.co_consts if isinstance(c, types.CodeType))
    return made, projects, config, drop
