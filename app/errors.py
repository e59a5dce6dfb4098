"""One error hierarchy, rendered by one handler into the OpenAI error envelope.

Handlers and services raise :class:`GatewayError` subclasses; :func:`error_response`
turns any of them (and the framework's own HTTP errors) into
``{"error": {"message", "type", "param", "code"}}`` with the right status and headers.
"""

from __future__ import annotations

import logging
import math
import secrets
from collections.abc import Mapping

import msgspec
from litestar import Response
from litestar.exceptions import HTTPException, NotFoundException, ValidationException
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError

from app._types import AnyRequest

__all__ = [
    "AuthenticationError",
    "ConflictError",
    "GatewayError",
    "InvalidRequestError",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "RequestTooLargeError",
    "ServiceUnavailableError",
    "UpstreamError",
    "UpstreamTimeoutError",
    "as_gateway_error",
    "error_body",
    "error_response",
    "exception_handler",
    "sse_error_frame",
]

log = logging.getLogger("poolgate.errors")

_ENCODER = msgspec.json.Encoder()
MAX_RETRY_WAIT = 60.0
"""Seconds a client is told to wait at most; a 429 that lasts longer says not to retry."""


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
    """A 429. One that waiting fixes within a minute carries ``Retry-After`` (whole seconds, rounded up)
    and ``retry-after-ms``; one that waiting cannot fix soon (a spent budget, a request larger than its
    window, a window that reopens in minutes or hours) carries ``x-should-retry: false`` instead, so the
    OpenAI SDKs and Codex give up at once rather than sleep for hours."""

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
        self.retryable = retryable and wait <= MAX_RETRY_WAIT
        """False when waiting cannot help within a minute."""
        if self.retryable:
            merged["retry-after"] = str(max(1, math.ceil(wait)))
            merged["retry-after-ms"] = str(max(1, math.ceil(wait * 1000)))
        else:
            merged["x-should-retry"] = "false"
        super().__init__(message, code=code, headers=merged)
        self.retry_after = wait


class RequestTooLargeError(GatewayError):
    status_code = 413
    type = "invalid_request_error"
    code = "request_too_large"


class ConflictError(GatewayError):
    status_code = 409
    type = "invalid_request_error"
    code = "conflict"


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
    headers.setdefault("x-request-id", "req_" + secrets.token_hex(12))
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
    if not isinstance(exc, GatewayError):
        exc = as_gateway_error(exc, f"{request.method} {request.url.path}")
    return error_response(exc, key_headers)


def as_gateway_error(exc: BaseException, where: str = "") -> GatewayError:
    """Any exception as the error a client may see (a 500 that says nothing inside for the unexpected)."""
    from app.crypto import VaultError
    from keys import KeyAlreadyRevoked, KeyNameTaken, KeyNotFound, KeyRevoked, PolicyError, StoreError

    if isinstance(exc, GatewayError):
        return exc
    if isinstance(exc, NotFoundException):
        return NotFoundError(f"Unknown request URL: {where}.", code="unknown_url")
    if isinstance(exc, ValidationException):
        return InvalidRequestError(_validation_message(exc))
    if isinstance(exc, HTTPException):
        type_, code = _HTTP_TYPES.get(exc.status_code, ("server_error", "internal_error"))
        error = GatewayError(exc.detail or "Request failed.", code=code, headers=exc.headers)
        error.status_code, error.type = exc.status_code, type_
        return error
    if isinstance(exc, RecursionError):
        return InvalidRequestError("The JSON body of your request is nested too deeply.")
    if isinstance(exc, KeyNotFound) or type(exc).__name__ == "UpstreamNotFound":
        return NotFoundError(str(exc), code="not_found")
    if isinstance(exc, KeyNameTaken | KeyRevoked | KeyAlreadyRevoked) or (
            isinstance(exc, StoreError) and "already exists" in str(exc)):
        return ConflictError(str(exc))
    if isinstance(exc, StoreError | PolicyError):
        return InvalidRequestError(str(exc), param=getattr(exc, "field", None))
    if isinstance(exc, VaultError):
        return ConflictError(str(exc), code="encryption_keys_differ")
    if isinstance(exc, Exception) and _database_away(exc):
        log.warning("database unavailable on %s: %s", where, exc)
        return ServiceUnavailableError(
            "poolgate cannot reach its database right now. Please try again shortly.",
            code="database_unavailable", headers={"retry-after": "2"},
        )
    log.error("unhandled error on %s", where, exc_info=exc)
    return GatewayError("The server had an error while processing your request.")


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
