from __future__ import annotations

import json
import time

import msgspec
import pytest

from app.catalog import build_catalog, load_bundled
from app.errors import InvalidRequestError, NotFoundError, PermissionDeniedError
from app.proxy import RetryBudget, parse_request
from app.proxy._sse import StreamScanner
from app.proxy._usage import usage_from_body
from keys import KeyRecord, Policy

CATALOG = build_catalog(load_bundled(), {"aliases": {"fast": "gpt-5-mini"}})


def key(**policy: object) -> KeyRecord:
    return KeyRecord(
        id="k", name="k", secret_digest=b"", previous_secret_digest=None, previous_expires_at=None,
        policy=Policy(**({"allowed_models": ("*",)} | policy)),  # type: ignore[arg-type]
        expires_at=None, disabled=False, revoked_at=None, created_at=time.time(), updated_at=time.time(), revision=1,
    )


def parse(body: object, endpoint: str = "chat_completions", k: KeyRecord | None = None, headers=None):  # type: ignore[no-untyped-def]
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return parse_request(raw, endpoint, k or key(), CATALOG, headers or {})


def test_an_unchanged_request_is_relayed_byte_for_byte() -> None:
    raw = b'{"model": "gpt-5", "messages": [{"role": "user", "content": "hi"}],   "extra": {"keep": 1}}'
    request = parse(raw)
    assert request.upstream_body("gpt-5") is raw


def test_an_alias_is_sent_under_the_upstreams_name_and_the_rest_untouched() -> None:
    request = parse({"model": "fast", "messages": [], "tools": [{"type": "namespace", "x": 1}]})
    assert request.model.id == "gpt-5-mini"
    body = msgspec.json.decode(request.upstream_body("gpt-5-mini"))
    assert body["model"] == "gpt-5-mini" and body["tools"] == [{"type": "namespace", "x": 1}]


def test_chat_streams_ask_the_upstream_for_usage() -> None:
    request = parse({"model": "gpt-5", "messages": [], "stream": True, "stream_options": {"x": 1}})
    body = msgspec.json.decode(request.upstream_body("gpt-5"))
    assert body["stream_options"] == {"x": 1, "include_usage": True}
    responses = parse({"model": "gpt-5", "input": "hi", "stream": True}, "responses")
    assert responses.upstream_body("gpt-5") == responses.raw  # Responses streams report usage anyway


@pytest.mark.parametrize(
    ("body", "error", "code"),
    [
        (b"{not json", InvalidRequestError, "invalid_request"),
        (b"[1,2]", InvalidRequestError, "invalid_request"),
        ({"messages": []}, InvalidRequestError, "invalid_request"),
        ({"model": "gpt-5", "stream": "yes"}, InvalidRequestError, "invalid_request"),
        ({"model": "gpt-99"}, NotFoundError, "model_not_found"),
        ({"model": "text-embedding-3-small", "messages": []}, PermissionDeniedError, "endpoint_not_allowed"),
    ],
)
def test_bad_requests_are_refused_before_any_upstream_call(body: object, error: type, code: str) -> None:
    with pytest.raises(error) as info:
        parse(body)
    assert info.value.code == code


def test_a_model_outside_the_key_is_403() -> None:
    with pytest.raises(PermissionDeniedError) as info:
        parse({"model": "gpt-5", "messages": []}, k=key(allowed_models=("o3",)))
    assert info.value.code == "model_not_allowed"


def test_reasoning_efforts_outside_the_key_are_403_and_a_default_is_chosen_inside_it() -> None:
    limited = key(allowed_reasoning_efforts=("low",))
    with pytest.raises(PermissionDeniedError) as info:
        parse({"model": "o3", "messages": [], "reasoning_effort": "high"}, k=limited)
    assert info.value.code == "reasoning_effort_not_allowed" and info.value.param == "reasoning_effort"
    with pytest.raises(PermissionDeniedError) as info:
        parse({"model": "o3", "input": "x", "reasoning": {"effort": "high"}}, "responses", limited)
    assert info.value.param == "reasoning.effort"
    chosen = parse({"model": "o3", "input": "x", "reasoning": {"summary": "auto"}}, "responses", limited)
    assert msgspec.json.decode(chosen.upstream_body("o3"))["reasoning"] == {"summary": "auto", "effort": "low"}


def test_modalities_outside_the_key_are_403() -> None:
    text_only = key(allowed_modalities=("text",))
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    with pytest.raises(PermissionDeniedError) as info:
        parse({"model": "gpt-5", "messages": [{"role": "user", "content": [image]}]}, k=text_only)
    assert info.value.code == "modality_not_allowed"
    responses_image = {"role": "user", "content": [{"type": "input_image", "image_url": "https://x/y.png"}]}
    with pytest.raises(PermissionDeniedError):
        parse({"model": "gpt-5", "input": [responses_image]}, "responses", text_only)
    assert parse({"model": "gpt-5", "messages": [{"role": "user", "content": "text is fine"}]}, k=text_only)


def test_stickiness_comes_from_the_prompt_cache_key_or_a_session_header() -> None:
    assert parse({"model": "gpt-5", "input": "x", "prompt_cache_key": "thread-1"}, "responses").sticky == "thread-1"
    assert parse({"model": "gpt-5", "messages": []}, headers={"session-id": "s-9"}).sticky == "s-9"
    assert parse({"model": "gpt-5", "messages": []}).sticky is None


def test_usage_is_read_from_bodies_and_from_the_end_of_streams() -> None:
    chat = usage_from_body(b'{"usage": {"prompt_tokens": 5, "completion_tokens": 7, '
                           b'"prompt_tokens_details": {"cached_tokens": 2}}}')
    assert chat is not None and (chat.input_tokens, chat.output_tokens, chat.cached_tokens) == (5, 7, 2)
    scanner = StreamScanner("responses")
    event = (b'event: response.completed\ndata: {"type":"response.completed","response":{"usage":'
             b'{"input_tokens":11,"output_tokens":13,"output_tokens_details":{"reasoning_tokens":4}}}}\n\n')
    scanner.scan(b'data: {"type":"response.output_text.delta","delta":"hi"}\n\n')
    scanner.scan(b'data: {"choices":[{"delta":{}}],"usage":null}\n\n')
    assert scanner.usage is None
    big = event.replace(b'"response":{', b'"response":{"instructions":"' + b"x" * 20_000 + b'",')
    scanner.scan(big)  # a large final event (long instructions and tools) still yields its usage
    assert scanner.usage is not None
    assert (scanner.usage.input_tokens, scanner.usage.output_tokens, scanner.usage.reasoning_tokens) == (11, 13, 4)


def test_the_retry_budget_allows_three_at_once_then_twenty_percent() -> None:
    budget = RetryBudget()
    for _ in range(100):
        budget.request()
    granted = 0
    for _ in range(100):
        if budget.try_retry():
            granted += 1
            budget.retrying += 1
    assert granted == 20
