"""HTTP requests as a node: the original engine's ``http.request``, over httpx.

One `httpx.AsyncClient` per node per run: created by ``initialize`` and
closed by ``shutdown``, which the runtime calls whatever happens to the run
(completed, failed or cancelled), so connections never outlive it.
"""

from __future__ import annotations

import asyncio
import math
from typing import TYPE_CHECKING, Any, Literal

import msgspec

from ..core.node import node
from ..core.resources import OutboundUrl
from ..errors import ConnectError, ConnectionLost, DecodeError, NetworkDenied
from ..runtime.netpolicy import check_url

if TYPE_CHECKING:
    import httpx

    from ..core.node import NodeContext

__all__ = ["HttpRequest", "HttpRequestNode", "http_request"]

Method = Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
Param = str | int | float | bool

_json_encoder = msgspec.json.Encoder()
_json_decoder = msgspec.json.Decoder()


class HttpRequest(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True
):
    """Config of ``http.request``.

    Attributes:
        method: The HTTP method, in capitals.
        url: The URL (``http://`` or ``https://``); an item may give its own.
        headers: Request headers sent with every request.
        params: Query parameters, added to the URL's own query (a parameter of
            the same name in the URL is replaced).
        json: A JSON request body (null means none); exclusive with ``body``.
        body: A text request body; exclusive with ``json``.
        timeout_s: Seconds to wait for the connection and for each read.
        raise_for_status: A response with status >= 400 is a failure (so
            the node's retry policy and error handling apply); if false, it
            is emitted like any other.
        follow_redirects: Follow 3xx redirects.
    """

    method: Method = "GET"
    url: OutboundUrl | None = None
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    params: dict[str, Param] = msgspec.field(default_factory=dict)
    json: Any = None
    body: str | None = None
    timeout_s: float = 10.0
    raise_for_status: bool = True
    follow_redirects: bool = False

    def __post_init__(self) -> None:
        if self.url is not None:
            _check_url(self.url, "url")
        if self.json is not None and self.body is not None:
            msg = "set json or body, not both"
            raise ValueError(msg)
        # Written as "not ..." so that NaN is rejected too.
        if not (0 < self.timeout_s < math.inf):
            msg = f"timeout_s must be a finite number > 0, got {self.timeout_s}"
            raise ValueError(msg)


def _check_url(url: Any, where: str) -> str:
    if type(url) is not str:
        msg = f"{where} must be a string, got {type(url).__name__}"
        raise TypeError(msg)
    if not url.startswith(("http://", "https://")):
        msg = f"{where} must start with http:// or https://, got {url!r:.100}"
        raise ValueError(msg)
    return url


def _payload(value: Any, *, is_json: bool) -> bytes:
    if is_json:
        return _json_encoder.encode(value)
    if type(value) is str:
        return value.encode()
    if type(value) is bytes:
        return value
    msg = f"an item's body must be str or bytes, got {type(value).__name__}"
    raise TypeError(msg)


