"""One proxied request from start to end: check, reserve, relay, and account in one ``finally``.

The route hands over the calling key and the body; what comes back is a :class:`Reply` whose
stream (if any) accounts for the request when it ends, however it ends: the client's quotas
settle to the real usage, the usage row is finished, metrics count it and the access log says it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import TYPE_CHECKING

from app._types import Body
from app.catalog import CatalogService, ModelInfo
from app.errors import GatewayError
from app.proxy._exchange import Exchange, Reply
from app.proxy._relay import Relay, forward_headers
from app.proxy._request import ClientRequest, parse_request
from app.proxy._usage import Usage
from app.quota import OutputEstimates, QuotaService, Reservation
from app.usage import UsageRecorder
from keys import KeyRecord

if TYPE_CHECKING:
    from app.metrics import Metrics
    from app.pool import UpstreamState

__all__ = ["CLIENT_CLOSED", "ProxyService", "cost_usd"]

access_log = logging.getLogger("poolgate.access")
log = logging.getLogger("poolgate.proxy")

CLIENT_CLOSED = 499
"""The status usage rows and metrics record for a request whose client left first (nginx's convention);
no client ever receives it, since the client is gone."""


def cost_usd(model: ModelInfo, usage: Usage, service_tier: str | None = None) -> float:
    """USD from the catalog's prices per million tokens, on the service tier that served it (the standard
    prices where the catalog does not know that tier's); cached input at the cache-read price."""
    if model.pricing is None:
        return 0.0
    price = model.pricing.for_tier(service_tier)
    uncached = max(0, usage.input_tokens - usage.cached_tokens)
    cached_price = price.cache_read if price.cache_read is not None else price.input
    return (uncached * (price.input or 0.0) + usage.cached_tokens * (cached_price or 0.0)
            + usage.output_tokens * (price.output or 0.0)) / 1_000_000


class ProxyService:
    def __init__(self, relay: Relay, catalog: CatalogService, quota: QuotaService, recorder: UsageRecorder,
                 metrics: Metrics | None = None, estimates: OutputEstimates | None = None,
                 owner_of: Callable[[ClientRequest, KeyRecord], Awaitable[UpstreamState | None]] | None = None,
                 on_answer: Callable[[Exchange], Awaitable[None]] | None = None) -> None:
        self.relay = relay
        self.catalog = catalog
        self.quota = quota
        self.recorder = recorder
        self.metrics = metrics
        self.estimates = estimates or OutputEstimates()
        self.owner_of = owner_of
        """The upstream a request must go to (the owner of the response it continues), if any; raises
        a GatewayError when that owner cannot serve."""
        self.on_answer = on_answer
        """Told of a Responses answer as soon as its id is known, and awaited before the client sees more:
        a follow-up the client sends at once (to any replica) finds the response's owner."""

    async def handle(self, key: KeyRecord, endpoint: str, raw: Body, headers: Mapping[str, str],
                     key_headers: Mapping[str, str], *, transport: str = "http") -> Reply:
        """Check and relay one request; raises the client-facing GatewayError (its headers set)."""
        request = parse_request(raw, endpoint, key, self.catalog.catalog, headers)
        del raw
        model = request.model
        estimate = request.size // 4 + 1
        if endpoint != "embeddings":
            estimate += request.max_output or self.estimates.guess(key.id, model.id, model.max_output_tokens)
        reservation, token_headers = await self.quota.reserve(key, estimate)
        reply_headers = {**key_headers, **token_headers}
        exchange = Exchange(key.id, model.id, endpoint, request.stream, transport=transport)
        exchange.service_tier = request.service_tier
        self.recorder.started(exchange.request_id, {
            "key_id": key.id, "model": model.id, "endpoint": endpoint, "stream": request.stream,
            "started_at": exchange.started_wall,
        })
        try:
            owner = await self.owner_of(request, key) if self.owner_of is not None else None
            reply = await self.relay.send(request, exchange, forward_headers(headers, request.stream),
                                          key.policy.tier, reply_headers, owner=owner)
        except GatewayError as exc:
            exchange.status, exchange.error = exc.status_code, exc.code
            exc.headers = {**reply_headers, **exc.headers, "x-request-id": exchange.request_id}
            await self._account(exchange, reservation, request, key)
            raise
        except BaseException:  # cancelled: the client left before any answer
            exchange.status, exchange.error = CLIENT_CLOSED, "client_closed"
            await self._account(exchange, reservation, request, key)
            raise
        if reply.stream is None:
            await self._answered(exchange)
            await self._account(exchange, reservation, request, key)
            return reply
        reply.stream = self._accounted(reply.stream, exchange, reservation, request, key)
        return reply

    async def _accounted(self, stream: AsyncIterator[bytes], exchange: Exchange, reservation: Reservation,
                         request: ClientRequest, key: KeyRecord) -> AsyncIterator[bytes]:
        told = False
        try:
            async for chunk in stream:
                if not told and exchange.response_id is not None:
                    told = True
                    await self._answered(exchange)
                yield chunk
        finally:
            await stream.aclose()  # type: ignore[attr-defined]  # the relay's own cleanup first
            await self._account(exchange, reservation, request, key)

    async def _answered(self, exchange: Exchange) -> None:
        if self.on_answer is not None and exchange.answered and exchange.response_id is not None:
            await self.on_answer(exchange)

    async def _account(self, exchange: Exchange, reservation: Reservation, request: ClientRequest,
                       key: KeyRecord) -> None:
        """Settle the key's quotas and queue the usage row; never raises (an accounting failure is logged)."""
        try:
            if exchange.ended is None:
                exchange.ended = time.monotonic()
            reported = exchange.usage
            usage = reported
            if usage is None and exchange.answered and exchange.stream:
                # A stream cut before the upstream reported usage: estimated from what was relayed.
                usage = Usage(input_tokens=request.size // 4 + 1, output_tokens=exchange.events)
            usage = usage or Usage()  # an upstream error before the first byte costs the key nothing
            cost = cost_usd(request.model, usage, exchange.service_tier)
            if reported is not None and exchange.answered:
                self.estimates.observe(key.id, request.model.id, reported.output_tokens)
            if exchange.status == 0:
                exchange.status = CLIENT_CLOSED if exchange.error == "client_closed" else 502
            if exchange.status < 400 and exchange.error is None:
                status = "ok"
            elif exchange.status == CLIENT_CLOSED or exchange.error == "client_closed":
                status = "client_closed"
            else:
                status = "error"
            latency = exchange.ended - exchange.started
            ttfb = None if exchange.first_byte is None else exchange.first_byte - exchange.started
            self.recorder.finished(exchange.request_id, {
                "upstream": exchange.upstream, "status": status, "http_status": exchange.status,
                "input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens,
                "cached_tokens": usage.cached_tokens, "reasoning_tokens": usage.reasoning_tokens, "cost_usd": cost,
                "latency_ms": latency * 1000, "ttfb_ms": None if ttfb is None else ttfb * 1000,
                "error": exchange.error, "finished_at": time.time(),
            })
            if self.metrics is not None:
                self.metrics.request(
                    key_id=exchange.key_id, model=exchange.model, upstream=exchange.upstream,
                    endpoint=exchange.endpoint, status=exchange.status, latency_s=latency, ttfb_s=ttfb,
                    input_tokens=usage.input_tokens, output_tokens=usage.output_tokens,
                    cached_tokens=usage.cached_tokens, reasoning_tokens=usage.reasoning_tokens, cost_usd=cost,
                )
            if access_log.isEnabledFor(logging.INFO):
                _log(exchange, usage, latency, ttfb)
            # Shielded: an abandoned request ends inside a cancelled task, and settling quotas on Redis
            # awaits the network; the settlement finishes even if this await is cut short.
            await asyncio.shield(self.quota.settle(reservation, usage.input_tokens + usage.output_tokens, cost))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("accounting for request %s failed", exchange.request_id)


def _log(exchange: Exchange, usage: Usage, latency: float, ttfb: float | None) -> None:
    access_log.info(
        f"key={exchange.key_id} model={exchange.model} endpoint={exchange.endpoint} transport={exchange.transport} "
        f"upstream={exchange.upstream or '-'} status={exchange.status} stream={exchange.stream} "
        f"attempts={exchange.attempts} tokens_in={usage.input_tokens} tokens_out={usage.output_tokens} "
        f"cached={usage.cached_tokens} reasoning={usage.reasoning_tokens} latency_ms={latency * 1000:.1f} "
        f"ttfb_ms={'-' if ttfb is None else f'{ttfb * 1000:.1f}'} request_id={exchange.request_id}"
        + (f" error={exchange.error}" if exchange.error else "")
    )
