"""The ``http.source`` node: polls a URL and hands on the records it returns."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Literal

import httpx
import msgspec

from flowstream import (
    DEFAULT_MAX_DEPTH,
    OutboundUrl,
    check_url,
)
from flowstream.errors import ConnectError, NetworkDenied

from .._records import RecordDecoder, record_type
from ._common import _check_positive, _check_url, _Client, _describe, _read_capped

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from flowstream import NodeContext


__all__ = ["HttpSource", "HttpSourceConfig"]


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
