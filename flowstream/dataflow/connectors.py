"""Sources and sinks as typed values: what `Dataflow.source` and `DataStream.sink` take.

Each function names one node type and its config, and runs nothing::

    flow.source(range_source(10))             # DataStream[int]
    flow.source(file_source("in.jsonl"))       # DataStream[Any]: JSON records
    stream.sink(sqlite_sink("out.db", table="t"))

Connector sources emit decoded JSON (``Any``); give `Dataflow.source` a
``schema`` (a `msgspec.Struct`) to get typed items, items that do not fit going
to the error port. Settings beyond the named parameters are passed on as the
node's config (`flowstream nodes <type>` lists them).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

__all__ = [
    "Sink",
    "Source",
    "collect",
    "file_sink",
    "file_source",
    "http_sink",
    "http_source",
    "kafka_sink",
    "kafka_source",
    "log_sink",
    "nats_sink",
    "nats_source",
    "null_sink",
    "range_source",
    "redis_sink",
    "redis_source",
    "sqlite_sink",
    "sqlite_source",
    "stdio_sink",
    "stdio_source",
    "timer_source",
    "values_source",
    "ws_sink",
    "ws_source",
]

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)
T_contra = TypeVar("T_contra", contravariant=True)
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Source(Generic[T_co]):
    """A source node to add with `Dataflow.source`; its items are ``T_co``.

    Attributes:
        type_id: The node type.
        config: Its config.
        name: The node id to use (None: one is made from the type).
    """

    type_id: str
    config: dict[str, Any] = field(default_factory=dict)
    name: str | None = None


@dataclass(frozen=True)
class Sink(Generic[T_contra]):
    """A sink node to add with `DataStream.sink`; it takes items of ``T_contra``."""

    type_id: str
    config: dict[str, Any] = field(default_factory=dict)
    name: str | None = None


def _builds(type_id: str) -> Callable[[F], F]:
    """Mark a function as the typed way to add ``type_id`` (checked by a test)."""

    def mark(fn: F) -> F:
        fn.__node_type__ = type_id  # type: ignore[attr-defined]
        return fn

    return mark


# --- sources ------------------------------------------------------------------


@_builds("source.range")
def range_source(stop: int, *, start: int = 0, step: int = 1) -> Source[int]:
    """The integers ``range(start, stop, step)`` (``source.range``)."""
    return Source("source.range", {"stop": stop, "start": start, "step": step})


@_builds("source.values")
def values_source(values: Iterable[T]) -> Source[T]:
    """The given values, in order (``source.values``; they must be encodable)."""
    return Source("source.values", {"values": list(values)})


@_builds("source.timer")
def timer_source(
    interval_ms: float = 1000.0, *, count: int | None = None
) -> Source[int]:
    """A tick every ``interval_ms``, ``count`` times (None: for ever)."""
    return Source("source.timer", {"interval_ms": interval_ms, "count": count})


@_builds("file.source")
def file_source(path: str, **config: Any) -> Source[Any]:
    """Records of a JSONL or CSV file; ``follow=True`` tails it (``file.source``)."""
    return Source("file.source", {"path": path, **config})


@_builds("http.source")
def http_source(url: str, **config: Any) -> Source[Any]:
    """Poll a URL every ``interval_ms`` (``http.source``)."""
    return Source("http.source", {"url": url, **config})


@_builds("ws.source")
def ws_source(
    port: int = 0, *, mode: str = "server", host: str = "127.0.0.1", **config: Any
) -> Source[Any]:
    """WebSocket frames, as a server on ``host:port`` or a client (``ws.source``)."""
    return Source("ws.source", {"mode": mode, "host": host, "port": port, **config})


@_builds("kafka.source")
def kafka_source(topics: Sequence[str], **config: Any) -> Source[Any]:
    """Records of Kafka topics (``kafka.source``)."""
    return Source("kafka.source", {"topics": list(topics), **config})


@_builds("nats.source")
def nats_source(stream: str, **config: Any) -> Source[Any]:
    """Messages of a NATS JetStream stream (``nats.source``)."""
    return Source("nats.source", {"stream": stream, **config})


@_builds("redis.source")
def redis_source(stream: str, **config: Any) -> Source[Any]:
    """Entries of a Redis stream (``redis.source``)."""
    return Source("redis.source", {"stream": stream, **config})


@_builds("sqlite.source")
def sqlite_source(path: str, query: str, **config: Any) -> Source[Any]:
    """Rows of a SQLite query, as dicts (``sqlite.source``)."""
    return Source("sqlite.source", {"path": path, "query": query, **config})


@_builds("stdio.source")
def stdio_source(**config: Any) -> Source[Any]:
    """JSON lines read from standard input (``stdio.source``)."""
    return Source("stdio.source", dict(config))


# --- sinks ------------------------------------------------------------------------


@_builds("sink.collect")
def collect() -> Sink[Any]:
    """Keep every item in the run's result (``sink.collect``).

    `DataStream.collect` does the same and returns a handle to read them.
    """
    return Sink("sink.collect")


@_builds("sink.null")
def null_sink() -> Sink[Any]:
    """Drop every item (``sink.null``)."""
    return Sink("sink.null")


@_builds("file.sink")
def file_sink(path: str, **config: Any) -> Sink[Any]:
    """Append items to a JSONL or CSV file (``file.sink``)."""
    return Sink("file.sink", {"path": path, **config})


@_builds("http.sink")
def http_sink(url: str, **config: Any) -> Sink[Any]:
    """POST items in batches to a URL (``http.sink``)."""
    return Sink("http.sink", {"url": url, **config})


@_builds("ws.sink")
def ws_sink(
    port: int = 0, *, mode: str = "server", host: str = "127.0.0.1", **config: Any
) -> Sink[Any]:
    """Send items to WebSocket subscribers or a server (``ws.sink``)."""
    return Sink("ws.sink", {"mode": mode, "host": host, "port": port, **config})


@_builds("kafka.sink")
def kafka_sink(topic: str, **config: Any) -> Sink[Any]:
    """Produce items to a Kafka topic (``kafka.sink``)."""
    return Sink("kafka.sink", {"topic": topic, **config})


@_builds("nats.sink")
def nats_sink(subject: str, **config: Any) -> Sink[Any]:
    """Publish items on a NATS subject (``nats.sink``)."""
    return Sink("nats.sink", {"subject": subject, **config})


@_builds("redis.sink")
def redis_sink(**config: Any) -> Sink[Any]:
    """Write items to Redis: a stream, hashes or keys (``redis.sink``)."""
    return Sink("redis.sink", dict(config))


@_builds("sqlite.sink")
def sqlite_sink(
    path: str, *, table: str, key: str | Sequence[str] | None = None, **config: Any
) -> Sink[Any]:
    """Insert (or upsert on ``key``) items as rows of a table (``sqlite.sink``)."""
    keys = key if key is None or isinstance(key, str) else list(key)
    return Sink("sqlite.sink", {"path": path, "table": table, "key": keys, **config})


@_builds("stdio.sink")
def stdio_sink(stream: str = "stdout") -> Sink[Any]:
    """Write items as JSON lines to standard output or error (``stdio.sink``)."""
    return Sink("stdio.sink", {"stream": stream})


@_builds("debug.log")
def log_sink(
    message: str = "item", *, level: str = "info", every: int = 1
) -> Sink[Any]:
    """Log items (``debug.log``); `DataStream.log` logs and passes them on."""
    return Sink("debug.log", {"message": message, "level": level, "every": every})
