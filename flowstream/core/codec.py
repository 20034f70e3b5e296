"""The one codec: values as JSON and MessagePack, documents as JSON, YAML and TOML.

Everything is msgspec. Encoders and decoders are module-level and reused (the
top-level ``msgspec.json.encode`` builds state on every call).

Values keep their types through both wire formats:

* ``bytes`` are native in MessagePack; in JSON they are written as
  ``{"$bytes": "<base64>"}`` and turned back into bytes on decode (a value's own
  one-key ``{"$bytes": v}`` mapping is escaped as ``{"$bytes": [v]}``).
* JSON has no NaN or infinity: encoding them as JSON raises `EncodeError`.
* `Json` is spliced into JSON output unchanged and decoded once for MessagePack.
* `Stream` has no wire form: encoding one raises `EncodeError`.
"""

from __future__ import annotations

import base64
import binascii
import functools
import math
import re
from pathlib import Path
from typing import Any, Literal

import msgspec

from ..errors import DecodeError, EncodeError
from .nesting import NestingLimit
from .values import Json, Stream

__all__ = [
    "DOCUMENT_FORMATS",
    "WireFormat",
    "decode",
    "decode_document",
    "decode_json",
    "decode_msgpack",
    "document_format",
    "encode",
    "encode_document",
    "encode_json",
    "encode_msgpack",
    "yaml_loader",
]

WireFormat = Literal["json", "msgpack"]

_BYTES_KEY = "$bytes"


def _json_hook(obj: Any) -> Any:
    if isinstance(obj, Json):
        return msgspec.Raw(obj.data)
    return _refuse(obj)


def _msgpack_hook(obj: Any) -> Any:
    if isinstance(obj, Json):
        try:
            return _json_decoder.decode(obj.data)
        except msgspec.DecodeError as exc:
            msg = f"cannot encode {obj!r} as MessagePack: it is not valid JSON ({exc})"
            raise EncodeError(msg) from exc
    return _refuse(obj)


def _refuse(obj: Any) -> Any:
    if isinstance(obj, Stream):
        msg = (
            f"cannot encode {obj!r}: a Stream is read incrementally and has no "
            "wire form; collect it into a list first"
        )
    else:
        msg = f"cannot encode a value of type {type(obj).__qualname__}: {obj!r:.80}"
    raise EncodeError(msg)


_NESTING = NestingLimit()
_json_encoder = msgspec.json.Encoder(enc_hook=_json_hook)
_json_decoder = msgspec.json.Decoder()
_msgpack_encoder = msgspec.msgpack.Encoder(enc_hook=_msgpack_hook)
_msgpack_decoder = msgspec.msgpack.Decoder()


def _bytes_to_json(value: Any) -> Any:
    # Only containers can hide bytes; scalars are returned as they are.
    kind = type(value)
    if kind is bytes or kind is bytearray or kind is memoryview:
        return {_BYTES_KEY: base64.b64encode(value).decode("ascii")}
    if kind is list or kind is tuple:
        return [_bytes_to_json(v) for v in value]
    if kind is dict:
        if len(value) == 1 and _BYTES_KEY in value:
            # A user's own {"$bytes": v} would read back as bytes: escape it as
            # {"$bytes": [v]}, which the decoder unwraps.
            return {_BYTES_KEY: [_bytes_to_json(value[_BYTES_KEY])]}
        return {k: _bytes_to_json(v) for k, v in value.items()}
    if kind is float and not math.isfinite(value):
        # msgspec would write null: refuse rather than change the value.
        msg = f"cannot encode {value!r} as JSON: JSON has no NaN or infinity"
        raise EncodeError(msg)
    return value


