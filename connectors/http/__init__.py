"""HTTP connectors: ``http.source`` polls a URL, ``http.sink`` posts batches.

Both run on an `httpx.AsyncClient`. By default each node makes its own and
closes it at shutdown; to use another client (a proxy, auth, a test's
``httpx.MockTransport``), pass one to the node class, or register the specs
made by `http_nodes` with a client factory::

    transport = httpx.MockTransport(handler)
    registry.register_all(
        http_nodes(lambda: httpx.AsyncClient(transport=transport))
    )

Headers and timeouts from the config are sent with every request, whichever
client is used.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeAlias

import httpx
import msgspec

from flowstream import (
    DEFAULT_MAX_DEPTH,
    Backoff,
    NodeSpec,
    OutboundUrl,
    check_url,
    node,
)
from flowstream.errors import ConnectError, ConnectorError, NetworkDenied

from .._records import RecordDecoder, record_type

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from flowstream import NodeContext

__all__ = [
    "NODES",
    "ClientFactory",
    "HttpSink",
    "HttpSinkConfig",
    "HttpSource",
    "HttpSourceConfig",
    "http_nodes",
    "http_sink",
    "http_source",
]

ClientFactory: TypeAlias = Callable[[], httpx.AsyncClient]
"""Makes the client of one node; the node closes it at shutdown."""

MAX_BODY_IN_ERROR = 256
"""How many bytes of a refused response body an error message keeps."""


def _check_url(url: str) -> None:
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        msg = f"url {url!r} is not a valid URL: {exc}"
        raise ValueError(msg) from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        msg = f"url must be an absolute http:// or https:// URL, got {url!r}"
        raise ValueError(msg)


def _check_positive(name: str, value: float) -> None:
    # Written as "not >" so that NaN is refused too.
    if not (value > 0 and value < math.inf):
        msg = f"{name} must be a finite number > 0, got {value}"
        raise ValueError(msg)


class _Client:
    """The client of one node: injected (borrowed) or made here (owned)."""

    def __init__(self, client: httpx.AsyncClient | None) -> None:
        self._given = client
        self.client: httpx.AsyncClient | None = None
        self._owned = False

    def open(self, factory: ClientFactory) -> httpx.AsyncClient:
        if self._given is not None:
            self.client = self._given
        else:
            self.client = factory()
            self._owned = True
        return self.client

    async def aclose(self) -> None:
        client, self.client = self.client, None
        if client is not None and self._owned:
            self._owned = False
            await client.aclose()


# --- http.source -----------------------------------------------------------------


class HttpSourceConfig(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True
):
    """Config of ``http.source``.

    Attributes:
        url: The URL to ``GET``.
        interval_ms: Time between the starts of two polls.
        count: Polls answered (200 or 304) before the source ends; None
            polls until the run is stopped (stream mode).
        headers: Sent with every request.
        format: The body: ``json`` (one record, or an array of records),
            ``jsonl`` (a record per line), ``msgpack``, or ``raw`` (the body
            bytes are the record).
        schema: Field name -> type name (see `connectors._records`);
            records that break it go to the ``error`` port.
        timeout_s: Timeout of one request.
        max_failures: Failed polls in a row (network error, non-2xx) after
            which the node fails.
        max_body_bytes: A larger body goes to the ``error`` port.
        max_depth: Deepest nesting of arrays/objects in a body (or line); a deeper
            body (or line) goes to ``error`` as "too deeply nested" (the node goes on).
    """

    url: OutboundUrl
    interval_ms: float = 5000.0
    count: int | None = None
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    format: Literal["json", "jsonl", "msgpack", "raw"] = "json"
    schema: dict[str, str] | None = None
    timeout_s: float = 10.0
    max_failures: int = 5
    max_body_bytes: int = 16 << 20
    max_depth: int = DEFAULT_MAX_DEPTH

    def __post_init__(self) -> None:
        _check_url(self.url)
        _check_positive("interval_ms", self.interval_ms)
        _check_positive("timeout_s", self.timeout_s)
        if self.count is not None and self.count < 0:
            msg = f"count must be >= 0, got {self.count}"
            raise ValueError(msg)
        if self.max_failures < 1:
            msg = f"max_failures must be >= 1, got {self.max_failures}"
            raise ValueError(msg)
        if self.max_body_bytes < 1:
            msg = f"max_body_bytes must be >= 1, got {self.max_body_bytes}"
            raise ValueError(msg)
        if self.max_depth < 1:
            msg = f"max_depth must be >= 1, got {self.max_depth}"
            raise ValueError(msg)
        if self.schema is not None:
            if self.format == "raw":
                msg = "schema does not apply to the raw format"
                raise ValueError(msg)
            record_type(self.schema)  # names an unknown type name


class _PollFailed(Exception):
    """One poll failed; the message says how (counted towards max_failures)."""


class HttpSource:
    """Poll a URL on an interval and emit the records of each new response.

    Each poll is a conditional ``GET``: the ``ETag`` and ``Last-Modified``
    of the last response are sent back as ``If-None-Match`` and
    ``If-Modified-Since``, so an unchanged resource answers 304 and nothing
    is emitted. A 2xx body is decoded by ``format``; a body or record that
    cannot be decoded goes to the ``error`` port with the reason. A failed
    poll (network error, any other status) is logged and published as a
    ``poll_failed`` event; after ``max_failures`` in a row the node fails.

    Polls start every ``interval_ms`` from the first (which is immediate);
    a slow poll delays the next rather than piling them up. Stream-safe
    with ``count: null``; a graceful stop cancels the wait or the request in
    flight. State: ``etag``, ``last_modified``, ``polls``. Delivery: what
    a response held is emitted once per change of the resource.

    Example:
        ``{id: prices, type: http.source, config: {url:
        "https://api.example.com/prices", interval_ms: 60000}}`` emits the
        price records whenever they change, checking every minute.
    """

    def __init__(
        self, config: HttpSourceConfig, *, client: httpx.AsyncClient | None = None
    ) -> None:
        self.config = config
        self._client = _Client(client)
        encoding: Any = "json" if config.format == "jsonl" else config.format
        self._decoder = RecordDecoder(
            encoding,
            config.schema,
            max_frame_bytes=config.max_body_bytes,
            max_depth=config.max_depth,
        )

    def _new_client(self) -> httpx.AsyncClient:
        """Make the client when none was given (`http_nodes` overrides this)."""
        return httpx.AsyncClient()

    async def __aenter__(self) -> HttpSource:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def initialize(self, ctx: NodeContext) -> None:
        """Make (or take) the client."""
        self._client.open(self._new_client)
        if "polls" not in ctx.state:
            ctx.state["polls"] = 0

    async def shutdown(self) -> None:
        """Close the client if this node made it."""
        await self.aclose()

    async def aclose(self) -> None:
        """Close the client if this node made it; idempotent."""
        await self._client.aclose()

    async def execute(self, *, ctx: NodeContext) -> AsyncIterator[list[Any]]:
        """Poll until ``count`` polls were answered (or forever)."""
        cfg = self.config
        loop = asyncio.get_running_loop()
        interval = cfg.interval_ms / 1000.0
        answered = failures = 0
        next_at = loop.time()
        while cfg.count is None or answered < cfg.count:
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            next_at = max(next_at + interval, loop.time())
            try:
                records = await self._poll(ctx)
            except _PollFailed as exc:
                failures += 1
                ctx.logger.warning("poll %d of %s failed: %s", failures, cfg.url, exc)
                ctx.event(
                    "poll_failed",
                    {"url": cfg.url, "error": str(exc), "failures": failures},
                )
                if failures >= cfg.max_failures:
                    msg = f"{failures} polls of {cfg.url} in a row failed; last: {exc}"
                    raise ConnectError(msg) from None
                continue
            failures = 0
            answered += 1
            ctx.state["polls"] += 1
            if records is not None:
                yield records

    async def _poll(self, ctx: NodeContext) -> list[Any] | None:
        """One conditional GET: the records, or None when nothing changed."""
        cfg = self.config
        client = self._client.client
        assert client is not None, "initialize was not called"
        headers = dict(cfg.headers)
        etag, modified = ctx.state.get("etag"), ctx.state.get("last_modified")
        if etag:
            headers["If-None-Match"] = etag
        if modified:
            headers["If-Modified-Since"] = modified
        check_url(cfg.url, what=f"http.source {ctx.node_id}")
        try:
            async with client.stream(
                "GET", cfg.url, headers=headers, timeout=cfg.timeout_s
            ) as response:
                if response.status_code == 304:
                    return None
                if not response.is_success:
                    await response.aread()
                    raise _PollFailed(_describe(response))
                body = await _read_capped(response, cfg.max_body_bytes)
        except httpx.HTTPError as exc:
            denied = NetworkDenied.found_in(exc)
            if denied is not None:  # the policy will not change: no retry
                raise denied from None
            msg = f"{type(exc).__name__}: {exc}"
            raise _PollFailed(msg) from None
        if response.headers.get("etag"):
            ctx.state["etag"] = response.headers["etag"]
        if response.headers.get("last-modified"):
            ctx.state["last_modified"] = response.headers["last-modified"]
        if body is None:
            limit = cfg.max_body_bytes
            self._reject(ctx, response, f"body exceeds max_body_bytes={limit}", b"")
            return []
        return self._decode(ctx, response, body)

    def _decode(
        self, ctx: NodeContext, response: httpx.Response, body: bytes
    ) -> list[Any]:
        if self.config.format != "jsonl":
            records, bad = self._decoder.decode(body)
            for b in bad:
                self._reject(ctx, response, b.reason, b.raw)
            return records
        records = []
        for number, line in enumerate(body.split(b"\n"), 1):
            if not line.strip():
                continue
            good, bad = self._decoder.decode(line)
            records.extend(good)
            for b in bad:
                self._reject(ctx, response, f"line {number}: {b.reason}", b.raw)
        return records

    def _reject(
        self, ctx: NodeContext, response: httpx.Response, reason: str, raw: bytes
    ) -> None:
        item = {"url": self.config.url, "status": response.status_code, "raw": raw}
        ctx.dead_letter(item, reason)


async def _read_capped(response: httpx.Response, limit: int) -> bytes | None:
    """The body, or None if it is longer than ``limit`` (not read further)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _describe(response: httpx.Response) -> str:
    body = response.content[:MAX_BODY_IN_ERROR].decode("utf-8", "replace").strip()
    reason = f"HTTP {response.status_code} {response.reason_phrase}".rstrip()
    return f"{reason}: {body}" if body else reason


