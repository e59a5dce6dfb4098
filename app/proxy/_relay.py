"""Relaying one request to the pool: choose, call, retry before the first byte, stream after it.

What reaches the client is decided here: an upstream's success or a client-caused error
passes through; an upstream failure (5xx, timeout, refused connection, a 429 of the
shared account) moves the request to another upstream while nothing has been sent,
within a retry budget. Once the first byte is out, a failure ends the stream with an
error event and no ``[DONE]``.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import anyio
from litestar import Response
from litestar.background_tasks import BackgroundTask
from litestar.response import Stream

from app.errors import (
    GatewayError,
    RateLimitError,
    ServiceUnavailableError,
    UpstreamError,
    UpstreamTimeoutError,
    error_body,
    sse_error_frame,
)
from app.pool import NoUpstream, Pool, PoolExhausted, UpstreamState
from app.proxy._request import ClientRequest
from app.proxy._usage import StreamUsage, Usage, usage_from_body
from app.settings import Settings

__all__ = ["Outcome", "Relay", "RetryBudget"]

log = logging.getLogger("poolgate.access")

PATHS = {"chat_completions": "/chat/completions", "responses": "/responses", "embeddings": "/embeddings"}
MAX_ATTEMPTS = 3
# Client headers an upstream may see; everything else (the client's credential above all) stays here.
FORWARD_HEADERS = frozenset({
    "accept", "user-agent", "openai-beta", "idempotency-key", "originator", "session-id", "session_id", "thread-id",
    "x-client-request-id", "conversation_id", "x-stainless-lang", "x-stainless-package-version",
    "x-stainless-os", "x-stainless-arch", "x-stainless-runtime", "x-stainless-runtime-version",
})
FORWARD_PREFIXES = ("x-codex-",)
RETURN_HEADERS = ("x-request-id", "openai-processing-ms")


@dataclass(slots=True)
class Outcome:
    """What one request did; read by usage accounting and the access log."""

    key_id: str
    model: str
    endpoint: str
    stream: bool
    request_id: str = field(default_factory=lambda: "req_" + secrets.token_hex(12))
    upstream: str | None = None
    status: int = 0
    attempts: int = 0
    usage: Usage | None = None
    started: float = field(default_factory=time.monotonic)
    first_byte: float | None = None
    finished: float | None = None
    error: str | None = None
    events: int = 0
    """Events relayed so far; estimates the output of a stream cut before it reported usage."""
    on_finish: Callable[[Outcome], Awaitable[None]] | None = None
    _done: bool = False

    async def finish(self) -> None:
        """Once per request, however it ended: account for it, then log it."""
        if self._done:
            return
        self._done = True
        if self.finished is None:
            self.finished = time.monotonic()
        # Shielded: an abandoned stream ends inside the framework's cancelled scope, and accounting
        # that waits on the network (Redis quotas) would otherwise be cut off at its first await.
        with anyio.CancelScope(shield=True):
            if self.on_finish is not None:
                try:
                    await self.on_finish(self)
                except Exception:
                    log.exception("accounting for request %s failed", self.request_id)
        self.log()

    def log(self) -> None:
        if not log.isEnabledFor(logging.INFO):
            return
        usage = self.usage or Usage()
        end = self.finished or time.monotonic()
        ttfb = "-" if self.first_byte is None else f"{(self.first_byte - self.started) * 1000:.1f}"
        log.info(
            "key=%s model=%s endpoint=%s upstream=%s status=%s stream=%s attempts=%d tokens_in=%d tokens_out=%d "
            "cached=%d reasoning=%d latency_ms=%.1f ttfb_ms=%s%s",
            self.key_id, self.model, self.endpoint, self.upstream or "-", self.status, self.stream, self.attempts,
            usage.input_tokens, usage.output_tokens, usage.cached_tokens, usage.reasoning_tokens,
            (end - self.started) * 1000, ttfb, f" error={self.error}" if self.error else "",
        )


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
    def __init__(self, pool: Pool, settings: Settings) -> None:
        self.pool = pool
        self.settings = settings
        self.budget = RetryBudget()
        self._sessions: dict[str, tuple[int, aiohttp.ClientSession]] = {}
        # No sock_read here: it would also cap the wait for headers. The idle gap is enforced
        # per read of a stream instead, and the first byte by its own timeout.
        self._timeout = aiohttp.ClientTimeout(total=settings.total_timeout, connect=settings.connect_timeout)

    def _session(self, state: UpstreamState) -> aiohttp.ClientSession:
        """One pooled session per upstream and revision: an edit (say, of its concurrency) gets a fresh pool."""
        revision = state.record.revision
        held = self._sessions.get(state.id)
        if held is not None and held[0] == revision and not held[1].closed:
            return held[1]
        if held is not None:
            asyncio.get_running_loop().create_task(held[1].close())  # requests on it finish first
        connector = aiohttp.TCPConnector(limit=state.record.max_concurrency or 0, keepalive_timeout=60,
                                         ttl_dns_cache=300)
        session = aiohttp.ClientSession(connector=connector, timeout=self._timeout, auto_decompress=False,
                                        skip_auto_headers=("User-Agent", "Accept-Encoding"))
        self._sessions[state.id] = (revision, session)
        return session

    async def prune(self) -> None:
        """Close the connections of upstreams that left the pool."""
        for upstream_id in [i for i in self._sessions if i not in self.pool.states]:
            await self._sessions.pop(upstream_id)[1].close()

    async def close(self) -> None:
        for _, session in self._sessions.values():
            await session.close()
        self._sessions.clear()

    async def relay(
        self, request: ClientRequest, client_headers: Mapping[str, str], key_tier: int, key_headers: dict[str, str],
        outcome: Outcome,
    ) -> Response[Any]:
        """Send the request to the pool until an upstream answers; see the module docstring."""
        forward = {name: value for name, value in client_headers.items()
                   if name in FORWARD_HEADERS or name.startswith(FORWARD_PREFIXES)}
        forward["content-type"] = "application/json"
        forward["accept-encoding"] = "identity"  # bodies pass through as they are: never compressed ones
        forward.setdefault("accept", "text/event-stream" if request.stream else "application/json")
        self.budget.request()
        names = request.model.names
        tried: set[str] = set()
        last: GatewayError | None = None
        retrying = False
        try:
            while True:
                try:
                    state = self.pool.choose(names, key_tier, sticky=request.sticky, exclude=frozenset(tried),
                                             strategy=request.model.balancer)
                except PoolExhausted as exc:
                    raise RateLimitError(str(exc), retry_after=exc.retry_after, code="pool_exhausted") from None
                except NoUpstream as exc:
                    raise self._exhausted(last, names, key_tier) or ServiceUnavailableError(str(exc)) from None
                tried.add(state.id)
                outcome.attempts += 1
                outcome.upstream = state.name
                try:
                    return await self._attempt(state, request, forward, key_headers, outcome)
                except _Retry as retry:
                    last = retry.error
                    if outcome.attempts >= MAX_ATTEMPTS or not self.budget.try_retry():
                        raise self._exhausted(last, names, key_tier) or last from None
                    if not retrying:
                        retrying = True
                        self.budget.retrying += 1
        finally:
            if retrying:
                self.budget.retrying -= 1

    def _exhausted(self, last: GatewayError | None, names: tuple[str, ...], key_tier: int) -> GatewayError | None:
        """When the last failure was an account's 429: a 429 pool_exhausted with the earliest recovery."""
        if not isinstance(last, RateLimitError):
            return last
        wait = self.pool.earliest_recovery(names, key_tier) or last.retry_after
        return RateLimitError(f"Every upstream for the model '{names[0]}' is rate-limited.", retry_after=wait,
                              code="pool_exhausted")

    async def _attempt(
        self, state: UpstreamState, request: ClientRequest, forward: dict[str, str], key_headers: dict[str, str],
        outcome: Outcome,
    ) -> Response[Any]:
        url = state.record.base_url + PATHS[request.endpoint]
        body = request.upstream_body(state.upstream_model(request.model.names))
        names = request.model.names
        clock = self.pool.clock
        started = clock()
        state.inflight += 1
        handed_over = False
        response: aiohttp.ClientResponse | None = None
        try:
            try:
                async with asyncio.timeout(self.settings.first_byte_timeout):
                    response = await self._session(state).post(
                        url, data=body, headers={**forward, **state.headers}, allow_redirects=False)
                    status = response.status
                    if status == 429:
                        wait = self.pool.report_rate_limited(state, response.headers)
                        raise _Retry(RateLimitError("The upstream account is rate-limited.", retry_after=wait))
                    if status >= 500 or status in (401, 407):  # the upstream's fault, or our credential for it
                        self.pool.report_failure(state, names)
                        raise _Retry(UpstreamError(f"An upstream answered with status {status}."))
                    if 300 <= status < 400:
                        self.pool.report_failure(state, names)
                        raise _Retry(UpstreamError(f"An upstream answered with a redirect ({status})."))
                    if status >= 400:  # the client's request is at fault: pass the answer on, never count it
                        return await self._client_error(response, state, key_headers, outcome)
                    if not request.stream or not _is_event_stream(response):
                        return await self._whole(response, state, names, started, key_headers, outcome)
                    first = await response.content.readany()
                    if not first:
                        self.pool.report_failure(state, names)
                        raise _Retry(UpstreamError("An upstream closed the stream before sending anything."))
            except TimeoutError:
                self.pool.report_failure(state, names)
                raise _Retry(UpstreamTimeoutError("An upstream did not answer in time.")) from None
            except aiohttp.ClientError as exc:
                self.pool.report_failure(state, names)
                raise _Retry(UpstreamError(f"Could not reach an upstream ({exc.__class__.__name__}).")) from None
            state.succeeded(clock() - started, response.headers)
            outcome.first_byte = time.monotonic()
            outcome.status = status
            relay = _StreamRelay(response, state, request, outcome, self.pool, self.settings.idle_timeout)
            handed_over = True
            return Stream(
                relay.chunks(first), status_code=status, media_type="text/event-stream",
                headers={**_headers(response, key_headers), "cache-control": "no-cache"},
                background=BackgroundTask(relay.close),  # runs even when the client left mid-stream
            )
        finally:
            if not handed_over:
                state.inflight -= 1
                if response is not None:
                    response.release()

    async def _whole(
        self, response: aiohttp.ClientResponse, state: UpstreamState, names: tuple[str, ...], started: float,
        key_headers: dict[str, str], outcome: Outcome,
    ) -> Response[bytes]:
        """A complete (non-streamed) answer: read, check it is JSON, pass it on."""
        if "json" not in response.headers.get("content-type", ""):
            self.pool.report_failure(state, names)
            raise _Retry(UpstreamError("An upstream answered with something that is not JSON."))
        payload = await response.read()
        state.succeeded(self.pool.clock() - started, response.headers)
        outcome.first_byte = outcome.finished = time.monotonic()
        outcome.status = response.status
        outcome.usage = usage_from_body(payload)
        return Response(content=payload, status_code=response.status,
                        media_type=response.headers.get("content-type", "application/json"),
                        headers=_headers(response, key_headers))

    async def _client_error(
        self, response: aiohttp.ClientResponse, state: UpstreamState, key_headers: dict[str, str], outcome: Outcome
    ) -> Response[bytes]:
        payload = await response.read()
        outcome.status = response.status
        outcome.first_byte = outcome.finished = time.monotonic()
        if not payload.lstrip().startswith(b"{"):  # not an OpenAI envelope: make it one
            payload = error_body(f"The upstream refused the request (status {response.status}).",
                                 "invalid_request_error", "upstream_rejected")
        payload = _scrub(payload, state)
        return Response(content=payload, status_code=response.status, media_type="application/json",
                        headers=_headers(response, key_headers))


