"""CEL source text to a syntax tree: a tokenizer and a precedence-climbing parser.

The tree is made of tuples whose first element names the node kind:

- ``("lit", value)``: a literal (``int``, `UInt`, ``float``, ``str``,
  ``bytes``, ``bool``, ``None``);
- ``("ident", name)``; ``("select", operand, field)``; ``("has", operand, field)``;
- ``("index", operand, key)``; ``("list", items)``; ``("map", entries)``;
- ``("call", name, target, args)``: a function (``target`` is ``None``) or a
  method call;
- ``("macro", name, target, var, args)``: ``all``, ``exists``, ``exists_one``,
  ``map`` and ``filter`` (``args`` are the predicate or transform);
- ``("not", operand)``; ``("neg", operand)``; ``("and", left, right)``;
  ``("or", left, right)``; ``("cond", test, then, otherwise)``;
- ``("binary", op, left, right)`` with op one of ``+ - * / % == != < <= > >= in``;
- ``("message", name, fields)``: message construction (never compiled).

The grammar and the literal forms follow the CEL language definition. The
``cel`` library parses every expression first; this parser only has to accept
what that library accepts, and raises `CelSyntaxError` for the rest.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["INT64_MAX", "INT64_MIN", "UINT64_MAX", "CelSyntaxError", "UInt", "parse"]

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
UINT64_MAX = 2**64 - 1

MACROS = frozenset({"all", "exists", "exists_one", "map", "filter"})
_RESERVED = frozenset(
    {"as", "break", "const", "continue", "else", "for", "function", "if", "import"}
    | {"let", "loop", "package", "namespace", "return", "var", "void", "while"}
)


class UInt(int):
    """A CEL unsigned integer (``1u``): an ``int`` that remembers its type."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"{int(self)}u"


class CelSyntaxError(ValueError):
    """Text this parser does not accept (the ``cel`` library decides validity)."""


_TOKEN = re.compile(
    r"""
    (?P<ws>\s+|//[^\n]*)
  | (?P<string>(?:[rR][bB]?|[bB][rR]?)?(?:'''|\"\"\"|'|"))
  | (?P<float>(?:\d+\.\d+(?:[eE][+-]?\d+)?|\d+[eE][+-]?\d+|\.\d+(?:[eE][+-]?\d+)?))
  | (?P<hex>0[xX][0-9a-fA-F]+[uU]?)
  | (?P<int>\d+[uU]?)
  | (?P<ident>[_a-zA-Z][_a-zA-Z0-9]*)
  | (?P<op>==|!=|<=|>=|&&|\|\||[-+*/%<>!?:.,()\[\]{}])
    """,
    re.VERBOSE,
)

_SIMPLE_ESCAPES = {
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
    "\\": "\\",
    "'": "'",
    '"': '"',
    "`": "`",
    "?": "?",
}

Token = tuple[str, Any, int]


def _read_string(text: str, start: int, prefix_end: int) -> tuple[Any, int]:
    """Read a string or bytes literal whose quote starts at ``prefix_end``."""
    prefix = text[start:prefix_end].lower()
    raw, is_bytes = "r" in prefix, "b" in prefix
    quote = text[prefix_end : prefix_end + 3]
    if quote not in ("'''", '"""'):
        quote = text[prefix_end]
    i = prefix_end + len(quote)
    parts: list[bytes] = []
    while True:
        if text.startswith(quote, i):
            i += len(quote)
            break
        if i >= len(text) or (len(quote) == 1 and text[i] in "\r\n"):
            msg = "unterminated string literal"
            raise CelSyntaxError(msg)
        ch = text[i]
        if ch != "\\" or raw:
            parts.append(ch.encode())
            i += 1
            continue
        esc = text[i + 1 : i + 2]
        if esc in _SIMPLE_ESCAPES:
            parts.append(_SIMPLE_ESCAPES[esc].encode())
            i += 2
        elif esc in ("x", "X"):
            parts.append(_code(text[i + 2 : i + 4], 16, 2, is_bytes))
            i += 4
        elif esc == "u" and not is_bytes:
            parts.append(_code(text[i + 2 : i + 6], 16, 4, False))
            i += 6
        elif esc == "U" and not is_bytes:
            parts.append(_code(text[i + 2 : i + 10], 16, 8, False))
            i += 10
        elif esc in "0123":
            parts.append(_code(text[i + 1 : i + 4], 8, 3, is_bytes))
            i += 4
        else:
            msg = f"invalid escape \\{esc}"
            raise CelSyntaxError(msg)
    data = b"".join(parts)
    if is_bytes:
        return data, i
    try:
        return data.decode(), i
    except UnicodeDecodeError:
        msg = "string literal is not valid UTF-8"
        raise CelSyntaxError(msg) from None


