"""One error hierarchy, rendered by one handler into the OpenAI error envelope.

Handlers and services raise :class:`GatewayError` subclasses; :func:`error_response`
turns any of them (and the framework's own HTTP errors) into
``{"error": {"message", "type", "param", "code"}}`` with the right status and headers.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping

import msgspec
from litestar import Response
from litestar.exceptions import HTTPException, NotFoundException, ValidationException
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError

from app._types import AnyRequest

__all__ = [
    "AuthenticationError",
    "GatewayError",
    "InvalidRequestError",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "RequestTooLargeError",
    "ServiceUnavailableError",
    "UpstreamError",
    "UpstreamTimeoutError",
    "error_body",
    "error_response",
    "exception_handler",
    "sse_error_frame",
]

log = logging.getLogger("poolgate.errors")

_ENCODER = msgspec.json.Encoder()


class GatewayError(Exception):
    """Base of every error a client may see; carries the envelope's fields."""

    status_code: int = 500
    type: str = "server_error"
    code: str = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.param = param
        self.headers: dict[str, str] = dict(headers or {})


class AuthenticationError(GatewayError):
    status_code = 401
    type = "authentication_error"
    code = "invalid_api_key"


class PermissionDeniedError(GatewayError):
    status_code = 403
    type = "permission_error"
    code = "permission_denied"


class NotFoundError(GatewayError):
    status_code = 404
    type = "invalid_request_error"
    code = "not_found"


class InvalidRequestError(GatewayError):
    status_code = 400
    type = "invalid_request_error"
    code = "invalid_request"


class RateLimitError(GatewayError):
    """A 429; always carries ``Retry-After`` (whole seconds, rounded up) and ``retry-after-ms``."""

    status_code = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"

    def __init__(
        self,
        message: str,
        *,
        retry_after: float,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
        retryable: bool = True,
    ) -> None:
        wait = max(retry_after, 0.001)
        merged = dict(headers or {})
        merged["retry-after"] = str(max(1, math.ceil(wait)))
        merged["retry-after-ms"] = str(max(1, math.ceil(wait * 1000)))
        super().__init__(message, code=code, headers=merged)
        self.retry_after = wait
        self.retryable = retryable
        """False when waiting cannot help (a spent budget, a request larger than its window)."""


class RequestTooLargeError(GatewayError):
    status_code = 413
    type = "invalid_request_error"
    code = "request_too_large"


class UpstreamError(GatewayError):
    status_code = 502
    type = "server_error"
    code = "upstream_error"


class UpstreamTimeoutError(GatewayError):
    status_code = 504
    type = "server_error"
    code = "upstream_timeout"


class ServiceUnavailableError(GatewayError):
    status_code = 503
    type = "server_error"
    code = "no_upstream_available"


def sse_error_frame(exc: GatewayError, endpoint: str) -> bytes:
    """The event that ends a stream whose upstream failed after the first byte (no [DONE] follows).

    Chat completions streams carry OpenAI's error envelope as a data line; Responses
    streams carry an ``error`` event, which Responses clients already understand.
    """
    if endpoint == "responses":
        payload = _ENCODER.encode({"type": "error", "code": exc.code, "message": exc.message, "param": exc.param})
        return b"event: error\ndata: " + payload + b"\n\n"
    return b"data: " + error_body(exc.message, exc.type, exc.code, exc.param) + b"\n\n"


def error_body(message: str, type_: str, code: str | None, param: str | None = None) -> bytes:
    return _ENCODER.encode({"error": {"message": message, "type": type_, "param": param, "code": code}})


def error_response(exc: GatewayError, extra_headers: Mapping[str, str] | None = None) -> Response[bytes]:
    headers = dict(extra_headers or {})
    headers.update(exc.headers)
    return Response(
        content=error_body(exc.message, exc.type, exc.code, exc.param),
        status_code=exc.status_code,
        media_type="application/json",
        headers=headers,
    )


_HTTP_TYPES = {
    400: ("invalid_request_error", "invalid_request"),
    401: ("authentication_error", "invalid_api_key"),
    403: ("permission_error", "permission_denied"),
    404: ("invalid_request_error", "not_found"),
    405: ("invalid_request_error", "method_not_allowed"),
    413: ("invalid_request_error", "request_too_large"),
    429: ("rate_limit_error", "rate_limit_exceeded"),
}


def exception_handler(request: AnyRequest, exc: Exception) -> Response[bytes]:
    """The single place where exceptions become responses."""
    key_headers = request.scope.get("state", {}).get("ratelimit_headers")
    if isinstance(exc, GatewayError):
        return error_response(exc, key_headers)
    if isinstance(exc, NotFoundException):
        message = f"Unknown request URL: {request.method} {request.url.path}."
        return error_response(NotFoundError(message, code="unknown_url"), key_headers)
    if isinstance(exc, ValidationException):
        return error_response(InvalidRequestError(_validation_message(exc)), key_headers)
    if isinstance(exc, HTTPException):
        type_, code = _HTTP_TYPES.get(exc.status_code, ("server_error", "internal_error"))
        error = GatewayError(exc.detail or "Request failed.", code=code)
        error.status_code, error.type = exc.status_code, type_
        return error_response(error, {**(exc.headers or {}), **(key_headers or {})})
    if _database_away(exc):
        log.warning("database unavailable on %s %s: %s", request.method, request.url.path, exc)
        return error_response(ServiceUnavailableError(
            "poolgate cannot reach its database right now. Please try again shortly.",
            code="database_unavailable", headers={"retry-after": "2"},
        ), key_headers)
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(GatewayError("The server had an error while processing your request."))


def _database_away(exc: Exception) -> bool:
    """The database did not answer (as opposed to a query that is wrong, which stays a 500)."""
    if isinstance(exc, OperationalError | InterfaceError):
        return True
    if isinstance(exc, DBAPIError):
        return bool(exc.connection_invalidated)
    if isinstance(exc, SQLAlchemyTimeoutError):  # no pooled connection came free in time
        return True
    return isinstance(exc, OSError | TimeoutError) and _from_database(exc)


def _from_database(exc: BaseException) -> bool:
    """An OSError or timeout raised from inside the database driver or SQLAlchemy."""
    tb = exc.__traceback__
    while tb is not None:
        module = tb.tb_frame.f_globals.get("__name__", "")
        if module.startswith(("sqlalchemy", "asyncpg", "aiosqlite")):
            return True
        tb = tb.tb_next
    return False


def _validation_message(exc: ValidationException) -> str:
    extra = exc.extra if isinstance(exc.extra, list) else []
    for item in extra:
        if isinstance(item, dict) and item.get("message"):
            return f"Invalid value for {item.get('key', 'parameter')}: {item['message']}"
    return exc.detail or "Invalid request."
