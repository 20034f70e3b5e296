"""How deeply a document nests, checked without recursing.

msgspec (like most decoders) recurses once per level of nesting, so a small
document such as ``"[" * 1200 + "]" * 1200`` exhausts the interpreter's
recursion limit and raises `RecursionError` wherever it is decoded, encoded
or walked. Everything that takes documents from outside (connectors, the
CLI, the server) bounds their depth with a `NestingLimit` first, and turns a
deeper document into a named error instead.

The checks are cheap where it matters, on small records:

* JSON: counting ``[`` and ``{`` bounds the depth from above, so a document
  with at most ``max_depth`` of them is accepted after two ``bytes.count``
  calls. Otherwise the structural brackets (outside strings) are extracted
  with C-level byte operations and their depth measured exactly.
* MessagePack: container headers cannot be told from payload bytes without
  parsing, so the bytes that *could* be a container header are counted the
  same way; only when there are too many is the decoded value walked, one
  level at a time (no recursion).
"""

from __future__ import annotations

from itertools import accumulate
from typing import Any, Final

__all__ = ["DEFAULT_MAX_DEPTH", "NestingLimit"]

DEFAULT_MAX_DEPTH: Final = 128
"""Levels of arrays/objects a document may nest (serde_json's default too)."""

_ALL = frozenset(range(256))
# JSON: keep only quotes and brackets; fold objects into arrays (depth is
# depth, whichever the bracket).
_JSON_DROP = bytes(sorted(_ALL - set(b'"[]{}')))
_JSON_FOLD = bytes.maketrans(b"{}", b"[]")
_STEP = [0] * 256
_STEP[ord("[")] = 1
_STEP[ord("]")] = -1
_ROUNDS = 8  # leaf-removal rounds tried before the exact walk
# MessagePack: every byte that can start an array or a map (fixmap, fixarray,
# array16/32, map16/32).
_MSGPACK_HEADERS = bytes([*range(0x80, 0xA0), 0xDC, 0xDD, 0xDE, 0xDF])
_MSGPACK_DROP = bytes(sorted(_ALL - set(_MSGPACK_HEADERS)))


class NestingLimit:
    """A bound on nesting depth, with checks that never recurse.

    Depth counts containers: ``1`` and ``"a"`` have depth 0, ``[]`` and
    ``{"a": 1}`` depth 1, ``[[1]]`` depth 2.

    Args:
        max_depth: The deepest nesting accepted (an int >= 1).

    Raises:
        ValueError: ``max_depth`` is not an int >= 1.
    """

    __slots__ = ("max_depth",)

    def __init__(self, max_depth: int = DEFAULT_MAX_DEPTH) -> None:
        if type(max_depth) is not int or max_depth < 1:
            msg = f"max_depth must be an int >= 1, got {max_depth!r}"
            raise ValueError(msg)
        self.max_depth = max_depth

    def __repr__(self) -> str:
        return f"NestingLimit({self.max_depth})"

    @property
    def reason(self) -> str:
        """The dead-letter reason / error text for a document over the limit."""
        return f"too deeply nested (depth > {self.max_depth})"

    def json_exceeds(self, data: bytes) -> bool:
        """Whether the JSON document ``data`` nests deeper than the limit.

        Exact for valid JSON. For malformed JSON the answer bounds how deep
        a decoder gets before it meets the error, so a document this accepts
        cannot exhaust the recursion limit either.
        """
        limit = self.max_depth
        if data.count(b"[") + data.count(b"{") <= limit:
            return False
        if b"\\" in data:
            # Drop escaped backslashes, then escaped quotes: every quote left
            # opens or closes a string.
            data = data.replace(b"\\\\", b"").replace(b'\\"', b"")
        marks = data.translate(_JSON_FOLD, _JSON_DROP)
        if b'"' in marks:
            # Strings without brackets are now ``""``: dropping those pairs
            # (left to right) leaves no quote unless some string held a
            # bracket; then cut exactly what lies between quotes.
            bare = marks.replace(b'""', b"")
            marks = bare if b'"' not in bare else b"".join(marks.split(b'"')[::2])
        if marks.count(b"[") <= limit:
            return False
        return _bracket_depth(marks) > limit

    def msgpack_may_exceed(self, data: bytes) -> bool:
        """False when the MessagePack document ``data`` surely fits the limit.

        True means: walk the decoded value with `value_exceeds` to know.
        """
        return len(data.translate(None, _MSGPACK_DROP)) > self.max_depth

    def value_exceeds(self, value: Any) -> bool:
        """Whether a decoded value (lists and dicts) nests deeper than the limit.

        Walks one level at a time, without recursion; dict keys are not
        walked (decoders give only scalars or tuples there).
        """
        kind = type(value)
        level = [value] if kind is dict or kind is list else []
        depth = 0
        while level:
            depth += 1
            if depth > self.max_depth:
                return True
            deeper: list[Any] = []
            add = deeper.append
            for container in level:
                for item in (
                    container.values() if type(container) is dict else container
                ):
                    if type(item) is dict or type(item) is list:
                        add(item)
            level = deeper
        return False


def _bracket_depth(marks: bytes) -> int:
    """The deepest nesting of a string of ``[`` and ``]``."""
    # Removing every innermost ``[]`` takes one level off a balanced string:
    # a few rounds settle the usual case (many shallow records) in C.
    rest = marks
    for rounds in range(1, _ROUNDS + 1):
        shorter = rest.replace(b"[]", b"")
        if not shorter:
            return rounds
        if len(shorter) == len(rest):
            break  # unbalanced: measure it exactly
        rest = shorter
    return max(accumulate(map(_STEP.__getitem__, marks)))
