"""``GET /v1/usage``: the calling key's own usage and what remains of its quotas."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from litestar import Response, get
from litestar.di import NamedDependency
from sqlalchemy.ext.asyncio import AsyncEngine

from app._types import AnyRequest
from app.quota import QuotaService, period_bounds
from app.routes._auth import authorize
from app.usage import key_totals
from keys import KeyCache, KeyRecord

__all__ = ["key_usage", "usage_body"]

_encode = msgspec.json.Encoder().encode


async def usage_body(key: KeyRecord, engine: AsyncEngine, quota: QuotaService) -> dict[str, Any]:
    """Today's and this month's usage of a key (from the hourly and daily totals), its limits, what is left."""
    now = datetime.now(UTC)
    day, _ = period_bounds("day", now)
    month, _ = period_bounds("month", now)
    quotas = key.policy.quotas
    budget = None
    if quotas.budget_usd is not None and quotas.budget_period is not None:
        start, end = period_bounds(quotas.budget_period, now)
        spent = quota.budgets.spent(key.id, quotas.budget_period, now)
        budget = {"limit_usd": quotas.budget_usd, "period": quotas.budget_period, "spent_usd": round(spent, 6),
                  "remaining_usd": round(max(0.0, quotas.budget_usd - spent), 6),
                  "period_start": start.isoformat(), "resets_at": end.isoformat()}
    return {
        "object": "usage",
        "key": {"id": key.id, "name": key.name},
        "today": await key_totals(engine, key.id, since=day, until=now),
        "this_month": await key_totals(engine, key.id, since=month, until=now),
        "last_24h": await key_totals(engine, key.id, since=now - timedelta(days=1), until=now),
        "limits": {
            "requests_per_minute": quotas.rpm, "requests_per_day": quotas.rpd,
            "tokens_per_minute": quotas.tpm, "tokens_per_day": quotas.tpd,
            "max_concurrency": quotas.max_concurrency,
            "in_flight": await quota.inflight(key.id),
        },
        "budget": budget,
        "generated_at": int(time.time()),
    }


@get("/v1/usage")
async def key_usage(request: AnyRequest, keys: NamedDependency[KeyCache], quota: NamedDependency[QuotaService],
                    engine: NamedDependency[AsyncEngine]) -> Response[bytes]:
    key, headers = await authorize(request, keys, quota)
    body = await usage_body(key, engine, quota)
    body["rate_limit_headers"] = headers
    return Response(content=_encode(body), media_type="application/json", headers=headers)
