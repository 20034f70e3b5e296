"""The bearer token: where it comes from, and how requests are checked.

The token is taken from `ServerConfig.token`, else ``FLOWSTREAM_TOKEN``, else
the token file (``<db>.token``); when none exists it is generated at first
start and written to that file with mode 0600. ``flowstream serve`` prints a
generated token once; afterwards it is only in the file.

Mutating endpoints always need ``Authorization: Bearer <token>``; when the
server listens on a non-loopback address every endpoint does. Browsers cannot
set headers on a WebSocket, so the events feed also takes ``?token=``.
"""

from __future__ import annotations

import hmac
import os
import secrets
from typing import TYPE_CHECKING, Any

from .context import server
from .problems import ApiError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from litestar.connection import ASGIConnection
    from litestar.handlers import BaseRouteHandler

    from .config import ServerConfig

__all__ = ["TOKEN_ENV", "auth_guard", "load_token", "token_matches"]

TOKEN_ENV = "FLOWSTREAM_TOKEN"


def load_token(
    config: ServerConfig, environ: Mapping[str, str] | None = None
) -> tuple[str, bool]:
    """Return the server's token and whether it was generated just now.

    Raises:
        OSError: The token file cannot be read or written.
        ValueError: The token file or variable is empty.
    """
    if config.token is not None:
        return _checked(config.token, "the configured token"), False
    env = os.environ if environ is None else environ
    if TOKEN_ENV in env:
        return _checked(env[TOKEN_ENV], TOKEN_ENV), False
    path = config.token_path
    try:
        return _checked(path.read_text().strip(), str(path)), False
    except FileNotFoundError:
        pass
    token = secrets.token_urlsafe(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    # O_EXCL: two servers starting at once must not both write a token.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(token + "\n")
    return token, True


def _checked(token: str, where: str) -> str:
    if not token:
        msg = f"{where} is empty: a token must not be"
        raise ValueError(msg)
    return token


def token_matches(expected: str, authorization: str | None, query: str | None) -> bool:
    """Check a request's credentials in constant time.

    Args:
        expected: The server's token.
        authorization: The ``Authorization`` header, if any.
        query: The ``token`` query parameter, if any (WebSocket only).
    """
    offered: str | None = None
    if authorization is not None:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer":
            offered = value.strip()
    elif query is not None:
        offered = query
    if not offered:
        return False
    return hmac.compare_digest(offered.encode(), expected.encode())


def auth_guard(
    connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
) -> None:
    """Require the bearer token where the server's policy says so.

    Mutating requests always need it; reads need it when the server listens
    beyond loopback. The UI's own files are public (they hold no data), and
    the WebSocket feed checks for itself (browsers cannot send the header).

    Raises:
        ApiError: 401, with a ``WWW-Authenticate`` challenge.
    """
    if handler.opt.get("public"):
        return
    ctx = server(connection)
    method = connection.scope.get("method", "GET")
    if method in ("GET", "HEAD", "OPTIONS") and ctx.config.loopback:
        return
    if not token_matches(ctx.token, connection.headers.get("authorization"), None):
        raise ApiError(
            401,
            "this endpoint needs 'Authorization: Bearer <token>' with the "
            "server's token",
            headers={"WWW-Authenticate": 'Bearer realm="flowstream"'},
        )
