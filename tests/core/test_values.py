from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from flowstream.core.values import Json, Stream

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


def test_json_keeps_bytes_and_encodes_str() -> None:
    assert Json('{"a": 1}').data == b'{"a": 1}'
    assert Json(b"[1]").data == b"[1]"
    assert Json(bytearray(b"[2]")).data == b"[2]"  # type: ignore[arg-type]
    assert type(Json(bytearray(b"[2]")).data) is bytes  # type: ignore[arg-type]


def test_json_equality_and_hash_follow_the_bytes() -> None:
    assert Json("[1]") == Json(b"[1]")
    assert Json("[1]") != Json("[1 ]")
    assert Json("[1]") != b"[1]"
    assert len({Json("[1]"), Json(b"[1]"), Json("[2]")}) == 2


def test_json_repr_is_short() -> None:
    assert repr(Json('{"a": 1}')) == """Json('{"a": 1}')"""
    long = Json("[" + "1," * 100 + "1]")
    assert repr(long).endswith("...)")
    assert len(repr(long)) < 80


async def _numbers(log: list[str]) -> AsyncIterator[int]:
    try:
        for i in range(3):
            yield i
    finally:
        log.append("closed")


async def test_stream_reads_incrementally_then_refuses_a_second_read() -> None:
    log: list[str] = []
    stream = Stream(_numbers(log), name="numbers")
    assert repr(stream) == "Stream('numbers', unread)"
    assert await stream.collect() == [0, 1, 2]
    assert log == ["closed"]
    assert repr(stream) == "Stream('numbers', consumed)"
    with pytest.raises(RuntimeError, match=r"Stream 'numbers' was already read"):
        aiter(stream)


async def test_stream_aclose_closes_its_source() -> None:
    log: list[str] = []
    gen = _numbers(log)
    stream = Stream(gen)
    it = aiter(stream)
    assert await anext(it) == 0
    await stream.aclose()
    assert log == ["closed"]
    with pytest.raises(RuntimeError, match="already read"):
        await stream.collect()


async def test_stream_aclose_on_a_plain_iterable_is_harmless() -> None:
    class Items:
        def __aiter__(self) -> AsyncIterator[int]:
            return _numbers([])

    stream = Stream(Items(), name="plain")
    await stream.aclose()
    assert repr(stream) == "Stream('plain', consumed)"