def _bytes_from_json(value: Any) -> Any:
    kind = type(value)
    if kind is list:
        return [_bytes_from_json(v) for v in value]
    if kind is dict:
        if len(value) == 1 and _BYTES_KEY in value:
            inner = value[_BYTES_KEY]
            if type(inner) is str:
                try:
                    return base64.b64decode(inner, validate=True)
                except binascii.Error as exc:
                    msg = f"invalid JSON: {_BYTES_KEY} holds invalid base64 ({exc})"
                    raise DecodeError(msg) from exc
            if type(inner) is list and len(inner) == 1:
                return {_BYTES_KEY: _bytes_from_json(inner[0])}
        return {k: _bytes_from_json(v) for k, v in value.items()}
    return value


def encode_json(value: Any) -> bytes:
    """Encode a value as JSON, keeping bytes as ``{"$bytes": base64}``.

    Raises:
        EncodeError: The value holds a Stream, a NaN or infinite float, or an
            unsupported type, or nests too deeply to encode.
    """
    try:
        return _json_encoder.encode(_bytes_to_json(value))
    except (TypeError, OverflowError) as exc:
        raise EncodeError(str(exc)) from exc
    except RecursionError:
        msg = "cannot encode this value as JSON: it is too deeply nested"
        raise EncodeError(msg) from None


def decode_json(data: bytes | str | Json) -> Any:
    """Decode a JSON document into plain values (bytes restored).

    Raises:
        DecodeError: The data is not valid JSON (or holds a ``$bytes`` value
            that is not base64, or nests too deeply to decode); the message
            says where.
    """
    raw = data.data if isinstance(data, Json) else data
    try:
        value = _json_decoder.decode(raw)
        # A cheap scan saves walking documents that cannot hold encoded bytes.
        marker = b'"$bytes"' if isinstance(raw, bytes | bytearray) else '"$bytes"'
        return _bytes_from_json(value) if marker in raw else value  # type: ignore[operator]
    except msgspec.DecodeError as exc:
        msg = f"invalid JSON: {exc}"
        raise DecodeError(msg) from exc
    except RecursionError:
        msg = "invalid JSON: too deeply nested to decode"
        raise DecodeError(msg) from None


def encode_msgpack(value: Any) -> bytes:
    """Encode a value as MessagePack.

    Raises:
        EncodeError: The value holds a Stream or an unsupported type, or nests
            too deeply to encode.
    """
    try:
        return _msgpack_encoder.encode(value)
    except (TypeError, OverflowError) as exc:
        raise EncodeError(str(exc)) from exc
    except RecursionError:
        msg = "cannot encode this value as MessagePack: it is too deeply nested"
        raise EncodeError(msg) from None


def decode_msgpack(data: bytes) -> Any:
    """Decode a MessagePack document into plain values.

    Raises:
        DecodeError: The data is not valid MessagePack.
    """
    try:
        return _msgpack_decoder.decode(data)
    except msgspec.DecodeError as exc:
        msg = f"invalid MessagePack: {exc}"
        raise DecodeError(msg) from exc
    except RecursionError:
        msg = "invalid MessagePack: too deeply nested to decode"
        raise DecodeError(msg) from None


def encode(value: Any, format: WireFormat = "json") -> bytes:
    """Encode a value in a wire format (``"json"`` or ``"msgpack"``)."""
    return encode_msgpack(value) if format == "msgpack" else encode_json(value)


def decode(data: bytes, format: WireFormat = "json") -> Any:
    """Decode a value from a wire format (``"json"`` or ``"msgpack"``)."""
    return decode_msgpack(data) if format == "msgpack" else decode_json(data)


# --- documents (workflow files, configs) -------------------------------------

DocumentFormat = Literal["json", "yaml", "toml"]

DOCUMENT_FORMATS: dict[str, DocumentFormat] = {
    ".json": "json",
    ".yaml": "yaml",
    ".yml": "yaml",
    ".toml": "toml",
}


