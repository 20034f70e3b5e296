"""CEL operators on Python values, for compiled expressions.

Compiled code inlines the common cases (an int field compared with an int
literal) and calls these helpers for the rest. Each helper either computes
exactly what the ``cel`` library computes, raises `CelError` for an error the
library also raises, or raises `Fallback` when the values are outside what
the helpers model (uints read from items, huge ints, timestamps, mixed int and
double beyond 2**53 ...): the caller then evaluates the item with the
interpreter, so odd values cost time, never correctness.

Values: CEL ``int`` is a Python ``int`` within int64; ``uint`` is `UInt`
(literals and conversions); ``double`` is ``float``; ``string``, ``bytes``,
``bool``, ``null`` (``None``), ``list`` and ``map`` (``dict``) are themselves.
"""

from __future__ import annotations

import re
from typing import Any, NoReturn

from .syntax import INT64_MAX, INT64_MIN, UINT64_MAX, UInt

__all__ = ["CelError", "Fallback"]


class CelError(ValueError):
    """A CEL expression failed on an item: the message names the expression and why."""


class Fallback(Exception):
    """The compiled code cannot decide this item: evaluate it with the interpreter."""


FALLBACK = Fallback()
_EXACT = 2**53  # ints within this convert to double exactly


def no_overload(op: str, *args: Any) -> CelError:
    """The error CEL raises when no overload matches the operands' types."""
    kinds = ", ".join(type_name(a) for a in args)
    return CelError(f"no such overload: {op}({kinds})")


def type_name(value: Any) -> str:
    """The CEL type name of a Python value (as ``type()`` would spell it)."""
    kind = type(value)
    if kind is bool:
        return "bool"
    if kind is UInt:
        return "uint"
    if kind is int:
        return "int" if INT64_MIN <= value <= INT64_MAX else "uint"
    return _NAMES.get(kind, kind.__name__)


_NAMES = {
    float: "double",
    str: "string",
    bytes: "bytes",
    type(None): "null_type",
    list: "list",
    dict: "map",
}


def _int(value: Any) -> bool:
    """Whether ``value`` is a CEL int (not a uint read from an item)."""
    return type(value) is int and INT64_MIN <= value <= INT64_MAX


def _checked(result: int, op: str, a: Any, b: Any) -> int:
    if INT64_MIN <= result <= INT64_MAX:
        return result
    msg = f"int overflow in {op} on {a} and {b}"
    raise CelError(msg)


def _checked_u(result: int, op: str, a: Any, b: Any) -> UInt:
    if 0 <= result <= UINT64_MAX:
        return UInt(result)
    msg = f"uint overflow in {op} on {a} and {b}"
    raise CelError(msg)


def add(a: Any, b: Any) -> Any:
    """``a + b``."""
    ta = type(a)
    if ta is not type(b):
        _mismatch("+", a, b)
    if ta is int:
        if _int(a) and _int(b):
            return _checked(a + b, "+", a, b)
        raise FALLBACK
    if ta is float or ta is str or ta is bytes or ta is list:
        return a + b
    if ta is UInt:
        return _checked_u(a + b, "+", a, b)
    raise FALLBACK


def sub(a: Any, b: Any) -> Any:
    """``a - b``."""
    ta = type(a)
    if ta is not type(b):
        _mismatch("-", a, b)
    if ta is int:
        if _int(a) and _int(b):
            return _checked(a - b, "-", a, b)
        raise FALLBACK
    if ta is float:
        return a - b
    if ta is UInt:
        return _checked_u(a - b, "-", a, b)
    raise FALLBACK


def mul(a: Any, b: Any) -> Any:
    """``a * b``."""
    ta = type(a)
    if ta is not type(b):
        _mismatch("*", a, b)
    if ta is int:
        if _int(a) and _int(b):
            return _checked(a * b, "*", a, b)
        raise FALLBACK
    if ta is float:
        return a * b
    if ta is UInt:
        return _checked_u(a * b, "*", a, b)
    raise FALLBACK