def _code(digits: str, base: int, width: int, is_bytes: bool) -> bytes:
    if len(digits) != width:
        msg = "short escape sequence"
        raise CelSyntaxError(msg)
    try:
        value = int(digits, base)
    except ValueError:
        msg = f"invalid escape digits {digits!r}"
        raise CelSyntaxError(msg) from None
    if is_bytes:
        return bytes([value])
    if 0xD800 <= value <= 0xDFFF or value > 0x10FFFF:
        msg = "escape is not a Unicode scalar value"
        raise CelSyntaxError(msg)
    return chr(value).encode()


def tokenize(text: str) -> list[Token]:
    """Split ``text`` into ``(kind, value, offset)`` tokens, ending with ``eof``."""
    tokens: list[Token] = []
    pos = 0
    while pos < len(text):
        found = _TOKEN.match(text, pos)
        if found is None:
            msg = f"unexpected character {text[pos]!r} at {pos}"
            raise CelSyntaxError(msg)
        kind = found.lastgroup
        value = found.group()
        if kind == "string":
            literal, end = _read_string(
                text, pos, found.end() - (3 if value[-3:] in ("'''", '"""') else 1)
            )
            tokens.append(("lit", literal, pos))
            pos = end
            continue
        if kind == "float":
            tokens.append(("lit", float(value), pos))
        elif kind in ("int", "hex"):
            unsigned = value[-1] in "uU"
            digits = value[:-1] if unsigned else value
            number = int(digits, 16 if kind == "hex" else 10)
            if unsigned:
                if number > UINT64_MAX:
                    msg = "uint literal out of range"
                    raise CelSyntaxError(msg)
                tokens.append(("lit", UInt(number), pos))
            else:
                tokens.append(("intlit", number, pos))
        elif kind == "ident":
            if value in ("true", "false"):
                tokens.append(("lit", value == "true", pos))
            elif value == "null":
                tokens.append(("lit", None, pos))
            elif value == "in":
                tokens.append(("op", "in", pos))
            elif value in _RESERVED:
                msg = f"reserved word {value!r}"
                raise CelSyntaxError(msg)
            else:
                tokens.append(("ident", value, pos))
        elif kind == "op":
            tokens.append(("op", value, pos))
        pos = found.end()
    tokens.append(("eof", None, len(text)))
    return tokens