def document_format(path: str | Path) -> DocumentFormat:
    """Return the document format for a file name, chosen by its extension.

    Raises:
        DecodeError: The extension is not one of .json, .yaml, .yml, .toml.
    """
    suffix = Path(path).suffix.lower()
    try:
        return DOCUMENT_FORMATS[suffix]
    except KeyError:
        known = ", ".join(DOCUMENT_FORMATS)
        msg = f"{path}: unknown file type {suffix or '(none)'!r}; use one of {known}"
        raise DecodeError(msg) from None


# YAML 1.2's floats: PyYAML follows YAML 1.1, which wants a dot and a signed
# exponent, so "1.0e12" or "1e3" would be read as strings.
_YAML12_FLOAT = re.compile(
    r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?$"
)


@functools.cache
def yaml_loader() -> Any:
    """The safe YAML loader documents are read with: libyaml's, YAML 1.2 floats."""
    import yaml  # as msgspec.yaml does: only when YAML is read

    base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    loader: Any = type("YamlLoader", (base,), {})
    # Resolvers are tried in order: YAML 1.1's ints and floats still come first.
    loader.add_implicit_resolver(
        "tag:yaml.org,2002:float", _YAML12_FLOAT, list("-+.0123456789")
    )
    return loader


@functools.cache
def _yaml_dumper() -> Any:
    import yaml

    base = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    dumper: Any = type("YamlDumper", (base,), {})
    # The same resolvers as the loader, so strings it would read as floats
    # ("1e3") are written quoted: documents round-trip.
    dumper.add_implicit_resolver(
        "tag:yaml.org,2002:float", _YAML12_FLOAT, list("-+.0123456789")
    )
    return dumper


def _encode_yaml(obj: Any) -> bytes:
    import datetime

    import yaml

    plain = msgspec.to_builtins(obj, builtin_types=(datetime.datetime, datetime.date))
    out: bytes = yaml.dump_all(
        [plain],
        encoding="utf-8",
        Dumper=_yaml_dumper(),
        allow_unicode=True,
        sort_keys=False,
    )
    return out


def _decode_yaml(data: bytes) -> Any:
    import yaml

    try:
        return yaml.load(data, yaml_loader())  # a safe loader
    except yaml.YAMLError as exc:
        raise msgspec.DecodeError(str(exc)) from None


def decode_document(data: bytes, format: DocumentFormat, *, name: str = "") -> Any:
    """Decode a JSON, YAML or TOML document into plain values.

    Documents nest at most `DEFAULT_MAX_DEPTH` levels of arrays/objects.
    YAML is read with YAML 1.2's floats (``1.0e12``, ``1e3``), which
    PyYAML alone would read as strings.

    Raises:
        DecodeError: The text is not a valid document, or nests too deeply;
            names ``name`` if given.
    """
    where = f"{name}: " if name else ""
    deep = f"{where}invalid {format.upper()}: {_NESTING.reason}"
    if format == "json" and _NESTING.json_exceeds(data):
        raise DecodeError(deep)
    try:
        if format == "yaml":
            value = _decode_yaml(data)
        elif format == "toml":
            value = msgspec.toml.decode(data)
        else:
            return _json_decoder.decode(data)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        # TOML is decoded as text first, so bad UTF-8 surfaces as UnicodeDecodeError.
        msg = f"{where}invalid {format.upper()}: {exc}"
        raise DecodeError(msg) from exc
    except RecursionError:
        raise DecodeError(deep) from None
    if _NESTING.value_exceeds(value):
        raise DecodeError(deep)
    return value


def encode_document(obj: Any, format: DocumentFormat) -> bytes:
    """Encode plain values or msgspec structs as a JSON, YAML or TOML document.

    Raises:
        EncodeError: The object cannot be written in that format (TOML has no
            null, for one).
    """
    try:
        if format == "yaml":
            return _encode_yaml(obj)
        if format == "toml":
            return msgspec.toml.encode(obj)
        return msgspec.json.format(msgspec.json.encode(obj), indent=2) + b"\n"
    except (TypeError, ValueError) as exc:
        msg = f"cannot write this document as {format.upper()}: {exc}"
        raise EncodeError(msg) from exc
