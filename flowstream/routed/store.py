"""`SharedStore`: the typed key/value space the steps of one run share.

Steps talk to each other through the store::

    await ctx.store.set("user_id", user.id)
    user_id = await ctx.store.get("user_id", type=str)

Values are encoded with msgspec as JSON when set (so the backend only ever
holds bytes) and decoded when read: with ``type=`` the value is decoded *and
validated* as that type (a `msgspec.Struct`, ``list[int]``, ``datetime``,
``bytes``...); without it, it comes back as plain JSON values (a struct as a
dict, bytes as base64 text, a datetime as ISO text).

A store is a view of one *namespace* of a `Storage` backend. Each run of a
flow gets its own namespace by default (its run id), so concurrent runs over
the same backend never see each other's keys; give a fixed namespace to keep
state across runs (and, with a file or SQLite backend, across processes).
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING, Any, TypeVar, final, overload

import msgspec

from ..errors import DecodeError, EncodeError
from .storage import MemoryStorage

if TYPE_CHECKING:
    from collections.abc import Mapping

    from .storage import Storage

__all__ = ["SharedStore"]

T = TypeVar("T")
D = TypeVar("D")


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


_MISSING: Any = _Missing()


def _refuse(obj: Any) -> Any:
    msg = f"cannot store a value of type {type(obj).__qualname__}: {obj!r:.80}"
    raise EncodeError(msg)


_encoder = msgspec.json.Encoder(enc_hook=_refuse)
_plain = msgspec.json.Decoder()


@functools.lru_cache(maxsize=256)
def _cached_decoder(tp: Any) -> msgspec.json.Decoder[Any]:
    return msgspec.json.Decoder(tp)


def _decoder(tp: Any) -> msgspec.json.Decoder[Any]:
    try:
        return _cached_decoder(tp)
    except TypeError:  # an unhashable type form: build it each time
        return msgspec.json.Decoder(tp)


def _check_finite(value: Any) -> None:
    # msgspec writes NaN and infinity as null: refuse rather than change them.
    kind = type(value)
    if kind is float:
        if not math.isfinite(value):
            msg = f"cannot store {value!r}: JSON has no NaN or infinity"
            raise EncodeError(msg)
    elif kind is list or kind is tuple:
        for v in value:
            _check_finite(v)
    elif kind is dict:
        for v in value.values():
            _check_finite(v)


def encode_value(value: Any) -> bytes:
    """Encode a value as the store keeps it (JSON).

    Raises:
        EncodeError: The value has no JSON form, or holds NaN or infinity.
    """
    _check_finite(value)
    try:
        return _encoder.encode(value)
    except (TypeError, OverflowError) as exc:
        raise EncodeError(str(exc)) from exc


@final
class SharedStore:
    """A typed view of one namespace of a `Storage` backend.

    Args:
        storage: The backend; a new `MemoryStorage` if None.
        namespace: Which namespace this store reads and writes.

    Attributes:
        storage: The backend.
        namespace: The namespace.
    """

    __slots__ = ("namespace", "storage")

    def __init__(
        self, storage: Storage | None = None, namespace: str = "default"
    ) -> None:
        self.storage: Storage = storage if storage is not None else MemoryStorage()
        self.namespace = namespace

    @overload
    async def get(self, key: str) -> Any: ...
    @overload
    async def get(self, key: str, *, type: type[T]) -> T: ...
    @overload
    async def get(self, key: str, *, type: type[T], default: D) -> T | D: ...
    @overload
    async def get(self, key: str, *, default: Any) -> Any: ...

    async def get(self, key: str, *, type: Any = Any, default: Any = _MISSING) -> Any:
        """Return the value under ``key``, decoded (and validated) as ``type``.

        Args:
            key: The key.
            type: What to decode the value as; plain JSON values if omitted.
            default: Returned when the key is absent.

        Raises:
            KeyError: The key is absent and no default was given.
            DecodeError: The stored value does not fit ``type``; the message
                names the key and msgspec's path inside the value.
        """
        data = await self.storage.get(self.namespace, key)
        if data is None:
            if default is _MISSING:
                msg = f"no key {key!r} in store namespace {self.namespace!r}"
                raise KeyError(msg)
            return default
        decoder = _plain if type is Any else _decoder(type)
        try:
            return decoder.decode(data)
        except msgspec.DecodeError as exc:
            name = getattr(type, "__name__", None) or str(type)
            msg = f"store key {key!r} is not a valid {name}: {exc}"
            raise DecodeError(msg) from exc

    async def set(self, key: str, value: Any) -> None:
        """Store ``value`` under ``key``, replacing what was there.

        Raises:
            EncodeError: The value has no JSON form (a set, an arbitrary
                object, NaN).
        """
        await self.storage.set(self.namespace, key, encode_value(value))

    async def update(self, values: Mapping[str, Any]) -> None:
        """Set several keys (each write is atomic; the batch is not).

        Every value is encoded before the first write, so a value that cannot
        be stored changes nothing.

        Raises:
            EncodeError: A value has no JSON form.
        """
        encoded = {k: encode_value(v) for k, v in values.items()}
        for key, data in encoded.items():
            await self.storage.set(self.namespace, key, data)

    async def delete(self, key: str) -> bool:
        """Remove ``key``; return whether it was there."""
        return await self.storage.delete(self.namespace, key)

    async def has(self, key: str) -> bool:
        """Return whether ``key`` is set."""
        return await self.storage.get(self.namespace, key) is not None

    async def keys(self) -> list[str]:
        """Return every key of this namespace, sorted."""
        return sorted(await self.storage.keys(self.namespace))

    async def snapshot(self) -> dict[str, Any]:
        """Return every key with its value as plain JSON values.

        This is what CEL expressions see as ``store``.
        """
        found: dict[str, Any] = {}
        for key in await self.keys():
            data = await self.storage.get(self.namespace, key)
            if data is not None:  # deleted meanwhile
                found[key] = _plain.decode(data)
        return found

    async def clear(self) -> None:
        """Remove every key of this namespace."""
        for key in await self.storage.keys(self.namespace):
            await self.storage.delete(self.namespace, key)

    def __repr__(self) -> str:
        return f"<SharedStore namespace={self.namespace!r} storage={self.storage!r}>"
