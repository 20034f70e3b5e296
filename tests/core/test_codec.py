from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import msgspec
import pytest
from hypothesis import given, settings, strategies as st

from flowstream.core import codec
from flowstream.core.values import Json, Stream
from flowstream.errors import CodecError, DecodeError, EncodeError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

FORMATS: list[codec.WireFormat] = ["json", "msgpack"]

ints = st.integers(min_value=-(2**63), max_value=2**63 - 1)
# The reserved "$bytes" key is drawn on purpose: a user's own {"$bytes": ...}
# mapping must not come back as bytes.
keys = st.text(max_size=8) | st.just("$bytes")


def values(floats: st.SearchStrategy[float]) -> st.SearchStrategy[Any]:
    scalars = st.none() | st.booleans() | ints | floats | st.text() | st.binary()
    return st.recursive(
        scalars,
        lambda children: (
            st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=4)
        ),
        max_leaves=16,
    )


# JSON has no infinity (see test_json_refuses_non_finite_floats); MessagePack does.
json_values = values(st.floats(allow_nan=False, allow_infinity=False))
msgpack_values = values(st.floats(allow_nan=False))


def assert_same(got: Any, expected: Any) -> None:
    """Equal, and of the same types all the way down (1 is not 1.0 here)."""
    assert type(got) is type(expected), (got, expected)
    if isinstance(expected, list):
        assert len(got) == len(expected)
        for g, e in zip(got, expected, strict=True):
            assert_same(g, e)
    elif isinstance(expected, dict):
        assert list(got) == list(expected)
        for key in expected:
            assert_same(got[key], expected[key])
    elif isinstance(expected, float):
        # Compare bit for bit so that -0.0 and 0.0 are told apart.
        assert math.copysign(1.0, got) == math.copysign(1.0, expected)
        assert got == expected
    else:
        assert got == expected


class _Items:
    """A minimal async iterable, so a Stream can be built without a generator."""

    def __aiter__(self) -> AsyncIterator[int]:
        msg = "the codec must not iterate a Stream"
        raise AssertionError(msg)


# --- round trips ----------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(json_values)
def test_json_round_trip(value: Any) -> None:
    assert_same(codec.decode_json(codec.encode_json(value)), value)
    assert_same(codec.decode(codec.encode(value, "json"), "json"), value)


@settings(max_examples=150, deadline=None)
@given(msgpack_values)
def test_msgpack_round_trip(value: Any) -> None:
    assert_same(codec.decode_msgpack(codec.encode_msgpack(value)), value)
    assert_same(codec.decode(codec.encode(value, "msgpack"), "msgpack"), value)


def test_default_format_is_json() -> None:
    data = codec.encode({"a": [1, 2]})
    assert data == b'{"a":[1,2]}'
    assert codec.decode(data) == {"a": [1, 2]}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    "value", [b"", b"\x00\xff raw", [b"a", {"k": b"b"}], {"nested": {"deep": [b"x"]}}]
)
def test_bytes_survive(fmt: codec.WireFormat, value: Any) -> None:
    assert_same(codec.decode(codec.encode(value, fmt), fmt), value)


def test_bytes_in_json_are_base64_records() -> None:
    assert codec.encode_json(b"\x00\x01") == b'{"$bytes":"AAE="}'
    assert codec.decode_json('{"$bytes": "AAE="}') == b"\x00\x01"


@pytest.mark.parametrize(
    "value",
    [{"$bytes": "AAE="}, {"$bytes": "not base64!"}, {"$bytes": [1]}, {"$bytes": 5}],
)
def test_json_user_mapping_with_reserved_key_round_trips(value: Any) -> None:
    assert_same(codec.decode_json(codec.encode_json(value)), value)


def test_json_invalid_base64_in_bytes_record_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match=r"\$bytes.*base64"):
        codec.decode_json('{"$bytes": "!!not base64!!"}')


# --- Json passthrough -------------------------------------------------------------


def test_json_value_is_spliced_unchanged_into_json() -> None:
    raw = b'{ "b" : [1, 2.50, "three"] , "a":null }'
    data = codec.encode_json({"outer": Json(raw), "n": 1})
    assert data == b'{"outer":' + raw + b',"n":1}'
    assert codec.decode_json(data) == {
        "outer": {"b": [1, 2.5, "three"], "a": None},
        "n": 1,
    }


def test_json_value_is_decoded_for_msgpack() -> None:
    data = codec.encode_msgpack([Json('{"a": [1, 2]}'), Json(b"true")])
    assert codec.decode_msgpack(data) == [{"a": [1, 2]}, True]


def test_invalid_json_value_cannot_be_encoded_as_msgpack() -> None:
    with pytest.raises(EncodeError, match="not valid JSON"):
        codec.encode_msgpack({"j": Json(b"{not json")})


def test_decode_json_accepts_a_json_value_and_str() -> None:
    assert codec.decode_json(Json(b"[1, 2]")) == [1, 2]
    assert codec.decode_json("[1, 2]") == [1, 2]


# --- refusals ---------------------------------------------------------------------


def _stream_at(where: str) -> Any:
    s: Stream[int] = Stream(_Items(), name="numbers")
    return {
        "top": s,
        "list": [1, 2, s],
        "dict": {"a": 1, "b": s},
        "deep": {"a": [{"b": [None, {"c": s}]}]},
        "with bytes": [b"x", {"y": s}],
    }[where]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("where", ["top", "list", "dict", "deep", "with bytes"])
