"""Every error as an RFC 9457 problem document, never a stack trace.

Handlers raise `ApiError` (or Litestar's HTTP exceptions, or a
`WorkflowValidationError`); `exception_handlers` turns each into a JSON
``application/problem+json`` response. An unexpected exception is logged with
its traceback on the server and answered with a bare 500.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import msgspec
from litestar import Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi.datastructures import ResponseSpec
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR

from ..errors import WorkflowValidationError
from .schemas import ProblemDocument

if TYPE_CHECKING:
    from litestar import Request
    from litestar.types import ExceptionHandlersMap

    from ..errors import Problem

__all__ = [
    "PROBLEM_JSON",
    "ApiError",
    "exception_handlers",
    "problem_response",
    "problem_responses",
    "schema_not_found",
]

PROBLEM_JSON = "application/problem+json"
logger = logging.getLogger("flowstream.server")

_TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Request body too large",
    415: "Unsupported media type",
    422: "Invalid workflow",
    429: "Too many runs",
    500: "Internal server error",
}


class ApiError(Exception):
    """An error answered with a problem document.

    Args:
        status: The HTTP status code.
        detail: What went wrong with this request.
        title: The kind of problem; the status code's usual title if None.
        headers: Extra response headers (``WWW-Authenticate``).
    """

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        title: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.title = title or _TITLES.get(status, "Error")
        self.headers = headers or {}


def problem_response(
    request: Request[Any, Any, Any],
    status: int,
    detail: str | None,
    *,
    title: str | None = None,
    problems: list[Problem] | None = None,
    headers: dict[str, str] | None = None,
) -> Response[bytes]:
    """A problem document response for ``request``."""
    doc = ProblemDocument(
        title=title or _TITLES.get(status, "Error"),
        status=status,
        detail=detail,
        instance=request.url.path,
        problems=problems,
    )
    return Response(
        content=msgspec.json.encode(doc),
        status_code=status,
        media_type=PROBLEM_JSON,
        headers=headers,
    )


def _api_error(request: Request[Any, Any, Any], exc: ApiError) -> Response[bytes]:
    return problem_response(
        request, exc.status, exc.detail, title=exc.title, headers=exc.headers
    )


def _invalid_workflow(
    request: Request[Any, Any, Any], exc: WorkflowValidationError
) -> Response[bytes]:
    count = len(exc.problems)
    return problem_response(
        request,
        422,
        f"invalid workflow, {count} problem{'s' * (count != 1)}",
        problems=exc.problems,
    )


def _http_exception(
    request: Request[Any, Any, Any], exc: HTTPException
) -> Response[bytes]:
    status = exc.status_code
    if status >= 500:
        return _internal(request, exc)
    detail = exc.detail
    if isinstance(exc, ValidationException) and isinstance(exc.extra, list):
        # Litestar's parameter and body errors: keep their messages, which
        # name the parameter, in the detail text.
        reasons = [
            f"{e.get('key', '')}: {e.get('message', '')}".strip(": ")
            for e in exc.extra
            if isinstance(e, dict)
        ]
        if reasons:
            detail = "; ".join(reasons)
    headers = {
        k: v for k, v in (exc.headers or {}).items() if k.lower() != "content-type"
    }
    return problem_response(request, status, detail, headers=headers or None)


def _too_deep(request: Request[Any, Any, Any], exc: RecursionError) -> Response[bytes]:
    # Decoders (Litestar's own, for typed bodies, too) recurse once per level
    # of nesting: a RecursionError while handling a request comes from a
    # body nested thousands of levels deep. The client's fault, not a 500.
    return problem_response(
        request, 400, "the request body is too deeply nested to be decoded"
    )


def _internal(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    logger.error(
        "%s %s failed",
        request.method,
        request.url.path,
        exc_info=exc,
        extra={"path": request.url.path},
    )
    return problem_response(
        request,
        HTTP_500_INTERNAL_SERVER_ERROR,
        "the server failed on this request; its log has the details",
    )


def schema_not_found(response: Response[Any]) -> Response[Any]:
    """Turn Litestar's HTML 404 page under /schema into a problem document."""
    if response.status_code != 404:
        return response
    doc = ProblemDocument(
        title=_TITLES[404],
        status=404,
        detail="no such document; the OpenAPI document is /openapi.json",
    )
    return Response(
        content=msgspec.json.encode(doc), status_code=404, media_type=PROBLEM_JSON
    )


def exception_handlers() -> ExceptionHandlersMap:
    """The app's exception handlers: every error becomes a problem document."""
    return {
        ApiError: _api_error,
        WorkflowValidationError: _invalid_workflow,
        HTTPException: _http_exception,
        RecursionError: _too_deep,
        Exception: _internal,
    }


def problem_responses(*statuses: int) -> dict[int, ResponseSpec]:
    """OpenAPI entries declaring problem documents for these status codes."""
    return {
        status: ResponseSpec(
            data_container=ProblemDocument,
            description=_TITLES.get(status, "Error"),
            media_type=PROBLEM_JSON,
            generate_examples=False,
        )
        for status in statuses
    }
