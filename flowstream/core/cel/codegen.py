"""A CEL syntax tree to Python source: one function per expression.

The generated function evaluates the expression on one item. Simple cases are
inlined (a dict field read, an int compared with an int literal); the rest
calls `ops`. The logical operators are statement blocks, so CEL's
error-absorbing ``&&``/``||`` cost nothing when no error happens; each
comprehension charges its length to a per-evaluation budget before it runs.
"""

from __future__ import annotations

import math
from typing import Any

from . import ops
from .syntax import INT64_MAX, INT64_MIN, UInt

__all__ = ["Unsupported", "generate"]


class Unsupported(Exception):
    """The expression uses something outside the compiled subset."""


_ARITH = {"+": "add", "-": "sub", "*": "mul", "/": "div", "%": "mod"}
_COMPARE = {"==": "eq", "!=": "ne", "<": "lt", "<=": "le", ">": "gt", ">=": "ge"}
_PY_COMPARE = {"==": "==", "!=": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
_CONVERSIONS = {
    "int": ("to_int", "int"),
    "uint": ("to_uint", "uint"),
    "double": ("to_double", "float"),
    "string": ("to_string", "str"),
    "bytes": ("to_bytes", "bytes"),
}
_STRING_METHODS = {
    "contains": "contains",
    "startsWith": "starts_with",
    "endsWith": "ends_with",
}
_PY_STRING_METHODS = {
    "contains": None,
    "startsWith": "startswith",
    "endsWith": "endswith",
}
_EXACT = 2**53

Code = tuple[str, str | None]  # a Python expression and its static CEL type, if known


class _Generator:
    def __init__(self, var: str) -> None:
        self.lines: list[str] = []
        self.depth = 2
        self.count = 0
        self.consts: dict[str, Any] = {}
        self.scope = {var: "x"}
        self.loops = 0

    def emit(self, line: str) -> None:
        self.lines.append("    " * self.depth + line)

    def temp(self, prefix: str = "t") -> str:
        self.count += 1
        return f"_{prefix}{self.count}"

    def const(self, value: Any) -> str:
        name = f"_k{len(self.consts)}"
        self.consts[name] = value
        return name

    def atom(self, code: str) -> str:
        """A name for ``code``, so it can be used twice without evaluating twice."""
        if code.isidentifier():
            return code
        name = self.temp()
        self.emit(f"{name} = {code}")
        return name

    def gen(self, node: Any) -> Code:
        kind = node[0]
        method = getattr(self, f"gen_{kind}", None)
        if method is None:
            msg = f"{kind} is not compiled"
            raise Unsupported(msg)
        result: Code = method(*node[1:])
        return result

    def gen_lit(self, value: Any) -> Code:
        kind = type(value)
        if kind is UInt:
            return self.const(value), "uint"
        if kind is float:
            if math.isfinite(value):
                return repr(value), "float"
            return self.const(value), "float"
        if kind is int:
            return (f"({value})" if value < 0 else repr(value)), "int"
        names = {bool: "bool", str: "str", bytes: "bytes", type(None): "null"}
        return repr(value), names[kind]

    def gen_ident(self, name: str) -> Code:
        if name not in self.scope:
            msg = f"the name {name!r} is not compiled"
            raise Unsupported(msg)
        return self.scope[name], None

    def gen_select(self, operand: Any, name: str) -> Code:
        if operand[0] == "ident" and operand[1] not in self.scope:
            msg = f"qualified name {operand[1]}.{name} is not compiled"
            raise Unsupported(msg)
        obj = self.atom(self.gen(operand)[0])
        out = self.temp()
        key = repr(name)
        # Only a dict takes a string key among the values items are made of;
        # anything else (or a missing key) gets the exact answer from ops.
        self.emit("try:")
        self.emit(f"    {out} = {obj}[{key}]")
        self.emit("except (KeyError, TypeError, IndexError):")
        self.emit(f"    {out} = _ops.field({obj}, {key})")
        return out, None

    def gen_has(self, operand: Any, name: str) -> Code:
        obj = self.atom(self.gen(operand)[0])
        key = repr(name)
        return (
            f"(({key} in {obj}) if type({obj}) is dict else _ops.has({obj}, {key}))",
            "bool",
        )

    def gen_index(self, operand: Any, key: Any) -> Code:
        if key[0] == "lit" and type(key[1]) is str:
            return self.gen_select(operand, key[1])
        obj = self.gen(operand)[0]
        k = self.gen(key)[0]
        return f"_ops.index({obj}, {k})", None

    def gen_list(self, items: list[Any]) -> Code:
        parts = [self.gen(item)[0] for item in items]
        return "[" + ", ".join(parts) + "]", "list"

    def gen_map(self, entries: list[tuple[Any, Any]]) -> Code:
        parts = []
        seen: dict[str, str] = {}
        for key, value in entries:
            if key[0] != "lit" or type(key[1]) is not str:
                msg = "map literal keys other than strings are not compiled"
                raise Unsupported(msg)
            seen[key[1]] = self.gen(value)[0]
        parts = [f"{k!r}: {v}" for k, v in seen.items()]
        return "{" + ", ".join(parts) + "}", "map"

    def gen_not(self, operand: Any) -> Code:
        o = self.atom(self.gen(operand)[0])
        return (
            f"(False if {o} is True else True if {o} is False else _ops.not_({o}))",
            "bool",
        )

    def gen_neg(self, operand: Any) -> Code:
        o, o_type = self.gen(operand)
        if o_type == "float":
            return f"(-{o})", "float"
        return f"_ops.neg({o})", o_type if o_type in ("int", "bool") else None

    def _capture(self, node: Any, op: str) -> tuple[str, str]:
        """Evaluate an operand of ``op`` into (bool or None, error or None) names.

        A nested ``&&``/``||`` is captured at the same level rather than
        inside this operand's ``try`` (Python allows 20 nested blocks; a
        chain of conditions would reach that).
        """
        if node[0] in ("and", "or"):
            return self._logic_capture(
                "&&" if node[0] == "and" else "||", node[1], node[2]
            )
        value, error = self.temp("v"), self.temp("e")
        self.emit("try:")
        self.depth += 1
        code = self.gen(node)[0]
        self.emit(f"{value} = {code}")
        self.emit(f"if {value} is not True and {value} is not False:")
        self.emit(f"    raise _ops.nobool({op!r}, {value})")
        self.depth -= 1
        self.emit("except _CelError as _exc:")
        self.emit(f"    {error} = _exc")
        self.emit(f"    {value} = None")
        self.emit("else:")
        self.emit(f"    {error} = None")
        return value, error

    def _logic_capture(self, op: str, left: Any, right: Any) -> tuple[str, str]:
        # CEL: an error (or a non-bool) on one side is absorbed when the
        # other side decides (false for &&, true for ||).
        decides = "False" if op == "&&" else "True"
        out, error = self.temp("r"), self.temp("e")
        lv, le = self._capture(left, op)
        self.emit(f"if {lv} is {decides}:")
        self.emit(f"    {out}, {error} = {decides}, None")
        self.emit("else:")
        self.depth += 1
        rv, re_ = self._capture(right, op)
        self.emit(f"if {rv} is {decides}:")
        self.emit(f"    {out}, {error} = {decides}, None")
        self.emit(f"elif {le} is not None:")
        self.emit(f"    {out}, {error} = None, {le}")
        self.emit(f"elif {re_} is not None:")
        self.emit(f"    {out}, {error} = None, {re_}")
        self.emit("else:")
        self.emit(f"    {out}, {error} = {rv}, None")
        self.depth -= 1
        return out, error

    def _logic(self, op: str, left: Any, right: Any) -> Code:
        out, error = self._logic_capture(op, left, right)
        self.emit(f"if {error} is not None:")
        self.emit(f"    raise {error}")
        return out, "bool"

    def gen_and(self, left: Any, right: Any) -> Code:
        return self._logic("&&", left, right)

    def gen_or(self, left: Any, right: Any) -> Code:
        return self._logic("||", left, right)

    def gen_cond(self, test: Any, then: Any, otherwise: Any) -> Code:
        t = self.atom(self.gen(test)[0])
        out = self.temp("r")
        self.emit(f"if {t} is True:")
        self.depth += 1
        a, a_type = self.gen(then)
        self.emit(f"{out} = {a}")
        self.depth -= 1
        self.emit(f"elif {t} is False:")
        self.depth += 1
        b, b_type = self.gen(otherwise)
        self.emit(f"{out} = {b}")
        self.depth -= 1
        self.emit("else:")
        self.emit(f"    raise _ops.nobool('?:', {t})")
        return out, a_type if a_type == b_type else None

    def gen_binary(self, op: str, left: Any, right: Any) -> Code:
        a, a_type = self.gen(left)
        b, b_type = self.gen(right)
        if op in _ARITH:
            return self._arith(op, a, a_type, b, b_type)
        if op == "in":
            return f"_ops.in_({a}, {b})", "bool"
        return self._compare(op, a, a_type, b, b_type)

    def _arith(
        self, op: str, a: str, a_type: str | None, b: str, b_type: str | None
    ) -> Code:
        helper = f"_ops.{_ARITH[op]}({a}, {b})"
        # Python raises on a float divided by zero (CEL gives inf or nan) and
        # has float % (CEL has none): only these are safe to inline.
        float_op = op in "+-*" or (op == "/" and _nonzero_float(b))
        if (a_type == b_type == "float" and float_op) or (
            a_type == b_type == "str" and op == "+"
        ):
            return f"({a} {op} {b})", a_type
        if b_type == "int" and _is_literal(b) and a_type in (None, "int"):
            fast = _int_fast_path(op, int(b.strip("()")))
            if fast is not None:
                a = self.atom(a)
                helper = f"_ops.{_ARITH[op]}({a}, {b})"
                is_int = "" if a_type == "int" else f"type({a}) is int and "
                code = helper
                for guard, expr in reversed(fast):
                    code = f"{expr.format(a)} if {is_int}{guard.format(a)} else {code}"
                return f"({code})", "int"
            return helper, "int"
        if b_type == "float" and a_type is None and float_op:
            a = self.atom(a)
            return f"({a} {op} {b} if type({a}) is float else {helper})", "float"
        result_type = (
            a_type if a_type == b_type and a_type in ("int", "uint", "float") else None
        )
        if a_type == b_type == "list" and op == "+":
            result_type = "list"
        return helper, result_type

    def _compare(
        self, op: str, a: str, a_type: str | None, b: str, b_type: str | None
    ) -> Code:
        helper = f"_ops.{_COMPARE[op]}({a}, {b})"
        py = _PY_COMPARE[op]
        if a_type == b_type and a_type in ("int", "str", "bytes"):
            return f"({a} {py} {b})", "bool"
        if op in ("==", "!=") and (a_type == "null" or b_type == "null"):
            other = self.atom(b if a_type == "null" else a)
            test = "is" if op == "==" else "is not"
            return f"({other} {test} None)", "bool"
        for x, x_type, y, y_type, flip in (
            (a, a_type, b, b_type, False),
            (b, b_type, a, a_type, True),
        ):
            if y_type is None and _is_literal(x) and x_type in ("int", "str"):
                if x_type == "int" and abs(int(x.strip("()"))) > _EXACT:
                    break
                y = self.atom(y)
                left, right = (y, x) if flip else (x, y)
                helper = f"_ops.{_COMPARE[op]}({left}, {right})"
                guard = "int" if x_type == "int" else "str"
                return (
                    f"({left} {py} {right} if type({y}) is {guard} else {helper})",
                    "bool",
                )
        return helper, "bool"

    def gen_call(self, name: str, target: Any, args: list[Any]) -> Code:
        if target is None:
            if name == "size" and len(args) == 1:
                return self._size(args[0])
            if name == "dyn" and len(args) == 1:
                return self.gen(args[0])
            if name in _CONVERSIONS and len(args) == 1:
                helper, result_type = _CONVERSIONS[name]
                return f"_ops.{helper}({self.gen(args[0])[0]})", result_type
        elif name == "size" and not args:
            return self._size(target)
        elif name in _STRING_METHODS and len(args) == 1:
            s, s_type = self.gen(target)
            t, t_type = self.gen(args[0])
            if s_type == t_type == "str":
                method = _PY_STRING_METHODS[name]
                return (
                    f"({t} in {s})" if method is None else f"{s}.{method}({t})"
                ), "bool"
            return f"_ops.{_STRING_METHODS[name]}({s}, {t})", "bool"
        elif name == "matches" and len(args) == 1:
            pattern = args[0]
            if pattern[0] != "lit" or type(pattern[1]) is not str:
                msg = "matches() with a pattern that is not a literal is not compiled"
                raise Unsupported(msg)
            compiled = ops.regex(pattern[1])
            if compiled is None:
                msg = (
                    f"the pattern {pattern[1]!r} uses regex syntax that is not compiled"
                )
                raise Unsupported(msg)
            s = self.gen(target)[0]
            return f"_ops.matches({s}, {self.const(compiled)})", "bool"
        msg = f"the function {name}() is not compiled"
        raise Unsupported(msg)

    def _size(self, arg: Any) -> Code:
        o = self.atom(self.gen(arg)[0])
        return f"(len({o}) if type({o}) is list else _ops.size({o}))", "int"

    def gen_macro(self, name: str, target: Any, var: str, args: list[Any]) -> Code:
        self.loops += 1
        seq = self.temp("s")
        item = self.temp("i")
        out = self.temp("r")
        self.emit(f"{seq} = _ops.items({self.gen(target)[0]}, {name!r})")
        self.emit(f"_cost += len({seq})")
        self.emit("if _cost > _limit:")
        self.emit("    raise _over(_cost)")
        outer = self.scope.get(var)
        self.scope[var] = item
        start = {"all": "True", "exists": "False", "exists_one": "0"}.get(name, "[]")
        self.emit(f"{out} = {start}")
        self.emit(f"for {item} in {seq}:")
        self.depth += 1
        body, _ = self.gen(args[0])
        if name in ("all", "exists", "exists_one", "filter") or len(args) == 2:
            test = self.atom(body)
            self.emit(f"if {test} is not True and {test} is not False:")
            self.emit(f"    raise _ops.nobool({name!r}, {test})")
            if name == "all":
                self.emit(f"if {test} is False:")
                self.emit(f"    {out} = False")
                self.emit("    break")
            elif name == "exists":
                self.emit(f"if {test} is True:")
                self.emit(f"    {out} = True")
                self.emit("    break")
            elif name == "exists_one":
                self.emit(f"if {test} is True:")
                self.emit(f"    {out} += 1")
            elif name == "filter":
                self.emit(f"if {test} is True:")
                self.emit(f"    {out}.append({item})")
            else:  # map with a filter: map(v, predicate, transform)
                self.emit(f"if {test} is True:")
                self.depth += 1
                value = self.gen(args[1])[0]
                self.emit(f"{out}.append({value})")
                self.depth -= 1
        else:
            self.emit(f"{out}.append({body})")
        self.depth -= 1
        if outer is None:
            del self.scope[var]
        else:
            self.scope[var] = outer
        if name == "exists_one":
            return f"({out} == 1)", "bool"
        return out, "bool" if name in ("all", "exists") else "list"


_COMPACT = 2**30 - 1  # CPython compares single-digit ints much faster


def _int_fast_path(op: str, c: int) -> list[tuple[str, str]] | None:
    """Guards and expressions that compute ``a op c`` on an int ``a`` exactly.

    The first tier keeps ``a`` within one 30-bit digit, where CPython's
    specialised int comparison applies (about twice as fast); the second
    covers the rest of int64. Past both, `ops` decides (overflow, uint...).
    """
    small = f"{-_COMPACT} <= {{0}} <= {_COMPACT}"
    if op == "+":
        lo, hi = (INT64_MIN, INT64_MAX - c) if c >= 0 else (INT64_MIN - c, INT64_MAX)
        tiers = [(f"{lo} <= {{0}} <= {hi}", f"{{0}} + {c}")]
    elif op == "-":
        lo, hi = (INT64_MIN + c, INT64_MAX) if c >= 0 else (INT64_MIN, INT64_MAX + c)
        tiers = [(f"{lo} <= {{0}} <= {hi}", f"{{0}} - {c}")]
    elif op == "*" and c != 0:
        bound = INT64_MAX // abs(c)
        tiers = [(f"{-bound} <= {{0}} <= {bound}", f"{{0}} * {c}")]
    elif op in "/%" and c > 0:
        py = "//" if op == "/" else "%"
        return [
            (f"0 <= {{0}} <= {_COMPACT}", f"{{0}} {py} {c}"),
            (f"0 <= {{0}} <= {INT64_MAX}", f"{{0}} {py} {c}"),
        ]
    else:
        return None
    if abs(c) <= 2**32:  # then a one-digit operand cannot overflow
        tiers.insert(0, (small, tiers[0][1]))
    return tiers


def _nonzero_float(code: str) -> bool:
    try:
        return float(code) != 0.0
    except ValueError:
        return False


def _is_literal(code: str) -> bool:
    if not code:
        return False
    text = code[1:-1] if code[0] == "(" and code[-1] == ")" else code
    if text.lstrip("-").isdigit():
        return True
    return (
        code[0] in "'\""
        or code[:2] in ("b'", 'b"')
        or code in ("True", "False", "None")
    )


def generate(tree: Any, var: str) -> tuple[str, dict[str, Any], bool]:
    """Python source of ``def _cel(x)`` for ``tree``, its constants, whether it loops.

    Raises:
        Unsupported: The tree uses something outside the compiled subset.
    """
    gen = _Generator(var)
    code, code_type = gen.gen(tree)
    body = gen.lines
    if code_type in ("bool", "int", "float", "str", "bytes", "null"):
        body.append(f"        return {code}")
    else:
        body.append(f"        return _ops.result({code})")
    head = ["def _cel(x):", "    try:"]
    if gen.loops:
        head.append("        _cost = 0")
    tail = [
        "    except _Fallback:",
        "        return _interpret(x)",
        "    except _CelError as exc:",
        "        raise _named(exc) from None",
    ]
    return "\n".join(head + body + tail), gen.consts, gen.loops > 0
