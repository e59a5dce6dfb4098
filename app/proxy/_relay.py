"""Relaying one request to the pool: choose, call, retry before the first byte, stream after it.

What reaches the client is decided here, and returned as a framework-neutral :class:`Reply`
that the route writes out: an upstream's success or a client-caused error passes through; an
upstream failure (5xx, timeout, refused connection, a 429 of the shared account) moves the
request to another upstream while nothing has been sent, within a retry budget. Once the first
byte is out, a failure ends the stream with an error event and no ``[DONE]``.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Mapping

from app._types import Body
from app.errors import (
    GatewayError,
    RateLimitError,
    ServiceUnavailableError,
    UpstreamError,
    UpstreamTimeoutError,
    error_body,
)
from app.pool import Lease, NoUpstream, Pool, PoolExhausted, UpstreamState
from app.proxy._classify import Verdict, classify
from app.proxy._exchange import Exchange, Reply, new_request_id
from app.proxy._request import ClientRequest
from app.proxy._stream import StreamRelay
from app.proxy._transport import ReadFailed, Transport, TransportError, UpstreamResponse, UpstreamTimedOut
from app.proxy._usage import read_answer
from app.settings import Settings

__all__ = ["PATHS", "Exchange", "Relay", "Reply", "RetryBudget", "forward_headers", "new_request_id"]

PATHS = {
    "chat_completions": "/chat/completions", "responses": "/responses", "embeddings": "/embeddings",
    "responses_compact": "/responses/compact",
}
MAX_ATTEMPTS = 3
# Client headers an upstream may see; everything else (the client's credential above all) stays here.
FORWARD_HEADERS = frozenset({
    "accept", "user-agent", "openai-beta", "idempotency-key", "originator", "session-id", "session_id", "thread-id",
    "thread_id", "x-client-request-id", "conversation_id", "x-stainless-lang", "x-stainless-package-version",
    "x-stainless-os", "x-stainless-arch", "x-stainless-runtime", "x-stainless-runtime-version", "version",
    "x-openai-subagent",
})
FORWARD_PREFIXES = ("x-codex-",)
# Upstream headers a client may see, besides its own key's rate-limit headers (the account's never).
RETURN_HEADERS = ("openai-processing-ms", "x-codex-turn-state")
_SAFE_VALUE = re.compile(r"[\x20-\x7e]{1,512}")


def forward_headers(client: Mapping[str, str], stream: bool) -> dict[str, str]:
    """The client's headers an upstream may see (never a ``Connection``-named one), plus content headers."""
    hop = {name.strip().lower() for name in client.get("connection", "").split(",")}
    forward = {name: value for name, value in client.items()
               if (name in FORWARD_HEADERS or name.startswith(FORWARD_PREFIXES)) and name not in hop}
    forward["content-type"] = "application/json"
    forward.setdefault("accept", "text/event-stream" if stream else "application/json")
    return forward


def safe_value(value: str | None) -> str | None:
    """An upstream header value fit to pass on: printable ASCII, bounded; anything else is dropped."""
    return value if value is not None and _SAFE_VALUE.fullmatch(value) else None


class RetryBudget:
    """Retries may add at most 20% to the attempts of the last ten seconds, or 3 at once at least."""

    def __init__(self, ratio: float = 0.2, minimum: int = 3, window: float = 10.0) -> None:
        self.ratio, self.minimum, self.window = ratio, minimum, window
        self._start = time.monotonic()
        self._requests = 0.0
        self._retries = 0.0
        self.retrying = 0

    def _roll(self) -> None:
        elapsed = time.monotonic() - self._start
        if elapsed > self.window:  # halve the counts for every window gone by: a cheap moving average
            decay = 0.5 ** int(elapsed / self.window)
            self._requests *= decay
            self._retries *= decay
            self._start = time.monotonic()

    def request(self) -> None:
        self._roll()
        self._requests += 1

    def try_retry(self) -> bool:
        """Charge one retry if the budget allows it."""
        self._roll()
        if self.retrying < self.minimum or self._retries < self.ratio * self._requests:
            self._retries += 1
            return True
        return False


class _Retry(Exception):
    def __init__(self, error: GatewayError) -> None:
        super().__init__(error.message)
        self.error = error