def test_stream_anywhere_is_an_encode_error(fmt: codec.WireFormat, where: str) -> None:
    with pytest.raises(EncodeError) as info:
        codec.encode(_stream_at(where), fmt)
    message = str(info.value)
    assert "Stream('numbers'" in message
    assert "no wire form" in message
    assert "collect it into a list" in message
    # An EncodeError is also a TypeError and a CodecError.
    assert isinstance(info.value, TypeError)
    assert isinstance(info.value, CodecError)


class _Opaque:
    pass


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("value", [_Opaque(), 1j, [1, {"a": _Opaque()}]])
def test_unsupported_types_are_encode_errors(fmt: codec.WireFormat, value: Any) -> None:
    with pytest.raises(EncodeError, match="cannot encode a value of type"):
        codec.encode(value, fmt)


@pytest.mark.parametrize("value", [2**64, -(2**63) - 1, [2**70]])
def test_msgpack_refuses_ints_beyond_64_bits(value: Any) -> None:
    with pytest.raises(EncodeError):
        codec.encode_msgpack(value)


@pytest.mark.parametrize("value", [2**64, -(2**63) - 1, [2**70, -(2**100)]])
def test_json_keeps_ints_beyond_64_bits(value: Any) -> None:
    assert_same(codec.decode_json(codec.encode_json(value)), value)


@pytest.mark.parametrize(
    "value", [math.inf, -math.inf, math.nan, [1.0, {"x": math.inf}]]
)
def test_json_refuses_non_finite_floats(value: Any) -> None:
    # msgspec alone writes null, which would silently change the value.
    with pytest.raises(EncodeError, match="NaN or infinity"):
        codec.encode_json(value)


def test_msgpack_keeps_infinity() -> None:
    assert codec.decode_msgpack(codec.encode_msgpack([math.inf, -math.inf])) == [
        math.inf,
        -math.inf,
    ]


@pytest.mark.parametrize(
    "data", [b"", b"{", b'{"a": }', b"[1, 2", b"nul", "{'a': 1}", b"\xff{"]
)
def test_invalid_json_is_a_decode_error(data: bytes | str) -> None:
    with pytest.raises(DecodeError, match="invalid JSON") as info:
        codec.decode(data, "json")  # type: ignore[arg-type]
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value.__cause__, msgspec.DecodeError)


@pytest.mark.parametrize("data", [b"", b"\xc1", b"\x92\x01", b"\x81\xa1a"])
def test_invalid_msgpack_is_a_decode_error(data: bytes) -> None:
    with pytest.raises(DecodeError, match="invalid MessagePack"):
        codec.decode(data, "msgpack")


# --- documents --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("flow.json", "json"),
        ("flow.yaml", "yaml"),
        ("flow.yml", "yaml"),
        ("flow.toml", "toml"),
        ("dir.d/FLOW.YAML", "yaml"),
        ("a.b.toml", "toml"),
    ],
)
def test_document_format_by_extension(name: str, fmt: str) -> None:
    assert codec.document_format(name) == fmt


@pytest.mark.parametrize("name", ["flow.txt", "flow", "flow.json.bak", "flow.yaml~"])
def test_unknown_extension_is_a_decode_error_naming_the_file(name: str) -> None:
    with pytest.raises(DecodeError) as info:
        codec.document_format(name)
    message = str(info.value)
    assert message.startswith(f"{name}: unknown file type")
    assert ".json, .yaml, .yml, .toml" in message


@pytest.mark.parametrize("fmt", ["json", "yaml", "toml"])
def test_document_round_trip(fmt: codec.DocumentFormat) -> None:
    doc = {"name": "x", "n": [1, 2.5, "s", True], "t": {"k": "v"}}
    assert codec.decode_document(codec.encode_document(doc, fmt), fmt) == doc


def test_toml_has_no_null() -> None:
    with pytest.raises(EncodeError, match="TOML"):
        codec.encode_document({"a": {"b": None}}, "toml")


@pytest.mark.parametrize(
    ("fmt", "data"),
    [
        ("json", b"{"),
        ("yaml", b"a: [1,"),
        ("yaml", b"a: !!python/object:os.system x"),
        ("toml", b"a = "),
        ("toml", b"\xff\xfe = 1"),
        ("json", b"\xff"),
    ],
)
def test_invalid_document_is_a_decode_error_naming_it(
    fmt: codec.DocumentFormat, data: bytes
) -> None:
    with pytest.raises(DecodeError) as info:
        codec.decode_document(data, fmt, name="flow.doc")
    assert str(info.value).startswith(f"flow.doc: invalid {fmt.upper()}")


def test_yaml_reads_yaml_1_2_floats() -> None:
    # PyYAML alone follows YAML 1.1 and reads "1.0e12" as a string, so a
    # config like window_ms: 1.0e12 was refused.
    doc = b"a: 1.0e12\nb: 1e3\nc: -2.5E-3\nd: '1.0e12'\ne: 12\nf: .5\ng: 1.0.0\n"
    assert codec.decode_document(doc, "yaml") == {
        "a": 1e12,
        "b": 1000.0,
        "c": -0.0025,
        "d": "1.0e12",
        "e": 12,
        "f": 0.5,
        "g": "1.0.0",
    }
    assert type(codec.decode_document(b"x: 12", "yaml")["x"]) is int


def test_yaml_writes_float_like_strings_quoted() -> None:
    # The writer resolves plain scalars as the reader does, so a string that
    # YAML 1.2 reads as a float ("1e3") is quoted and round-trips.
    doc = {"a": "1e3", "b": "0.", "c": "1.0e12", "d": 1e12, "e": "x"}
    text = codec.encode_document(doc, "yaml")
    assert b"a: '1e3'" in text
    assert codec.decode_document(text, "yaml") == doc