# --- http.sink -------------------------------------------------------------------


class HttpSinkConfig(Backoff, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Config of ``http.sink``.

    Attributes:
        url: Where batches are sent.
        method: ``POST`` or ``PUT``.
        headers: Sent with every request.
        format: The body: ``json`` (an array of the batch's records),
            ``jsonl`` (a record per line) or ``msgpack`` (an array).
        max_batch: Most records per request; larger batches are split.
        timeout_s: Timeout of one request.
        max_attempts: Attempts per request (network errors, 408, 425, 429
            and 5xx are retried).
        delay_ms: Wait after the first failed attempt; it grows by
            ``backoff_multiplier`` after each, up to ``max_delay_ms`` (the
            fields of `flowstream.Backoff`). A ``Retry-After`` header asking
            for longer is honoured up to that cap.
        backoff_ms: The old name of ``delay_ms``, still read.
        max_backoff_ms: The old name of ``max_delay_ms``, still read.
    """

    url: OutboundUrl
    method: Literal["POST", "PUT"] = "POST"
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    format: Literal["json", "jsonl", "msgpack"] = "json"
    max_batch: int = 1000
    timeout_s: float = 30.0
    max_attempts: int = 5
    delay_ms: float = 200.0
    backoff_ms: float | None = None
    max_backoff_ms: float | None = None

    old_names: ClassVar[dict[str, str]] = {
        "backoff_ms": "delay_ms",
        "max_backoff_ms": "max_delay_ms",
    }

    def __post_init__(self) -> None:
        _check_url(self.url)
        _check_positive("timeout_s", self.timeout_s)
        if self.max_batch < 1:
            msg = f"max_batch must be >= 1, got {self.max_batch}"
            raise ValueError(msg)
        if self.max_attempts < 1:
            msg = f"max_attempts must be >= 1, got {self.max_attempts}"
            raise ValueError(msg)
        super().__post_init__()


RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
"""Statuses worth another attempt (the server may accept the same batch later)."""

CONTENT_TYPES = {
    "json": "application/json",
    "jsonl": "application/x-ndjson",
    "msgpack": "application/msgpack",
}

_json = msgspec.json.Encoder()
_msgpack = msgspec.msgpack.Encoder()


def _retry_after_s(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


class HttpSink:
    """Send batches of records to a URL, retrying failures with backoff.

    Each batch (split at ``max_batch``) becomes one request whose body is
    the records as a JSON array, JSON Lines or a MessagePack array. Network
    errors and the statuses 408, 425, 429 and 5xx are retried up to
    ``max_attempts`` times, waiting ``delay_ms`` and then longer (or what
    ``Retry-After`` asks, up to ``max_delay_ms``); a ``retry`` event
    reports each. When attempts run out the node fails (`ConnectError`);
    another status (a 4xx: the server refuses the data) fails it at once
    (`ConnectorError`). Either way the node's error handling decides: with
    ``continue_on_error`` the batch goes to the ``error`` port and sending
    goes on. A record with no JSON/MessagePack form goes to the ``error``
    port alone.

    Stream-safe. Delivery: at-least-once: a request whose answer was lost
    is sent again, so the receiver may see a batch twice and should
    deduplicate if that matters. State: ``requests``, ``records`` sent.

    Example:
        ``{id: ship, type: http.sink, config: {url:
        "https://ingest.example.com/events", max_batch: 500}}`` posts the
        events in JSON arrays of at most 500.
    """

    def __init__(
        self, config: HttpSinkConfig, *, client: httpx.AsyncClient | None = None
    ) -> None:
        self.config = config
        self._client = _Client(client)

    def _new_client(self) -> httpx.AsyncClient:
        """Make the client when none was given (`http_nodes` overrides this)."""
        return httpx.AsyncClient()

    async def __aenter__(self) -> HttpSink:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def initialize(self, ctx: NodeContext) -> None:
        """Make (or take) the client."""
        self._client.open(self._new_client)
        for name in ("requests", "records"):
            if name not in ctx.state:
                ctx.state[name] = 0

    async def shutdown(self) -> None:
        """Close the client if this node made it."""
        await self.aclose()

    async def aclose(self) -> None:
        """Close the client if this node made it; idempotent."""
        await self._client.aclose()

    async def execute(
        self, inp: AsyncIterator[list[Any]], *, ctx: NodeContext
    ) -> AsyncIterator[list[Any]]:
        """Send each batch, in requests of at most ``max_batch`` records."""
        size = self.config.max_batch
        async for batch in inp:
            rejected = False
            for start in range(0, len(batch), size):
                part = batch[start : start + size]
                body, count, refused = self._encode(part)
                for item, reason in refused:
                    ctx.dead_letter(item, reason)
                    rejected = True
                if count:
                    await self._send(body, count, ctx)
            if rejected:
                yield []  # lets the runtime hand the dead letters on now

    def _encode(self, batch: list[Any]) -> tuple[bytes, int, list[tuple[Any, str]]]:
        fmt = self.config.format
        try:
            return self._encode_all(batch), len(batch), []
        except (TypeError, msgspec.EncodeError):
            pass
        good: list[Any] = []
        refused: list[tuple[Any, str]] = []
        for item in batch:
            try:
                self._encode_all([item])
            except (TypeError, msgspec.EncodeError) as exc:
                refused.append((item, f"cannot encode as {fmt}: {exc}"))
            else:
                good.append(item)
        return (self._encode_all(good) if good else b""), len(good), refused

    def _encode_all(self, batch: list[Any]) -> bytes:
        fmt = self.config.format
        if fmt == "json":
            return _json.encode(batch)
        if fmt == "jsonl":
            return _json.encode_lines(batch)
        return _msgpack.encode(batch)

    async def _send(self, body: bytes, count: int, ctx: NodeContext) -> None:
        cfg = self.config
        client = self._client.client
        assert client is not None, "initialize was not called"
        headers = {"Content-Type": CONTENT_TYPES[cfg.format], **cfg.headers}
        check_url(cfg.url, what=f"http.sink {ctx.node_id}")
        attempt = 1
        while True:
            retry_after: float | None = None
            try:
                response = await client.request(
                    cfg.method,
                    cfg.url,
                    content=body,
                    headers=headers,
                    timeout=cfg.timeout_s,
                )
            except httpx.TransportError as exc:
                denied = NetworkDenied.found_in(exc)
                if denied is not None:  # the policy will not change: no retry
                    raise denied from None
                problem = f"{type(exc).__name__}: {exc}"
                failure: type[ConnectorError] = ConnectError
            else:
                if response.is_success:
                    ctx.state["requests"] += 1
                    ctx.state["records"] += count
                    return
                problem = _describe(response)
                if response.status_code not in RETRY_STATUS:
                    msg = f"{cfg.method} {cfg.url} was refused: {problem}"
                    raise ConnectorError(msg)
                failure = ConnectorError
                retry_after = _retry_after_s(response)
            if attempt >= cfg.max_attempts:
                msg = f"{cfg.method} {cfg.url} failed {attempt} times; last: {problem}"
                raise failure(msg)
            delay = cfg.delay_s(attempt)
            if retry_after is not None:
                delay = min(max(delay, retry_after), cfg.max_delay_ms / 1000.0)
            ctx.logger.warning(
                "attempt %d of %s %s failed (%s); again in %.3fs",
                attempt,
                cfg.method,
                cfg.url,
                problem,
                delay,
            )
            ctx.event(
                "retry",
                {
                    "url": cfg.url,
                    "attempt": attempt,
                    "error": problem,
                    "delay_s": delay,
                },
            )
            await asyncio.sleep(delay)
            attempt += 1


# --- specs -------------------------------------------------------------------------


def _source_spec(cls: type[HttpSource]) -> NodeSpec:
    return node("http.source", config=HttpSourceConfig, batched=True)(cls)


def _sink_spec(cls: type[HttpSink]) -> NodeSpec:
    return node("http.sink", config=HttpSinkConfig, batched=True)(cls)


http_source = _source_spec(HttpSource)
http_sink = _sink_spec(HttpSink)


def http_nodes(client_factory: ClientFactory) -> tuple[NodeSpec, NodeSpec]:
    """``http.source`` and ``http.sink`` specs whose nodes use your clients.

    Each node calls ``client_factory()`` once at initialize and closes the
    client at shutdown.

    Args:
        client_factory: Makes one `httpx.AsyncClient` (for instance with
            ``transport=httpx.MockTransport(handler)`` in tests).

    Returns:
        The two specs, to register in place of `http_source`/`http_sink`.
    """

    class FactorySource(HttpSource):
        def _new_client(self) -> httpx.AsyncClient:
            return client_factory()

    class FactorySink(HttpSink):
        def _new_client(self) -> httpx.AsyncClient:
            return client_factory()

    return _source_spec(FactorySource), _sink_spec(FactorySink)


NODES: tuple[NodeSpec, ...] = (http_source, http_sink)
"""This family's node types (its ``flowstream.nodes`` entry point)."""
