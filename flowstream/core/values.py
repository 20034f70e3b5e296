"""The values that flow through a graph.

Values are plain Python objects (None, bool, int, float, str, bytes, list, dict)
so that the hot path never wraps items. Two marker types complete the set:

* `Json`: an undecoded JSON document (raw bytes) that passes through the graph
  and the codec without being decoded and re-encoded, like msgspec's ``Raw``.
* `Stream`: an async-iterable value. A node may emit one on a port and the
  consumer reads it incrementally, so a large or unbounded result is never
  materialised. A Stream is read once; it has no wire form.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Generic, TypeAlias, TypeVar, final

if TYPE_CHECKING:
    from collections.abc import AsyncIterable, AsyncIterator

__all__ = ["Json", "Stream", "Value"]

T_co = TypeVar("T_co", covariant=True)

Value: TypeAlias = Any
"""Any plain value: None, bool, int, float, str, bytes, list, dict, Json or Stream."""


@final
class Json:
    """An undecoded JSON document, kept as bytes.

    Encoding a `Json` as JSON splices its bytes in unchanged; encoding it as
    MessagePack decodes it once. Use `flowstream.core.codec.decode_json` to
    read it.

    Args:
        data: The JSON text, as bytes or str.
    """

    __slots__ = ("data",)

    def __init__(self, data: bytes | str) -> None:
        self.data = data.encode() if isinstance(data, str) else bytes(data)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Json) and other.data == self.data

    def __hash__(self) -> int:
        return hash(self.data)

    def __repr__(self) -> str:
        text = self.data[:60].decode(errors="replace")
        more = "..." if len(self.data) > 60 else ""
        return f"Json({text!r}{more})"


@final
class Stream(Generic[T_co]):
    """An async-iterable value, read incrementally by whoever receives it.

    A Stream may be iterated once: a second iteration raises `RuntimeError`
    naming the stream, because the items are gone. Call `aclose` (or iterate to
    the end) to release whatever produces the items.

    Args:
        source: The async iterable that yields the items.
        name: A label for error messages and reprs.
    """

    __slots__ = ("_consumed", "_source", "name")

    def __init__(self, source: AsyncIterable[T_co], name: str = "stream") -> None:
        self._source = source
        self._consumed = False
        self.name = name

    def __aiter__(self) -> AsyncIterator[T_co]:
        if self._consumed:
            msg = f"Stream {self.name!r} was already read; a Stream can be read once"
            raise RuntimeError(msg)
        self._consumed = True
        return aiter(self._source)

    async def aclose(self) -> None:
        """Close the underlying source if it is an async generator."""
        self._consumed = True
        close = getattr(self._source, "aclose", None)
        if close is not None:
            await close()

    async def collect(self) -> list[T_co]:
        """Read every item into a list (only for streams known to be finite)."""
        return [item async for item in self]

    def __repr__(self) -> str:
        state = "consumed" if self._consumed else "unread"
        return f"Stream({self.name!r}, {state})"
