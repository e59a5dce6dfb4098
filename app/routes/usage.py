"""``GET /v1/usage`` (the calling key's own usage and what remains) and ``GET /metrics``."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import msgspec
from litestar import Response, get

from app._types import AnyRequest
from app.metrics import CONTENT_TYPE
from app.quota import period_bounds
from app.routes._auth import authorize
from app.services import Services
from app.usage import key_totals

__all__ = ["key_usage", "metrics"]

_encode = msgspec.json.Encoder().encode


@get("/v1/usage")
async def key_usage(request: AnyRequest, services: Services) -> Response[bytes]:
    """Today's and this month's usage of the calling key, its limits and what is left of them."""
    key, headers = await authorize(request, services)
    now = datetime.now(UTC)
    day, _ = period_bounds("day", now)
    month, _ = period_bounds("month", now)
    quotas = key.policy.quotas
    budget = None
    if quotas.budget_usd is not None and quotas.budget_period is not None:
        start, end = period_bounds(quotas.budget_period, now)
        spent = services.quota.budgets.spent(key.id, quotas.budget_period, now)
        budget = {"limit_usd": quotas.budget_usd, "period": quotas.budget_period, "spent_usd": round(spent, 6),
                  "remaining_usd": round(max(0.0, quotas.budget_usd - spent), 6),
                  "period_start": start.isoformat(), "resets_at": end.isoformat()}
    body = {
        "object": "usage",
        "key": {"id": key.id, "name": key.name},
        "today": await key_totals(services.engine, key.id, since=day),
        "this_month": await key_totals(services.engine, key.id, since=month),
        "last_24h": await key_totals(services.engine, key.id, since=now - timedelta(days=1)),
        "limits": {
            "requests_per_minute": quotas.rpm, "requests_per_day": quotas.rpd,
            "tokens_per_minute": quotas.tpm, "tokens_per_day": quotas.tpd,
            "max_concurrency": quotas.max_concurrency,
            "in_flight": await services.quota.inflight(key.id),
        },
        "budget": budget,
        "rate_limit_headers": headers,
        "generated_at": int(time.time()),
    }
    return Response(content=_encode(body), media_type="application/json", headers=headers)


@get("/metrics")
async def metrics(services: Services) -> Response[bytes]:
    now = services.pool.clock()
    snapshot = [state.snapshot(now) for state in services.pool.states.values()]
    return Response(content=services.metrics.render(snapshot), media_type=CONTENT_TYPE)
