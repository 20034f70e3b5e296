"""A static upper bound on what evaluating a CEL expression costs.

The estimate walks the syntax tree with the size of every value it can know:
a literal's length, and for anything read from the item an assumed input size
``n`` (the caller picks it: a configured bound at validation, or the measured
size of the item before the interpreter runs). A comprehension costs its
range's size times its body's cost; concatenation costs the sizes it copies.
So ``x.map(a, x.map(b, x.map(c, 1)))`` costs about ``n**3``, a nest over
a literal list costs the product of the literal lengths, and doubling a
value at each level of a nest (``[s].map(a, [a + a].map(b, ...))``) costs
``2**depth``. The unit is one
step of evaluation (about a microsecond in the interpreter, less compiled).
"""

from __future__ import annotations

from typing import Any

__all__ = ["estimate_cost", "item_size"]

_CAP = 10**18  # saturate: the estimate only has to say "too much"


def _mul(a: int, b: int) -> int:
    return min(a * b, _CAP)


def estimate_cost(tree: Any, input_size: int, *, interpreted: bool = False) -> int:
    """An upper bound on the evaluation steps of ``tree`` on inputs of ``input_size``.

    ``interpreted`` counts what the ``cel`` interpreter does: its ``map`` and
    ``filter`` copy the partial result at every step, so they cost the
    square of their range.
    """
    cost, _ = _walk(tree, max(input_size, 1), {}, interpreted)
    return min(cost, _CAP)


def _walk(node: Any, n: int, env: dict[str, int], q: bool) -> tuple[int, int]:
    """Return (cost, size) where size bounds the length of the value."""
    kind = node[0]
    if kind == "lit":
        value = node[1]
        return 1, len(value) if isinstance(value, str | bytes) else 1
    if kind == "ident":
        return 1, env.get(node[1], n)
    if kind in ("select", "has"):
        cost, size = _walk(node[1], n, env, q)
        return cost + 1, size
    if kind == "index":
        c1, s1 = _walk(node[1], n, env, q)
        c2, _ = _walk(node[2], n, env, q)
        return c1 + c2 + 1, s1
    if kind == "list":
        parts = [_walk(item, n, env, q) for item in node[1]]
        return 1 + sum(c for c, _ in parts), len(parts) + sum(s for _, s in parts)
    if kind in ("map", "message"):
        entries = node[1] if kind == "map" else [(("lit", None), v) for v in node[2]]
        parts = [_walk(k, n, env, q) for k, _ in entries] + [
            _walk(v, n, env, q) for _, v in entries
        ]
        return 1 + sum(c for c, _ in parts), len(parts) + sum(s for _, s in parts)
    if kind in ("not", "neg"):
        cost, size = _walk(node[1], n, env, q)
        return cost + 1, size
    if kind in ("and", "or"):
        c1, _ = _walk(node[1], n, env, q)
        c2, _ = _walk(node[2], n, env, q)
        return c1 + c2 + 1, 1
    if kind == "cond":
        c0, _ = _walk(node[1], n, env, q)
        c1, s1 = _walk(node[2], n, env, q)
        c2, s2 = _walk(node[3], n, env, q)
        return c0 + max(c1, c2) + 1, max(s1, s2)
    if kind == "binary":
        c1, s1 = _walk(node[2], n, env, q)
        c2, s2 = _walk(node[3], n, env, q)
        if node[1] == "+":  # concatenation copies both sides
            return c1 + c2 + s1 + s2, s1 + s2
        if node[1] in ("==", "!=", "in"):  # deep comparisons look at everything
            return c1 + c2 + s1 + s2, 1
        return c1 + c2 + 1, 1
    if kind == "call":
        parts = [_walk(arg, n, env, q) for arg in node[3]]
        if node[2] is not None:
            parts.append(_walk(node[2], n, env, q))
        return 1 + sum(c + s for c, s in parts), max((s for _, s in parts), default=1)
    if kind == "macro":
        _, name, target, var, args = node
        c_range, s_range = _walk(target, n, env, q)
        # An element of a list literal is as big as its biggest item; one of
        # any other list counts 1 (what is read from the item is counted by
        # the input size already, and the runtime budget bounds the rest).
        elem = 1
        if target[0] == "list" and target[1]:
            elem = max(_walk(item, n, env, q)[1] for item in target[1])
            s_range = len(target[1])  # iterations; the content size is elem
        inner = {**env, var: elem}
        body = [_walk(arg, n, inner, q) for arg in args]
        per_item = 1 + sum(c for c, _ in body)
        cost = c_range + _mul(s_range, per_item)
        if q and name in ("map", "filter"):
            cost = min(cost + _mul(s_range, s_range) // 2, _CAP)
        if name == "map":
            return cost, min(s_range + _mul(s_range, body[-1][1]), _CAP)
        return cost, s_range if name == "filter" else 1
    return 1, n


def item_size(value: Any, limit: int) -> int:
    """The size of an item as the estimate counts it: elements and characters.

    Stops counting past ``limit``.
    """
    total = 0
    stack = [value]
    while stack and total <= limit:
        current = stack.pop()
        if isinstance(current, dict):
            total += len(current)
            stack.extend(current.values())
            stack.extend(current)
        elif isinstance(current, list | tuple):
            total += len(current)
            stack.extend(current)
        elif isinstance(current, str | bytes):
            total += len(current)
        else:
            total += 1
    return total
