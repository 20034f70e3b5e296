"""What ``http.source`` and ``http.sink`` share: the client and the checks.

`_Client` is a node's `httpx.AsyncClient`, injected (borrowed) or made by the
node (owned, closed at shutdown); the config checks and the reading of
response bodies (capped, and described in errors) are both nodes'.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TypeAlias

import httpx

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
