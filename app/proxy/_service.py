"""One proxied request from start to end: read, check, relay, account."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from litestar import Response
from litestar.response import Stream

from app._types import AnyRequest
from app.catalog import CatalogService, ModelInfo
from app.errors import GatewayError
from app.proxy._relay import Outcome, Relay
from app.proxy._request import ClientRequest, parse_request
from app.proxy._usage import Usage
from app.quota import QuotaService, Reservation
from app.usage._recorder import UsageRecorder
from keys import KeyRecord

if TYPE_CHECKING:
    from app.metrics import Metrics

__all__ = ["CLIENT_CLOSED", "ProxyService"]

CLIENT_CLOSED = 499  # the conventional status for "the client went away first"; never sent


class ProxyService:
    def __init__(self, relay: Relay, catalog: CatalogService, quota: QuotaService, recorder: UsageRecorder,
                 metrics: Metrics | None = None) -> None:
        self.relay = relay
        self.catalog = catalog
        self.quota = quota
        self.recorder = recorder
        self.metrics = metrics

    async def handle(
        self, request: AnyRequest, endpoint: str, key: KeyRecord, key_headers: dict[str, str]
    ) -> Response[Any]:
        raw = await request.body()
        client_request = parse_request(raw, endpoint, key, self.catalog.catalog, request.headers)
        reservation, token_headers = await self.quota.reserve(key, client_request.estimate_tokens)
        headers = {**key_headers, **token_headers}
        request.scope["state"]["ratelimit_headers"] = headers
        outcome = Outcome(key.id, client_request.model.id, endpoint, client_request.stream)
        outcome.on_finish = lambda done: self._account(done, client_request, reservation)
        self.recorder.started(outcome.request_id, {
            "key_id": key.id, "model": outcome.model, "endpoint": endpoint, "stream": outcome.stream,
            "started_at": datetime.now(UTC),
        })
        try:
            response = await _unless_client_leaves(
                request, self.relay.relay(client_request, request.headers, key.policy.tier, headers, outcome)
            )
        except GatewayError as exc:
            outcome.status, outcome.error = exc.status_code, exc.code
            await outcome.finish()
            raise
        except BaseException:
            outcome.status, outcome.error = CLIENT_CLOSED, "cancelled"
            await asyncio.shield(outcome.finish())
            raise
        if response is None:
            outcome.status, outcome.error = CLIENT_CLOSED, "client_closed"
            await outcome.finish()
            return Response(content=b"", status_code=CLIENT_CLOSED)
        if not isinstance(response, Stream):
            await outcome.finish()  # a stream finishes itself when it ends
        return response

    async def _account(self, outcome: Outcome, client_request: ClientRequest, reservation: Reservation) -> None:
        """Settle the key's quotas and queue the usage row (tokens estimated when none were reported)."""
        usage = outcome.usage
        if usage is None and outcome.first_byte is not None:  # cut off before the upstream reported usage
            usage = Usage(input_tokens=len(client_request.raw) // 4 + 1, output_tokens=outcome.events)
        usage = usage or Usage()
        cost = _cost(client_request.model, usage)
        await self.quota.settle(reservation, usage.input_tokens + usage.output_tokens, cost)
        end = outcome.finished or time.monotonic()
        status = "ok" if outcome.status < 400 and outcome.error is None else (
            "client_closed" if outcome.status == CLIENT_CLOSED or outcome.error == "client_closed" else "error")
        self.recorder.finished(outcome.request_id, {
            "upstream": outcome.upstream, "status": status, "http_status": outcome.status or None,
            "input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens,
            "cached_tokens": usage.cached_tokens, "reasoning_tokens": usage.reasoning_tokens, "cost_usd": cost,
            "latency_ms": (end - outcome.started) * 1000,
            "ttfb_ms": None if outcome.first_byte is None else (outcome.first_byte - outcome.started) * 1000,
            "error": outcome.error, "finished_at": datetime.now(UTC),
        })
        if self.metrics is not None:
            self.metrics.request(
                key_id=outcome.key_id, model=outcome.model, upstream=outcome.upstream, endpoint=outcome.endpoint,
                status=outcome.status, latency_s=end - outcome.started,
                ttfb_s=None if outcome.first_byte is None else outcome.first_byte - outcome.started,
                input_tokens=usage.input_tokens, output_tokens=usage.output_tokens,
                cached_tokens=usage.cached_tokens, reasoning_tokens=usage.reasoning_tokens, cost_usd=cost,
            )


def _cost(model: ModelInfo, usage: Usage) -> float:
    """USD from the catalog's prices per million tokens; cached input at the cache-read price."""
    price = model.pricing
    if price is None:
        return 0.0
    uncached = max(0, usage.input_tokens - usage.cached_tokens)
    cached_price = price.cache_read if price.cache_read is not None else price.input
    return (uncached * (price.input or 0.0) + usage.cached_tokens * (cached_price or 0.0)
            + usage.output_tokens * (price.output or 0.0)) / 1_000_000


async def _unless_client_leaves(request: AnyRequest, work: Awaitable[Response[Any]]) -> Response[Any] | None:
    """Run ``work`` until it answers, or cancel it (and the upstream call in it) if the client disconnects.

    Once a stream is handed to the framework, the framework's own disconnect watch takes over.
    """
    task: asyncio.Task[Response[Any]] = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait((task, watcher), return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():  # this handler itself was cancelled: take the upstream call down with it
            task.cancel()
    if task.done():
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return None


async def _disconnected(request: AnyRequest) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return