class _StreamRelay:
    """Relays one upstream stream event by event, and cleans up exactly once however it ends.

    Chunks are passed on up to their last complete event; a partial event waits for its
    end, so an error frame can never be glued onto half an event. A stream that ends
    without its final marker (``[DONE]``, ``response.completed``) was cut: it ends with
    an error event rather than looking complete.
    """

    def __init__(self, response: aiohttp.ClientResponse, state: UpstreamState, request: ClientRequest,
                 outcome: Outcome, pool: Pool, idle_timeout: float) -> None:
        self.response, self.state, self.outcome, self.pool = response, state, outcome, pool
        self.endpoint = request.endpoint
        self.names = request.model.names
        self.idle_timeout = idle_timeout
        self.drop_usage_chunk = request.injected_usage
        self.usage = StreamUsage()
        self.finished = False
        self._closed = False

    async def chunks(self, first: bytes) -> AsyncIterator[bytes]:
        pending = b""
        data = first
        failure: GatewayError | None = None
        try:
            while True:
                if data:
                    cut = data.rfind(b"\n\n") + 2
                    ready, pending = (pending + data[:cut], data[cut:]) if cut >= 2 else (b"", pending + data)
                    if ready:
                        if not self.finished and any(mark in ready for mark in _FINAL[self.endpoint]):
                            self.finished = True
                        self.usage.feed(ready)
                        self.outcome.events += ready.count(b"\n\n")
                        if self.drop_usage_chunk and b'"usage":{' in ready:
                            ready = _without_usage_chunks(ready)
                        yield ready
                if failure is not None:
                    yield self._error(failure)
                    return
                try:
                    async with asyncio.timeout(self.idle_timeout):
                        data = await self.response.content.readany()
                except TimeoutError:
                    self.pool.report_failure(self.state, self.names)
                    failure, data = UpstreamTimeoutError("The upstream stopped sending."), b""
                    continue
                except aiohttp.ClientError:
                    self.pool.report_failure(self.state, self.names)
                    # Events that arrived before the connection broke are still the client's.
                    failure = UpstreamError("The upstream connection failed mid-stream.")
                    data = _received_before_failure(self.response.content)
                    continue
                if not data:  # end of the upstream's body
                    if pending.strip():
                        yield pending
                    if not self.finished:
                        yield self._error(UpstreamError("The upstream ended the stream before it was complete."))
                    return
        finally:
            await self.close()

    def _error(self, error: GatewayError) -> bytes:
        self.outcome.error = error.code
        return sse_error_frame(error, self.endpoint)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.state.inflight -= 1
        if not self.finished and self.outcome.error is None:
            self.outcome.error = "client_closed"  # the client left before the stream's end
        self.outcome.usage = self.usage.usage
        self.outcome.finished = time.monotonic()
        if self.response.content.is_eof():
            self.response.release()  # the connection goes back to the pool
        else:
            self.response.close()  # the client left mid-stream: close it so the upstream stops at once
        await self.outcome.finish()


