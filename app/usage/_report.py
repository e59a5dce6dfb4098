"""Read-side usage queries: totals per key and model, for reports and limits.

Rows still ``started`` (requests in flight, or rows of a process not yet marked dead)
are left out everywhere here: they have not used or cost anything final yet.

Times are compared in UTC. A naive ``since`` is taken as UTC; an aware one is converted,
which matters on SQLite, where timestamps are stored as UTC text and compared as text.

This module must not import ``app.db``: ``app.db`` imports this package to register the table.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, Table, case, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.usage._table import UsageRow

__all__ = ["UsageSummary", "key_totals", "summarize"]

USAGE: Table = UsageRow.__table__  # type: ignore[attr-defined]
_TOKENS = ("input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens")


@dataclass(frozen=True, slots=True)
class UsageSummary:
    """One key's use of one model: finished requests (and how many did not end ``ok``), tokens, cost."""

    key_id: str
    model: str
    requests: int
    errors: int
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    reasoning_tokens: int
    cost_usd: float
    p50_latency_ms: float | None


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _filters(since: datetime | None, key_id: str | None, model: str | None) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = [USAGE.c.status != "started"]
    if since is not None:
        conditions.append(USAGE.c.started_at >= _utc(since))
    if key_id is not None:
        conditions.append(USAGE.c.key_id == key_id)
    if model is not None:
        conditions.append(USAGE.c.model == model)
    return conditions


def _sums() -> list[Any]:
    """Request count, token sums and cost, each labelled with its name (0 when nothing matched)."""
    return [
        func.count().label("requests"),
        *(func.coalesce(func.sum(USAGE.c[name]), 0).label(name) for name in _TOKENS),
        func.coalesce(func.sum(USAGE.c.cost_usd), 0.0).label("cost_usd"),
    ]


async def summarize(
    engine: AsyncEngine, *, since: datetime | None = None, key_id: str | None = None, model: str | None = None,
) -> list[UsageSummary]:
    """Usage grouped by (key, model), most expensive first (then most requests; then key and model).

    Counts, sums and errors (rows whose status is not ``ok``) are aggregated in the database.
    The median latency is not portable SQL, so the latencies of the matching rows are read in a
    second query (same connection and transaction) and the median of each group is taken in
    Python: memory grows with the number of matching rows, fine for moderate volumes (millions
    of rows per report would call for ``percentile_cont`` on PostgreSQL or a pre-aggregated table).
    Rows without a latency do not count towards it; a group with none has ``None``.
    """
    conditions = _filters(since, key_id, model)
    totals = (
        select(
            USAGE.c.key_id, USAGE.c.model, *_sums(),
            func.coalesce(func.sum(case((USAGE.c.status != "ok", 1), else_=0)), 0).label("errors"),
        )
        .where(*conditions)
        .group_by(USAGE.c.key_id, USAGE.c.model)
    )
    latencies_query = select(USAGE.c.key_id, USAGE.c.model, USAGE.c.latency_ms).where(
        *conditions, USAGE.c.latency_ms.is_not(None))
    latencies: dict[tuple[str, str], list[float]] = defaultdict(list)
    async with engine.connect() as conn:
        groups = (await conn.execute(totals)).all()
        for sample in await conn.execute(latencies_query):
            latencies[(sample.key_id, sample.model)].append(float(sample.latency_ms))

    summaries = []
    for row in groups:
        m = row._mapping
        values = latencies.get((row.key_id, row.model))
        summaries.append(UsageSummary(
            key_id=row.key_id, model=row.model, requests=int(m["requests"]), errors=int(m["errors"]),
            input_tokens=int(m["input_tokens"]), output_tokens=int(m["output_tokens"]),
            cached_tokens=int(m["cached_tokens"]), reasoning_tokens=int(m["reasoning_tokens"]),
            cost_usd=float(m["cost_usd"]), p50_latency_ms=statistics.median(values) if values else None,
        ))
    summaries.sort(key=lambda s: (-s.cost_usd, -s.requests, s.key_id, s.model))
    return summaries


async def key_totals(engine: AsyncEngine, key_id: str, *, since: datetime) -> dict[str, float | int]:
    """One key's finished requests, tokens and cost since ``since`` (inclusive), all models together.

    Keys: ``requests``, ``input_tokens``, ``output_tokens``, ``cached_tokens``, ``reasoning_tokens``
    (ints) and ``cost_usd`` (float); all zero when the key has no such rows.
    """
    query = select(*_sums()).where(*_filters(since, key_id, None))
    async with engine.connect() as conn:
        m = (await conn.execute(query)).one()._mapping
    totals: dict[str, float | int] = {name: int(m[name]) for name in ("requests", *_TOKENS)}
    totals["cost_usd"] = float(m["cost_usd"])
    return totals
