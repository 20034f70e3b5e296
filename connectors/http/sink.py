"""The ``http.sink`` node: sends batches of records, retrying with `Backoff`."""

from __future__ import annotations

import asyncio
import email.utils
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import httpx
import msgspec

from flowstream import (
    Backoff,
    OutboundUrl,
    check_url,
)
from flowstream.errors import ConnectError, ConnectorError, NetworkDenied

from ._common import _check_positive, _check_url, _Client, _describe

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from flowstream import NodeContext


__all__ = ["CONTENT_TYPES", "RETRY_STATUS", "HttpSink", "HttpSinkConfig"]


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