_FINAL = {
    "chat_completions": (b"data: [DONE]",),
    "responses": (b"response.completed", b"response.failed", b"response.incomplete"),
    "embeddings": (b"",),
}


def _without_usage_chunks(events: bytes) -> bytes:
    """Drop chat chunks that only carry usage (``"choices":[]``): the client did not ask for them."""
    kept = [e for e in events.split(b"\n\n") if not (b'"usage":{' in e and b'"choices":[]' in e)]
    return b"\n\n".join(kept)


def _received_before_failure(content: aiohttp.StreamReader) -> bytes:
    """What aiohttp had buffered when the connection failed: its read methods raise instead of returning it."""
    return b"".join(getattr(content, "_buffer", ()))


def _is_event_stream(response: aiohttp.ClientResponse) -> bool:
    return response.headers.get("content-type", "").startswith("text/event-stream")


def _headers(response: aiohttp.ClientResponse, key_headers: dict[str, str]) -> dict[str, str]:
    headers = dict(key_headers)
    for name in RETURN_HEADERS:
        value = response.headers.get(name)
        if value is not None:
            headers[name] = value
    return headers


def _scrub(payload: bytes, state: UpstreamState) -> bytes:
    """An upstream's error may quote the credential it was sent; never let that reach a client."""
    auth = state.headers.get("authorization", "")
    secret = auth.removeprefix("Bearer ").encode()
    if len(secret) >= 8 and secret in payload:
        payload = payload.replace(secret, b"***")
    if len(secret) > 16:  # partial quotes such as "sk-proj-abc...wxyz"
        payload = payload.replace(secret[-8:], b"***")
    return payload
