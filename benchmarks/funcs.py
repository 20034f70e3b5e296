"""The plain callables every contender uses (flowstream via ``fn: "module:attr"``).

Keeping them in one importable module means that flowstream, the floors and the
competitors call the very same function objects, so the per-item work is
identical and only the engine around it differs.
"""

from __future__ import annotations

DAG_MODULUS = 1_000_003


def double(x: int) -> int:
    return x * 2


def not_mult3(x: int) -> bool:
    return x % 3 != 0


def inc(x: int) -> int:
    return x + 1


def one() -> int:
    """A DAG source: a one-shot node with no inputs."""
    return 1


def add(a: int, b: int) -> int:
    """A DAG node: two inputs, one trivial result (bounded, so ints stay small)."""
    return (a + b) % DAG_MODULUS


async def aadd(a: int, b: int) -> int:
    """`add` as a coroutine function that never awaits."""
    return (a + b) % DAG_MODULUS


def slow_work(batch: list[int]) -> int:
    """The deliberately slow sink's work on one batch: a Python loop over it."""
    s = 0
    for x in batch:
        s += x
    return s


# The pipeline each workload computes, as CEL for the "expressions" variant.
CEL_DOUBLE = "x * 2"
CEL_NOT_MULT3 = "x % 3 != 0"
CEL_INC = "x + 1"


async def adouble(x: int) -> int:
    """``double`` as an async callable that never suspends (transform.map_async)."""
    return x * 2