_RELATIONS = frozenset({"==", "!=", "<", "<=", ">", ">=", "in"})
_MAX_DEPTH = 200


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = tokenize(text)
        self.pos = 0
        self.depth = 0

    def peek(self) -> Token:
        return self.tokens[self.pos]

    def next(self) -> Token:
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def accept(self, op: str) -> bool:
        kind, value, _ = self.tokens[self.pos]
        if kind == "op" and value == op:
            self.pos += 1
            return True
        return False

    def expect(self, op: str) -> None:
        if not self.accept(op):
            _, value, offset = self.peek()
            msg = f"expected {op!r} at {offset}, found {value!r}"
            raise CelSyntaxError(msg)

    def expr(self) -> Any:
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            msg = "expression nested too deeply"
            raise CelSyntaxError(msg)
        test = self.binary(0)
        if self.accept("?"):
            then = self.binary(0)
            self.expect(":")
            otherwise = self.expr()
            test = ("cond", test, then, otherwise)
        self.depth -= 1
        return test

    # Levels: 0 ||, 1 &&, 2 relations, 3 + -, 4 * / %.
    def binary(self, level: int) -> Any:
        if level == 5:
            return self.unary()
        left = self.binary(level + 1)
        while True:
            kind, op, _ = self.peek()
            if kind != "op" or _level(op) != level:
                return left
            self.pos += 1
            right = self.binary(level + 1)
            if op == "||":
                left = ("or", left, right)
            elif op == "&&":
                left = ("and", left, right)
            else:
                left = ("binary", op, left, right)

    def unary(self) -> Any:
        if self.accept("!"):
            return ("not", self.unary())
        if self.accept("-"):
            kind, value, _ = self.peek()
            if kind == "intlit":  # -9223372036854775808 is one literal
                self.pos += 1
                return self.member(("lit", self._int(-value)))
            return ("neg", self.unary())
        return self.member(self.primary())

    def _int(self, value: int) -> int:
        if not INT64_MIN <= value <= INT64_MAX:
            msg = "int literal out of range"
            raise CelSyntaxError(msg)
        return value

    def member(self, node: Any) -> Any:
        while True:
            if self.accept("."):
                kind, name, offset = self.next()
                if kind != "ident":
                    msg = f"expected a field name at {offset}"
                    raise CelSyntaxError(msg)
                if self.accept("("):
                    args = self.arguments(")")
                    node = self.call(name, node, args)
                else:
                    node = ("select", node, name)
            elif self.accept("["):
                key = self.expr()
                self.expect("]")
                node = ("index", node, key)
            else:
                return node

    def call(self, name: str, target: Any, args: list[Any]) -> Any:
        if target is not None and name in MACROS:
            if (name == "map" and len(args) == 3) or len(args) == 2:
                var = args[0]
                if var[0] != "ident":
                    msg = f"the first argument of {name} must be a variable name"
                    raise CelSyntaxError(msg)
                return ("macro", name, target, var[1], args[1:])
        if target is None and name == "has" and len(args) == 1:
            arg = args[0]
            if arg[0] != "select":
                msg = "has() takes a field selection"
                raise CelSyntaxError(msg)
            return ("has", arg[1], arg[2])
        return ("call", name, target, args)

    def arguments(self, close: str) -> list[Any]:
        args: list[Any] = []
        if self.accept(close):
            return args
        while True:
            args.append(self.expr())
            if self.accept(close):
                return args
            self.expect(",")
            if self.accept(close):  # a trailing comma
                return args

    def primary(self) -> Any:
        kind, value, offset = self.next()
        if kind == "lit":
            return ("lit", value)
        if kind == "intlit":
            return ("lit", self._int(value))
        if kind == "op" and value == ".":
            kind, value, offset = self.next()
            if kind != "ident":
                msg = f"expected a name after '.' at {offset}"
                raise CelSyntaxError(msg)
        if kind == "ident":
            if self.accept("("):
                return self.call(value, None, self.arguments(")"))
            if self.peek()[:2] == ("op", "{"):
                self.pos += 1
                return ("message", value, self.arguments("}"))
            return ("ident", value)
        if kind == "op":
            if value == "(":
                inner = self.expr()
                self.expect(")")
                return inner
            if value == "[":
                return ("list", self.arguments("]"))
            if value == "{":
                return ("map", self.map_entries())
        msg = f"unexpected {value!r} at {offset}"
        raise CelSyntaxError(msg)

    def map_entries(self) -> list[tuple[Any, Any]]:
        entries: list[tuple[Any, Any]] = []
        if self.accept("}"):
            return entries
        while True:
            key = self.expr()
            self.expect(":")
            entries.append((key, self.expr()))
            if self.accept("}"):
                return entries
            self.expect(",")
            if self.accept("}"):
                return entries


def _level(op: Any) -> int:
    if op == "||":
        return 0
    if op == "&&":
        return 1
    if op in _RELATIONS:
        return 2
    if op in ("+", "-"):
        return 3
    if op in ("*", "/", "%"):
        return 4
    return -1


def parse(text: str) -> Any:
    """Parse a CEL expression into a syntax tree (see the module docstring).

    Raises:
        CelSyntaxError: This parser does not accept the text.
    """
    parser = _Parser(text)
    tree = parser.expr()
    kind, value, offset = parser.peek()
    if kind != "eof":
        msg = f"unexpected {value!r} at {offset}"
        raise CelSyntaxError(msg)
    return tree