class HttpRequestNode:
    """Send one HTTP request per item; emit ``{status, headers, body}``.

    The request is the config, overridden by the item:

    * a str item is the URL;
    * a dict item may hold ``url`` (replaces the URL), ``params`` (a mapping
      merged over the config's, the item's values win), and ``json`` or
      ``body`` (not both: the item's payload replaces the config's; ``json:
      null`` sends JSON ``null``, ``body: null`` sends no body; a body is
      str or bytes); its other keys (``method``, ``headers``...) are ignored;
    * any other item (null, a number, a timer tick) sends the config as is.

    The output has the status code, the headers (lower-case names; repeated
    ones joined by ``", "``) and the body: decoded with msgspec when the
    response's content type is JSON (``application/json`` or ``+json``; an
    empty body is null), else the text.

    Failures raise, so that the node's retry policy and error handling apply
    (retry, stop the run, or send the item to ``error``): a status >= 400
    (``httpx.HTTPStatusError``, unless ``raise_for_status: false``), no
    connection (`flowstream.errors.ConnectError`), no answer within
    ``timeout_s`` (`TimeoutError`), a connection lost mid-way
    (`flowstream.errors.ConnectionLost`), a JSON body that does not decode
    (`flowstream.errors.DecodeError`), a bad URL or payload in the item
    (`ValueError`/`TypeError`).

    Requests run one at a time per node unless the node is declared with
    ``concurrency: N`` (beside ``config``): then up to N are in flight at
    once, results in input order (or as they come, with ``ordered:
    false``), each request retried or dead-lettered on its own.
    Stream-safe.

    Args:
        config: The validated config.
        transport: An httpx transport for the node's client (tests pass
            ``httpx.MockTransport``); None uses the network.

    Example:
        ``{id: get, type: http.request, config: {url: "http://127.0.0.1:8080/hello"}}``
        turns ``[null]`` into ``[{status: 200, body: {hello: world}}]`` (and
        the response headers).

        Each item drives one request. A string item is the URL (it replaces
        ``config.url``, which may then be left out). A mapping item may give
        ``url``, ``params`` (merged over ``config.params``, the item's win),
        and ``json`` or ``body`` (replacing the config's payload); its
        ``method``, ``headers`` and other keys are ignored: they come from
        the config only. Any other item (null, a number, a mapping without
        ``url``) sends ``config.url``. With no URL from either, or one not
        starting with ``http://`` or ``https://``, the item fails with a
        ``ValueError`` saying so.

        ``body`` in the output is the decoded JSON when the response's
        ``content-type`` is JSON (``application/json`` or ``+json``); for
        any other content type it is the text, decoded from the charset
        the response names (else UTF-8), bytes that do not decode replaced
        by U+FFFD: binary bodies are not kept intact.

        Fetching many URLs, 20 requests in flight at once, results in input
        order, then keeping only the bodies (``concurrency`` and
        ``ordered`` sit beside ``config``; the Python builder takes them as
        keywords, ``.node("get", "http.request", concurrency=20)``):

            nodes:
              - id: urls
                type: source.values
                config:
                  values:
                    - http://127.0.0.1:8080/users/1
                    - http://127.0.0.1:8080/users/2
              - {id: get, type: http.request, concurrency: 20}
              - {id: bodies, type: transform.map, config: {expr: x.body}}
              - {id: result, type: sink.collect}
            connections: [urls -> get, get -> bodies, bodies -> result]

        Timing this against a local Python ``http.server``: its
        ``request_queue_size`` (the listen backlog) is 5 by default, so
        with more connections than that arriving at once some wait for
        TCP to retry the connection (a second or more), and concurrency
        looks worse than it is;
        raise it on the server class (``request_queue_size = 128``) or test
        against a real server.
    """

    def __init__(
        self, config: HttpRequest, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.config = config
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._json_header = not any(
            name.lower() == "content-type" for name in config.headers
        )

    async def initialize(self, ctx: NodeContext) -> None:
        """Open the node's HTTP client (no connection is made yet)."""
        import httpx  # here, not at module level: `flowstream validate` is fast

        config = self.config
        self._client = httpx.AsyncClient(
            transport=self._transport,
            headers=config.headers,
            timeout=config.timeout_s,
            follow_redirects=config.follow_redirects,
            # Every request, redirects included, meets the network policy.
            event_hooks={"request": [_check_request]},
        )

    async def shutdown(self) -> None:
        """Close the client and its connections; safe to call twice."""
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def execute(self, inp: Any) -> dict[str, Any]:
        """Send the request for one item and return the response as a dict.

        Raises:
            RuntimeError: The node was not initialized (or was shut down).
        """
        import httpx

        client = self._client
        if client is None:
            msg = "http.request: execute() before initialize() or after shutdown()"
            raise RuntimeError(msg)
        config = self.config
        url, params, content, is_json = self._request(inp)
        # The runtime may run a call's first step inline and move the rest to
        # a task of its own at the first suspension; httpx's cancel scopes
        # must be entered in the task that leaves them, so suspend first.
        await asyncio.sleep(0)
        where = f"{config.method} {url}"
        headers = (
            {"content-type": "application/json"}
            if is_json and self._json_header
            else None
        )
        try:
            # Merged into the URL's own query (httpx's params= would replace it).
            target = httpx.URL(url).copy_merge_params(params) if params else url
            response = await client.request(
                config.method, target, content=content, headers=headers
            )
        except httpx.TimeoutException as exc:
            kind = type(exc).__name__
            msg = f"{where}: no answer within {config.timeout_s} s ({kind})"
            raise TimeoutError(msg) from exc
        except NetworkDenied:
            raise
        except httpx.ConnectError as exc:
            denied = NetworkDenied.found_in(exc)
            if denied is not None:
                raise denied from None
            msg = f"{where}: cannot connect ({exc or type(exc).__name__})"
            raise ConnectError(msg) from exc
        except httpx.TransportError as exc:
            msg = f"{where}: {type(exc).__name__}: {exc}"
            raise ConnectionLost(msg) from exc
        status = response.status_code
        if config.raise_for_status and status >= 400:
            msg = f"{where}: HTTP {status} {response.reason_phrase}"
            raise httpx.HTTPStatusError(
                msg, request=response.request, response=response
            )
        return {
            "status": status,
            "headers": dict(response.headers.items()),
            "body": _body(response, where),
        }

    def _request(self, inp: Any) -> tuple[str, dict[str, Any], bytes | None, bool]:
        """The (url, params, content, content is JSON) for one item."""
        config = self.config
        url: Any = config.url
        params: dict[str, Any] = config.params
        # The payload: config json, else config body; an item's replaces it.
        payload: Any = config.json if config.json is not None else config.body
        is_json = config.json is not None
        has_payload = payload is not None
        if type(inp) is str:
            url = inp
        elif type(inp) is dict:
            url = inp.get("url", url)
            if "params" in inp:
                extra = inp["params"]
                if type(extra) is not dict:
                    kind = type(extra).__name__
                    msg = f"an item's params must be a mapping, got {kind}"
                    raise TypeError(msg)
                params = {**params, **extra}
            if "json" in inp and "body" in inp:
                msg = "an item may give json or body, not both"
                raise ValueError(msg)
            if "json" in inp:  # null too: the body is then JSON null
                payload, is_json, has_payload = inp["json"], True, True
            elif "body" in inp:
                payload, is_json = inp["body"], False
                has_payload = payload is not None
        if url is None:
            msg = "no URL: set config url, or send items with a url"
            raise ValueError(msg)
        url = _check_url(url, "the url")
        content = _payload(payload, is_json=is_json) if has_payload else None
        return url, params, content, is_json and has_payload


async def _check_request(request: httpx.Request) -> None:
    check_url(str(request.url), what="http.request")


def _body(response: httpx.Response, where: str) -> Any:
    kind = response.headers.get("content-type", "").partition(";")[0].strip().lower()
    if kind == "application/json" or kind.endswith("+json"):
        if not response.content:
            return None
        try:
            return _json_decoder.decode(response.content)
        except msgspec.DecodeError as exc:
            msg = f"{where}: the response says it is JSON but is not ({exc})"
            raise DecodeError(msg) from exc
    return response.text


http_request = node("http.request", config=HttpRequest)(HttpRequestNode)
"""The ``http.request`` node type (`HttpRequestNode`)."""
