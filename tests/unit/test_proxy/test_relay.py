"""The relay's retry loop, with the injectable transport: which upstream is tried, when the next one is, and
what the client sees when none answers. No sockets: every answer is scripted."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import pytest

from app.errors import RateLimitError, ServiceUnavailableError, UpstreamError, UpstreamTimeoutError
from app.pool import Pool, UpstreamRecord, parse_routes
from app.proxy import Exchange, MockResponse, MockTransport, Relay
from app.proxy._relay import MAX_ATTEMPTS
from app.proxy._transport import ConnectFailed, ReadFailed, Sent
from app.settings import Settings
from tests.unit.test_proxy.test_request import parse

ANSWER = json.dumps({"id": "chatcmpl-1", "object": "chat.completion", "choices": [],
                     "usage": {"prompt_tokens": 3, "completion_tokens": 4}}).encode()


def record(upstream_id: str, tier: int = 0) -> UpstreamRecord:
    return UpstreamRecord(
        id=upstream_id, name=upstream_id, kind="openai", base_url=f"http://{upstream_id}/v1", credential=None,
        routes=parse_routes("gpt-5*"), weight=1.0, tier=tier, max_concurrency=None, enabled=True, removed=False,
        created_at=0.0, updated_at=0.0, revision=1,
    )


def relay_of(handler: Callable[[Sent], MockResponse], *upstreams: str,
             **settings: float) -> tuple[Relay, MockTransport, Pool]:
    pool = Pool(store=None, vault=None, strategy="round_robin")  # type: ignore[arg-type]
    pool.apply([record(name) for name in upstreams])
    transport = MockTransport(handler)
    return Relay(pool, transport, Settings(**settings)), transport, pool  # type: ignore[arg-type]


def ok(_: Sent) -> MockResponse:
    return MockResponse(200, chunks=[ANSWER])


async def send(relay: Relay, body: object | None = None) -> tuple[Exchange, object]:
    request = parse(body or {"model": "gpt-5", "messages": []})
    exchange = Exchange("k", "gpt-5", "chat_completions", request.stream)
    try:
        reply = await relay.send(request, exchange, {}, 0, {})
    except Exception as exc:
        return exchange, exc
    return exchange, reply


async def test_an_answer_is_passed_on_with_its_usage_and_our_request_id() -> None:
    relay, transport, _ = relay_of(ok, "a")
    exchange, reply = await send(relay)
    assert reply.status == 200 and reply.body == ANSWER  # type: ignore[attr-defined]
    assert reply.headers["x-request-id"] == exchange.request_id  # type: ignore[attr-defined]
    assert exchange.usage is not None and exchange.usage.output_tokens == 4
    assert [s.url for s in transport.sent] == ["http://a/v1/chat/completions"]


@pytest.mark.parametrize("failure", [
    MockResponse(500, chunks=[b'{"error": {}}']),
    MockResponse(429, headers={"retry-after": "30", "content-type": "application/json"}),
    MockResponse(200, headers={"content-type": "text/html"}, chunks=[b"<html>"]),
    MockResponse(302, headers={"location": "http://elsewhere"}),
    ConnectFailed("refused"),
], ids=["5xx", "429", "not-json", "redirect", "unreachable"])
async def test_a_failure_before_the_first_byte_moves_to_the_next_upstream(
        failure: MockResponse | Exception) -> None:
    def handler(sent: Sent) -> MockResponse:
        if sent.upstream_id == "a":
            if isinstance(failure, Exception):
                raise failure
            return MockResponse(failure.status, dict(failure.headers), list(failure.chunks))
        return ok(sent)

    relay, transport, _ = relay_of(handler, "a", "b")
    for _ in range(4):
        exchange, reply = await send(relay)
        assert reply.status == 200, reply  # type: ignore[attr-defined]
    assert {s.upstream_id for s in transport.sent} == {"a", "b"}
    assert exchange.upstream == "b"


async def test_a_client_error_is_passed_on_and_not_retried() -> None:
    relay, transport, pool = relay_of(lambda s: MockResponse(400, chunks=[b'{"error": {"code": "bad"}}']), "a", "b")
    exchange, reply = await send(relay)
    assert reply.status == 400 and len(transport.sent) == 1  # type: ignore[attr-defined]
    assert exchange.error == "upstream_rejected"
    assert pool.states[transport.sent[0].upstream_id].failures == 0


async def test_when_every_upstream_fails_the_last_failure_is_the_answer() -> None:
    relay, transport, _ = relay_of(lambda s: MockResponse(503), "a", "b", "c")
    _, error = await send(relay)
    assert isinstance(error, UpstreamError) and error.status_code == 502
    assert len(transport.sent) == 3  # each once, none twice


async def test_every_upstream_rate_limited_is_a_429_with_the_earliest_recovery() -> None:
    waits = {"a": "20", "b": "7"}
    relay, _, _ = relay_of(lambda s: MockResponse(429, headers={"retry-after": waits[s.upstream_id]}), "a", "b")
    _, error = await send(relay)
    assert isinstance(error, RateLimitError) and error.code == "pool_exhausted"
    assert error.headers["retry-after"] == "7"
    _, again = await send(relay)  # both cool down now: refused without a call
    assert isinstance(again, RateLimitError) and again.code == "pool_exhausted"


async def test_an_upstream_that_does_not_answer_in_time_is_a_504_after_trying_the_others() -> None:
    async def hang(_: Sent) -> MockResponse:
        await asyncio.sleep(10)
        raise AssertionError("not reached")

    relay, transport, _ = relay_of(hang, "a", "b", first_byte_timeout=0.05)  # type: ignore[arg-type]
    _, error = await send(relay)
    assert isinstance(error, UpstreamTimeoutError) and len(transport.sent) == 2


async def test_no_upstream_for_the_model_is_a_503() -> None:
    relay, transport, _ = relay_of(ok)
    _, error = await send(relay)
    assert isinstance(error, ServiceUnavailableError) and transport.sent == []


async def test_retries_are_bounded_by_the_retry_budget() -> None:
    async def failing(_: Sent) -> MockResponse:
        await asyncio.sleep(0.01)
        return MockResponse(500)

    relay, transport, _ = relay_of(failing, *(f"u{i}" for i in range(6)))  # type: ignore[arg-type]
    await asyncio.gather(*(send(relay) for _ in range(20)))
    # Twenty failing at once: each makes its first attempt, and retries add at most 20% of the attempts
    # (or three requests retrying at once), not MAX_ATTEMPTS each: a failing pool is not hammered.
    retries = len(transport.sent) - 20
    assert 0 < retries <= 3 * (MAX_ATTEMPTS - 1) + 4, retries

    alone, transport, _ = relay_of(failing, *(f"u{i}" for i in range(6)))  # type: ignore[arg-type]
    await send(alone)
    assert len(transport.sent) == MAX_ATTEMPTS  # one request alone gets its every attempt


async def test_a_stream_cut_after_its_first_byte_ends_with_an_error_event_not_a_retry() -> None:
    events = [b'data: {"choices": [{"delta": {"content": "a"}}]}\n\n', ReadFailed("reset", b"")]

    relay, transport, _ = relay_of(
        lambda s: MockResponse(200, headers={"content-type": "text/event-stream"}, chunks=list(events)), "a", "b")
    exchange, reply = await send(relay, {"model": "gpt-5", "messages": [], "stream": True})
    out = b"".join([chunk async for chunk in reply.stream])  # type: ignore[attr-defined]
    assert out.startswith(b'data: {"choices"') and b'"error"' in out and b"[DONE]" not in out
    assert len(transport.sent) == 1 and exchange.error == "upstream_error"
