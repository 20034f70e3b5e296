"""NestingLimit measures depth exactly, without recursing, for any document."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import given, settings, strategies as st

from flowstream import DEFAULT_MAX_DEPTH, NestingLimit

# Strings full of what could fool a byte scan: brackets, quotes, backslashes.
tricky = st.text(alphabet='[]{}"\\ab', max_size=6)
values = st.recursive(
    st.none()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | tricky,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(tricky, inner, max_size=4)
    ),
    max_leaves=40,
)


def depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    return 0


@settings(max_examples=300, deadline=None)
@given(values, st.integers(min_value=1, max_value=8))
def test_the_checks_agree_with_the_depth(value: Any, limit: int) -> None:
    nesting = NestingLimit(limit)
    deep = depth(value) > limit
    assert nesting.json_exceeds(msgspec.json.encode(value)) == deep
    assert nesting.value_exceeds(value) == deep
    if not nesting.msgpack_may_exceed(msgspec.msgpack.encode(value)):
        assert not deep  # an upper bound: never says "fits" wrongly


def test_very_deep_documents_are_measured_without_recursing() -> None:
    nesting = NestingLimit()
    assert nesting.max_depth == DEFAULT_MAX_DEPTH == 128
    for depth_ in (129, 1200, 100_000):
        assert nesting.json_exceeds(b"[" * depth_ + b"]" * depth_)
        assert nesting.json_exceeds(b"[" * depth_)  # unbalanced too
    assert not nesting.json_exceeds(b"[" * 128 + b"]" * 128)
    assert nesting.json_exceeds(b'{"a":' * 129 + b"1" + b"}" * 129)
    value: Any = 1
    for _ in range(100_000):
        value = [value]
    assert nesting.value_exceeds(value)
    assert nesting.reason == "too deeply nested (depth > 128)"


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_the_limit_is_an_int_at_least_1(bad: Any) -> None:
    with pytest.raises(ValueError, match="max_depth must be an int >= 1"):
        NestingLimit(bad)


def test_decoding_a_deep_value_is_a_decode_error() -> None:
    from flowstream.core.codec import decode_json, decode_msgpack
    from flowstream.errors import DecodeError

    with pytest.raises(DecodeError, match="too deeply nested"):
        decode_json(b"[" * 5000 + b"]" * 5000)
    with pytest.raises(DecodeError, match="too deeply nested"):
        decode_json(b'[{"$bytes": ' * 600 + b'"AA=="' + b"}]" * 600)
    with pytest.raises(DecodeError, match="too deeply nested"):
        decode_msgpack(b"\x91" * 5000 + b"\x01")
