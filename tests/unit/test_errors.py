"""The OpenAI error envelope, and what any exception becomes before a client sees it (app/errors.py)."""

from __future__ import annotations

import json

import pytest
from litestar.exceptions import HTTPException, NotFoundException, ValidationException
from sqlalchemy.exc import OperationalError

from app.crypto import VaultError
from app.errors import (
    ConflictError,
    GatewayError,
    InvalidRequestError,
    NotFoundError,
    RateLimitError,
    ServiceUnavailableError,
    UpstreamError,
    as_gateway_error,
    error_response,
    sse_error_frame,
)
from keys import KeyNameTaken, KeyNotFound, PolicyError


def test_the_envelope_has_the_four_fields_and_an_id() -> None:
    response = error_response(InvalidRequestError("Bad.", param="model"), {"x-ratelimit-limit-requests": "5"})
    assert response.status_code == 400
    assert json.loads(response.content) == {
        "error": {"message": "Bad.", "type": "invalid_request_error", "param": "model", "code": "invalid_request"}}
    assert response.headers["x-request-id"].startswith("req_")
    assert response.headers["x-ratelimit-limit-requests"] == "5"


@pytest.mark.parametrize(("wait", "retry_after", "retry_after_ms"), [(0.2, "1", "200"), (2.5, "3", "2500"),
                                                                      (60, "60", "60000")])
def test_a_429_that_waiting_fixes_soon_says_when(wait: float, retry_after: str, retry_after_ms: str) -> None:
    error = RateLimitError("slow down", retry_after=wait)
    assert (error.headers["retry-after"], error.headers["retry-after-ms"]) == (retry_after, retry_after_ms)
    assert "x-should-retry" not in error.headers and error.retryable


@pytest.mark.parametrize(("wait", "retryable"), [(61, True), (3600, True), (1, False)])
def test_a_429_that_waiting_cannot_fix_soon_says_not_to_retry(wait: float, retryable: bool) -> None:
    error = RateLimitError("budget spent", retry_after=wait, retryable=retryable)
    assert error.headers == {"x-should-retry": "false"} and not error.retryable


def test_a_stream_error_is_an_event_each_client_kind_understands() -> None:
    failure = UpstreamError("The upstream connection failed mid-stream.")
    responses = sse_error_frame(failure, "responses")
    assert responses.startswith(b"event: error\ndata: ") and responses.endswith(b"\n\n")
    assert json.loads(responses.split(b"data: ", 1)[1]) == {
        "type": "error", "code": "upstream_error", "message": failure.message, "param": None}
    chat = sse_error_frame(failure, "chat_completions")
    assert json.loads(chat.removeprefix(b"data: "))["error"]["type"] == "server_error"


@pytest.mark.parametrize(("exc", "kind", "status", "code"), [
    (NotFoundException(), NotFoundError, 404, "unknown_url"),
    (ValidationException(extra=[{"key": "limit", "message": "must be a number"}]), InvalidRequestError, 400,
     "invalid_request"),
    (HTTPException(status_code=405, detail="no"), GatewayError, 405, "method_not_allowed"),
    (RecursionError(), InvalidRequestError, 400, "invalid_request"),
    (KeyNotFound("ghost"), NotFoundError, 404, "not_found"),
    (KeyNameTaken("alice"), ConflictError, 409, "conflict"),
    (PolicyError("bad pattern"), InvalidRequestError, 400, "invalid_request"),
    (VaultError("keys differ"), ConflictError, 409, "encryption_keys_differ"),
    (OperationalError("select 1", {}, Exception("gone")), ServiceUnavailableError, 503, "database_unavailable"),
])
def test_known_exceptions_become_the_error_a_client_can_act_on(exc: Exception, kind: type, status: int,
                                                               code: str) -> None:
    error = as_gateway_error(exc, "GET /x")
    assert isinstance(error, kind) and (error.status_code, error.code) == (status, code)


def test_an_unexpected_exception_is_a_500_that_says_nothing_inside(caplog: pytest.LogCaptureFixture) -> None:
    error = as_gateway_error(ValueError("password=hunter2 in a local"), "POST /v1/responses")
    assert (error.status_code, error.code) == (500, "internal_error")
    assert "hunter2" not in error.message
    assert "POST /v1/responses" in caplog.text  # logged for the operator, with where it happened