def _trunc_div(a: int, b: int) -> int:
    q = abs(a) // abs(b)
    return q if (a < 0) == (b < 0) else -q


def div(a: Any, b: Any) -> Any:
    """``a / b``: ints truncate toward zero; a zero divisor is an error."""
    ta = type(a)
    if ta is not type(b):
        _mismatch("/", a, b)
    if ta is float:
        if b == 0.0:
            if a != a or a == 0.0:
                return float("nan")
            negative = (a < 0) != (str(b)[0] == "-")
            return float("-inf") if negative else float("inf")
        return a / b
    if ta is int or ta is UInt:
        if ta is int and not (_int(a) and _int(b)):
            raise FALLBACK
        if b == 0:
            msg = "division by zero"
            raise CelError(msg)
        if ta is UInt:
            return UInt(a // b)
        return _checked(_trunc_div(a, b), "/", a, b)
    raise FALLBACK


def mod(a: Any, b: Any) -> Any:
    """``a % b``: the sign follows the dividend; a zero divisor is an error."""
    ta = type(a)
    if ta is not type(b):
        _mismatch("%", a, b)
    if ta is int or ta is UInt:
        if ta is int and not (_int(a) and _int(b)):
            raise FALLBACK
        if b == 0:
            msg = "modulus by zero"
            raise CelError(msg)
        if ta is UInt:
            return UInt(a % b)
        if a == INT64_MIN and b == -1:
            msg = f"int overflow in % on {a} and {b}"
            raise CelError(msg)
        r = abs(a) % abs(b)
        return r if a >= 0 else -r
    if ta is float:
        error = no_overload("%", a, b)
        raise error
    raise FALLBACK


def _mismatch(op: str, a: Any, b: Any) -> NoReturn:
    """Operands of different types: an error for plain CEL values."""
    if type(a) in _PLAIN and type(b) in _PLAIN and not (_wide(a) or _wide(b)):
        raise no_overload(op, a, b)
    raise FALLBACK


def _wide(v: Any) -> bool:
    return type(v) is int and not INT64_MIN <= v <= INT64_MAX


_PLAIN = frozenset({int, UInt, float, str, bytes, bool, type(None), list, dict})
_NUMBERS = frozenset({int, UInt, float})


def neg(a: Any) -> Any:
    """``-a``."""
    if type(a) is int and INT64_MIN < a <= INT64_MAX:
        return -a
    if type(a) is float:
        return -a
    if type(a) is bool:  # the library negates a bool as ``!``
        return not a
    if type(a) in _PLAIN and type(a) is not int and type(a) is not UInt:
        error = no_overload("-", a)
        raise error
    raise FALLBACK


def not_(a: Any) -> bool:
    """``!a``."""
    if a is True:
        return False
    if a is False:
        return True
    error = no_overload("!", a)
    raise error


def nobool(op: str, value: Any) -> CelError:
    """A logical operator's operand is not a bool."""
    return no_overload(op, value)


def eq(a: Any, b: Any) -> bool:
    """CEL equality: numbers compare across int, uint and double; otherwise by type."""
    ta, tb = type(a), type(b)
    if ta is tb:
        if ta is list:
            return len(a) == len(b) and all(eq(x, y) for x, y in zip(a, b, strict=True))
        if ta is dict:
            return _map_eq(a, b)
        if ta in _PLAIN:
            return bool(a == b)
        raise FALLBACK
    if ta in _NUMBERS and tb in _NUMBERS:
        if (ta is float and abs(b) <= _EXACT) or (tb is float and abs(a) <= _EXACT):
            return bool(a == b)
        if ta is not float and tb is not float:
            return bool(a == b)
        raise FALLBACK
    if ta in _PLAIN and tb in _PLAIN:
        return False
    raise FALLBACK


def _map_eq(a: dict[Any, Any], b: dict[Any, Any]) -> bool:
    if len(a) != len(b):
        return False
    for key, value in a.items():
        if type(key) is not str:
            raise FALLBACK  # int/uint/bool keys mix in ways dicts do not model
        if key not in b:
            return False
        if not eq(value, b[key]):
            return False
    return True


def ne(a: Any, b: Any) -> bool:
    """``a != b``."""
    return not eq(a, b)


def _order(op: str, a: Any, b: Any) -> tuple[Any, Any]:
    """Return comparable operands, or raise when CEL does not order them."""
    ta, tb = type(a), type(b)
    if ta is tb:
        if ta is int or ta is UInt or ta is str or ta is bytes or ta is bool:
            return a, b
        if ta is float:
            if a != a or b != b:
                raise no_overload(op, a, b)
            return a, b
    elif ta in _NUMBERS and tb in _NUMBERS:
        if ta is float:
            if a != a:
                raise no_overload(op, a, b)
            if abs(b) <= _EXACT:
                return a, b
        elif tb is float:
            if b != b:
                raise no_overload(op, a, b)
            if abs(a) <= _EXACT:
                return a, b
        else:
            return a, b
        raise FALLBACK
    if ta in _PLAIN and tb in _PLAIN:
        raise no_overload(op, a, b)
    raise FALLBACK


def lt(a: Any, b: Any) -> bool:
    """``a < b``."""
    x, y = _order("<", a, b)
    return bool(x < y)


def le(a: Any, b: Any) -> bool:
    """``a <= b``."""
    x, y = _order("<=", a, b)
    return bool(x <= y)


def gt(a: Any, b: Any) -> bool:
    """``a > b``."""
    x, y = _order(">", a, b)
    return bool(x > y)


def ge(a: Any, b: Any) -> bool:
    """``a >= b``."""
    x, y = _order(">=", a, b)
    return bool(x >= y)


def in_(a: Any, b: Any) -> bool:
    """``a in b``: list membership by CEL equality, or a map key."""
    if type(b) is list:
        return any(eq(a, item) for item in b)
    if type(b) is dict:
        if type(a) is str:
            return a in b
        raise FALLBACK
    if type(b) in _PLAIN:
        error = no_overload("in", a, b)
        raise error
    raise FALLBACK


def field(value: Any, name: str) -> Any:
    """``value.name``."""
    if type(value) is dict:
        try:
            return value[name]
        except KeyError:
            msg = f"no such key: {name}"
            raise CelError(msg) from None
    raise FALLBACK


def has(value: Any, name: str) -> bool:
    """``has(value.name)``."""
    if type(value) is dict:
        return name in value
    raise FALLBACK


def index(value: Any, key: Any) -> Any:
    """``value[key]``."""
    if type(value) is list:
        if type(key) is int or type(key) is UInt:
            if 0 <= key < len(value):
                return value[key]
            if INT64_MIN <= key <= INT64_MAX:
                msg = f"index out of bounds: {key}"
                raise CelError(msg)
        raise FALLBACK
    if type(value) is dict:
        if type(key) is str:
            try:
                return value[key]
            except KeyError:
                msg = f"no such key: {key}"
                raise CelError(msg) from None
        raise FALLBACK
    raise FALLBACK


def size(value: Any) -> int:
    """``size(value)``: strings count UTF-8 bytes, as the library does."""
    kind = type(value)
    if kind is str:
        return len(value) if value.isascii() else len(value.encode())
    if kind is bytes or kind is list or kind is dict:
        return len(value)
    raise FALLBACK


def contains(s: Any, sub: Any) -> bool:
    """``s.contains(sub)``."""
    if type(s) is str and type(sub) is str:
        return sub in s
    raise FALLBACK


def starts_with(s: Any, prefix: Any) -> bool:
    """``s.startsWith(prefix)``."""
    if type(s) is str and type(prefix) is str:
        return s.startswith(prefix)
    raise FALLBACK


def ends_with(s: Any, suffix: Any) -> bool:
    """``s.endsWith(suffix)``."""
    if type(s) is str and type(suffix) is str:
        return s.endswith(suffix)
    raise FALLBACK


def matches(s: Any, pattern: re.Pattern[str]) -> bool:
    """``s.matches(literal)``, with the pattern translated once (see `regex`)."""
    if type(s) is str:
        return pattern.search(s) is not None
    raise FALLBACK


_UNSAFE_REGEX = re.compile(r"\(\?|\\[pPQEzACbBsSUuxX0-9]|\[\[:|\{,|[^\x20-\x7e]")


def regex(pattern: str) -> re.Pattern[str] | None:
    r"""Translate an RE2 pattern to Python's ``re``, or ``None`` if not sure.

    Only a common subset is translated: no groups with ``(?``, no classes
    that differ between the engines; ``$`` becomes ``\\Z`` (RE2's ``$``
    does not match before a final newline).
    """
    if _UNSAFE_REGEX.search(pattern):
        return None
    out: list[str] = []
    in_class = escaped = False
    for ch in pattern:
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif in_class:
            in_class = ch != "]"
        elif ch == "[":
            in_class = True
        elif ch == "$":
            out.append(r"\Z")
            continue
        out.append(ch)
    try:
        return re.compile("".join(out), re.ASCII)
    except re.error:
        return None


_DECIMAL = re.compile(r"[+-]?[0-9]+")


def to_int(value: Any) -> int:
    """``int(value)``."""
    kind = type(value)
    if kind is int or kind is UInt:
        if INT64_MIN <= value <= INT64_MAX:
            return int(value)
        raise FALLBACK
    if kind is float:
        if value != value or not -9.2e18 < value < 9.2e18:
            raise FALLBACK
        return int(value)
    if kind is str:
        if _DECIMAL.fullmatch(value):
            number = int(value)
            if INT64_MIN <= number <= INT64_MAX:
                return number
        raise FALLBACK
    raise FALLBACK


def to_uint(value: Any) -> UInt:
    """``uint(value)``."""
    kind = type(value)
    if (kind is int or kind is UInt) and 0 <= value <= UINT64_MAX:
        return UInt(value)
    if kind is float and 0 <= value < 1.8e19:
        return UInt(int(value))
    raise FALLBACK


def to_double(value: Any) -> float:
    """``double(value)``."""
    kind = type(value)
    if kind is float:
        return float(value)
    if (kind is int or kind is UInt) and abs(value) <= _EXACT:
        return float(value)
    raise FALLBACK


def to_string(value: Any) -> str:
    """``string(value)``."""
    kind = type(value)
    if kind is str:
        return str(value)
    if (kind is int and INT64_MIN <= value <= INT64_MAX) or kind is UInt:
        return str(int(value))
    raise FALLBACK


def to_bytes(value: Any) -> bytes:
    """``bytes(value)``."""
    if type(value) is bytes:
        return value
    if type(value) is str:
        return value.encode()
    raise FALLBACK


def items(value: Any, macro: str) -> list[Any]:
    """What a comprehension iterates over: a list's items or a map's keys."""
    if type(value) is list:
        return value
    if type(value) is dict:
        return list(value)
    if type(value) in _PLAIN:
        raise no_overload(macro, value)
    raise FALLBACK


def result(value: Any) -> Any:
    """Check a result: what the library would convert falls back to it."""
    kind = type(value)
    if kind is int:
        if INT64_MIN <= value <= UINT64_MAX:
            return value
        raise FALLBACK
    if kind is UInt:
        return int(value)
    if kind is list or kind is dict:
        _plain(value)
        return value
    if kind in _PLAIN:
        return value
    raise FALLBACK


def _plain(value: Any) -> None:
    """Raise `Fallback` if a container holds what the library would convert."""
    kind = type(value)
    if kind is list:
        for item in value:
            k = type(item)
            if k is not str and k is not float and k is not bool and item is not None:
                _plain(item)
    elif kind is dict:
        for key, item in value.items():
            if type(key) is not str:
                raise FALLBACK
            _plain(item)
    elif kind is int:
        if not INT64_MIN <= value <= UINT64_MAX:
            raise FALLBACK
    elif kind not in _PLAIN or kind is UInt:
        raise FALLBACK