class Relay:
    def __init__(self, pool: Pool, transport: Transport, settings: Settings) -> None:
        self.pool = pool
        self.transport = transport
        self.first_byte_timeout = settings.first_byte_timeout
        self.idle_timeout = settings.idle_timeout
        self.max_event_bytes = settings.max_event_bytes
        self.budget = RetryBudget()

    async def send(self, request: ClientRequest, exchange: Exchange, forward: dict[str, str], key_tier: int,
                   key_headers: Mapping[str, str], *, owner: UpstreamState | None = None) -> Reply:
        """Send the request to the pool until an upstream answers; see the module docstring.

        With ``owner`` (the upstream that made the response a request continues) only that one is tried.
        """
        self.budget.request()
        names = request.model.names
        tried: set[str] = set()
        last: GatewayError | None = None
        retrying = False
        try:
            while True:
                if owner is not None:
                    if tried:
                        raise last or UpstreamError("The upstream that owns this response failed.")
                    state = owner
                else:
                    state = self._choose(request, key_tier, tried, last)
                tried.add(state.id)
                exchange.attempts += 1
                exchange.upstream, exchange.upstream_id = state.name, state.id
                try:
                    return await self._attempt(state, request, forward, key_headers, exchange)
                except _Retry as retry:
                    last = retry.error
                    if owner is not None or exchange.attempts >= MAX_ATTEMPTS or not self.budget.try_retry():
                        raise self._exhausted(last, names, key_tier) or last from None
                    if not retrying:
                        retrying = True
                        self.budget.retrying += 1
        finally:
            if retrying:
                self.budget.retrying -= 1

    def _choose(self, request: ClientRequest, key_tier: int, tried: set[str],
                last: GatewayError | None) -> UpstreamState:
        names = request.model.names
        try:
            return self.pool.choose(names, key_tier, sticky=request.sticky, exclude=frozenset(tried),
                                    strategy=request.model.balancer)
        except PoolExhausted as exc:
            raise RateLimitError(str(exc), retry_after=exc.retry_after, code="pool_exhausted") from None
        except NoUpstream as exc:
            raise self._exhausted(last, names, key_tier) or ServiceUnavailableError(str(exc)) from None

    def _exhausted(self, last: GatewayError | None, names: tuple[str, ...], key_tier: int) -> GatewayError | None:
        """When the last failure was an account's 429: a 429 pool_exhausted with the earliest recovery."""
        if not isinstance(last, RateLimitError):
            return last
        wait = self.pool.earliest_recovery(names, key_tier) or last.retry_after
        return RateLimitError(f"Every upstream for the model '{names[0]}' is rate-limited.", retry_after=wait,
                              code="pool_exhausted")

    async def _attempt(self, state: UpstreamState, request: ClientRequest, forward: dict[str, str],
                       key_headers: Mapping[str, str], exchange: Exchange) -> Reply:
        names = request.model.names
        url = state.record.base_url + PATHS[request.endpoint]
        body = request.upstream_body(state.upstream_model(names))
        with self.pool.lease(state, names) as lease:
            response: UpstreamResponse | None = None
            try:
                async with asyncio.timeout(self.first_byte_timeout):
                    response = await self.transport.send(
                        state.id, state.record.revision, url, {**forward, **state.headers}, body,
                        max_connections=state.record.max_concurrency)
                    del body
                    return await self._answer(response, lease, request, state, key_headers, exchange)
            except TimeoutError:
                lease.failed("timed out")
                raise _Retry(UpstreamTimeoutError("An upstream did not answer in time.")) from None
            except UpstreamTimedOut:
                lease.failed("timed out")
                raise _Retry(UpstreamTimeoutError("An upstream did not answer in time.")) from None
            except ReadFailed as exc:
                lease.failed("broke mid-answer")
                raise _Retry(UpstreamError(f"An upstream's answer was cut short ({exc}).")) from None
            except TransportError as exc:
                lease.failed("unreachable")
                raise _Retry(UpstreamError(f"Could not reach an upstream ({exc}).")) from None
            finally:
                if response is not None and exchange.first_byte is None:
                    response.close()  # not answered (a retry follows): the connection is not reused

    async def _answer(self, response: UpstreamResponse, lease: Lease, request: ClientRequest, state: UpstreamState,
                      key_headers: Mapping[str, str], exchange: Exchange) -> Reply:
        """What the answer's status and headers mean (see ``_classify``), before a byte reaches the client."""
        verdict, reason = classify(response.status, response.headers, request.stream)
        if verdict is Verdict.RATE_LIMITED:
            raise _Retry(RateLimitError(reason, retry_after=lease.rate_limited(response.headers)))
        if verdict is Verdict.FAILED:
            lease.failed(reason)
            raise _Retry(UpstreamError(reason))
        if verdict is Verdict.CLIENT_ERROR:
            return await self._client_error(response, state, key_headers, exchange)
        if verdict is Verdict.WHOLE:
            payload = await response.read()
            response.release()
            lease.succeeded(response.headers)
            return self._whole(payload, response, state, key_headers, exchange)
        first = await response.chunk()
        if not first:
            lease.failed("closed the stream at once")
            raise _Retry(UpstreamError("An upstream closed the stream before sending anything."))
        lease.succeeded(response.headers)
        exchange.first_byte = time.monotonic()
        exchange.status = response.status
        exchange.answered = True
        request.forget_body()  # no retry is possible any more: hold no copy of the body for the stream
        relay = StreamRelay(response, lease.hand_over(), request.endpoint, exchange,
                            drop_usage_chunk=request.injected_usage, idle_timeout=self.idle_timeout,
                            max_event=self.max_event_bytes)
        headers = _reply_headers(response.headers, key_headers, exchange.request_id, stream=True)
        return Reply(response.status, headers, stream=relay.events(first), media_type="text/event-stream")

    async def to_owner(self, state: UpstreamState, method: str, path: str, forward: dict[str, str], body: Body,
                       key_headers: Mapping[str, str], request_id: str) -> Reply:
        """One call to a given upstream, passed through as it answers (the per-response endpoints)."""
        with self.pool.lease(state, ()):
            try:
                async with asyncio.timeout(self.first_byte_timeout):
                    response = await self.transport.send(
                        state.id, state.record.revision, state.record.base_url + path, {**forward, **state.headers},
                        body, method=method, max_connections=state.record.max_concurrency)
                    try:
                        payload = await response.read()
                    finally:
                        response.release()
            except (TimeoutError, UpstreamTimedOut):
                raise UpstreamTimeoutError("The upstream did not answer in time.") from None
            except TransportError as exc:
                raise UpstreamError(f"Could not reach the upstream ({exc}).") from None
        if response.status >= 500:
            raise UpstreamError(f"The upstream answered with status {response.status}.")
        if not payload.lstrip().startswith((b"{", b"[")):
            payload = error_body(f"The upstream answered with status {response.status}.",
                                 "invalid_request_error" if response.status < 500 else "server_error", None)
        return Reply(response.status, _reply_headers(response.headers, key_headers, request_id),
                     body=state.redactor.scrub(payload))

    def _whole(self, payload: bytes, response: UpstreamResponse, state: UpstreamState,
               key_headers: Mapping[str, str], exchange: Exchange) -> Reply:
        """A complete (non-streamed) answer: pass it on, the credential scrubbed."""
        exchange.first_byte = exchange.ended = time.monotonic()
        exchange.status = response.status
        exchange.answered = True
        exchange.usage, exchange.response_id = read_answer(payload)
        return Reply(response.status, _reply_headers(response.headers, key_headers, exchange.request_id),
                     body=state.redactor.scrub(payload))

    async def _client_error(self, response: UpstreamResponse, state: UpstreamState,
                            key_headers: Mapping[str, str], exchange: Exchange) -> Reply:
        payload = await response.read()
        response.release()
        exchange.status = response.status
        exchange.first_byte = exchange.ended = time.monotonic()
        exchange.error = "upstream_rejected"
        exchange.usage, _ = read_answer(payload)
        if not payload.lstrip().startswith(b"{"):  # not an OpenAI envelope: make it one
            payload = error_body(f"The upstream refused the request (status {response.status}).",
                                 "invalid_request_error", "upstream_rejected")
        return Reply(response.status, _reply_headers(response.headers, key_headers, exchange.request_id),
                     body=state.redactor.scrub(payload))


def _reply_headers(upstream: Mapping[str, str], key_headers: Mapping[str, str], request_id: str,
                   *, stream: bool = False) -> dict[str, str]:
    headers = dict(key_headers)
    for name in RETURN_HEADERS:
        value = safe_value(upstream.get(name))
        if value is not None:
            headers[name] = value
    upstream_id = safe_value(upstream.get("x-request-id"))
    if upstream_id is not None:
        headers["x-upstream-request-id"] = upstream_id
    headers["x-request-id"] = request_id
    if stream:
        headers["cache-control"] = "no-cache"
    return headers
