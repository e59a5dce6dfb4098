"""Reports read from the hourly and daily usage totals, not from the rows.

A range is covered by daily totals for its whole days, hourly totals for the whole hours around
them, and the rows themselves only for the part of an hour at either end that the range cuts (a
range ending now takes the current hour's totals whole). So a report over a month of a busy
gateway reads a few thousand totals and at most two hours of rows. Latency percentiles are
estimated from the totals' histogram (bounds in ``LATENCY_BOUNDS_MS``), interpolated within a
bucket as Prometheus does. Requests still running (and rows not yet written) are not counted yet.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import BigInteger, Integer, Table, and_, case, cast, func, literal, select, union_all
from sqlalchemy.ext.asyncio import AsyncEngine

from app.usage._rollup import DAY, HOUR, latency_percentile
from app.usage._table import LATENCY_BOUNDS_MS, ROLLUP_COUNTS, UsageRow, rollup_tables

__all__ = ["GROUPS", "Totals", "UsageSummary", "key_totals", "merge", "spend_since", "summarize", "timeseries"]

HOURLY, DAILY = rollup_tables()
USAGE: Table = UsageRow.__table__  # type: ignore[attr-defined]
GROUPS = ("key", "model", "upstream", "day", "hour")
_LAT = [f"lat_{i:02d}" for i in range(len(LATENCY_BOUNDS_MS) + 1)]
_SUMMED = [*ROLLUP_COUNTS, "cost_usd", "latency_ms_sum", *_LAT]
MAX_HOURS = 24 * 93  # group_by=hour reads hourly totals only: up to about three months of them


@dataclass(frozen=True, slots=True)
class Totals:
    requests: int = 0
    errors: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    cost_usd: float = 0.0
    latency_ms_sum: float = 0.0
    histogram: tuple[int, ...] = ()

    def latency(self, fraction: float) -> float | None:
        return latency_percentile(list(self.histogram), fraction) if self.histogram else None

    def as_dict(self) -> dict[str, Any]:
        timed = sum(self.histogram)
        return {
            "requests": self.requests, "errors": self.errors, "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens, "cached_tokens": self.cached_tokens,
            "reasoning_tokens": self.reasoning_tokens, "cost_usd": round(self.cost_usd, 10),
            "latency_ms": {
                "mean": round(self.latency_ms_sum / timed, 1) if timed else None,
                "p50": _round(self.latency(0.5)), "p95": _round(self.latency(0.95)), "p99": _round(self.latency(0.99)),
            },
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


@dataclass(frozen=True, slots=True)
class UsageSummary:
    """One group's totals; ``group`` holds the grouping values (``key``, ``model``, ... as asked)."""

    group: dict[str, Any]
    totals: Totals = field(default_factory=Totals)


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _spans(start: int, end: int) -> list[tuple[Table, int, int, int]]:
    """(table, first bucket, end bucket, bucket size) pieces that cover whole hours [start, end)."""
    if end <= start:
        return []
    first_day = -(-start // DAY) * DAY
    last_day = end // DAY * DAY
    if first_day >= last_day:
        return [(HOURLY, start // HOUR, end // HOUR, HOUR)]
    spans = []
    if start < first_day:
        spans.append((HOURLY, start // HOUR, first_day // HOUR, HOUR))
    spans.append((DAILY, first_day // DAY, last_day // DAY, DAY))
    if last_day < end:
        spans.append((HOURLY, last_day // HOUR, end // HOUR, HOUR))
    return spans


def _epoch(column: Any, dialect: str) -> Any:
    if dialect == "sqlite":
        return cast(func.strftime("%s", column), Integer)
    return cast(func.floor(func.extract("epoch", column)), BigInteger)


def _raw(since: datetime, until: datetime, dialect: str, filters: list[Any]) -> Any:
    """The finished rows of a part of an hour, shaped as totals (the edges a range cuts out of its hours)."""
    latency = USAGE.c.latency_ms
    buckets, low = [], None
    for index in range(len(_LAT)):
        high = LATENCY_BOUNDS_MS[index] if index < len(LATENCY_BOUNDS_MS) else None
        conditions: list[Any] = [latency.is_not(None)]
        if low is not None:
            conditions.append(latency > low)
        if high is not None:
            conditions.append(latency <= high)
        buckets.append(case((and_(*conditions), 1), else_=0).label(_LAT[index]))
        low = high
    columns: list[Any] = [
        _epoch(USAGE.c.started_at, dialect).label("moment"), USAGE.c.key_id, USAGE.c.model,
        func.coalesce(USAGE.c.upstream, "").label("upstream"), literal(1).label("requests"),
        case((USAGE.c.status != "ok", 1), else_=0).label("errors"),
        *(USAGE.c[name] for name in ("input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens")),
        USAGE.c.cost_usd, func.coalesce(latency, 0.0).label("latency_ms_sum"), *buckets,
    ]
    moment_filters = [USAGE.c.started_at >= since, USAGE.c.started_at < until, USAGE.c.status != "started"]
    raw_filters = [f(USAGE) for f in filters]
    return select(*columns).where(*moment_filters, *raw_filters)


def _covering(since: datetime, until: datetime, dialect: str, *, key_id: str | None, model: str | None,
              upstream: str | None, hourly_only: bool = False) -> Any:
    """One subquery of every total in [since, until) (its ``moment`` column in epoch seconds): the hourly and
    daily totals for the whole hours, and the rows themselves for a part of an hour at either end. An
    ``until`` in the current hour takes that hour's totals whole (everything in it happened before now)."""
    since, until = _utc(since), _utc(until)
    start_ts, end_ts = since.timestamp(), until.timestamp()
    first_hour = -(-int(start_ts) // HOUR) * HOUR if start_ts % HOUR else int(start_ts)
    now_hour = int(time.time()) // HOUR * HOUR
    last_hour = -(-int(end_ts) // HOUR) * HOUR if end_ts >= now_hour else int(end_ts) // HOUR * HOUR
    filters: list[Any] = []
    if key_id is not None:
        filters.append(lambda table: table.c.key_id == key_id)
    if model is not None:
        filters.append(lambda table: table.c.model == model)
    if upstream is not None:
        filters.append(lambda table: table.c.upstream == upstream)
    parts: list[Any] = []
    if first_hour > start_ts:
        parts.append(_raw(since, datetime.fromtimestamp(min(first_hour, end_ts), UTC), dialect, filters))
    spans = [(HOURLY, first_hour // HOUR, last_hour // HOUR, HOUR)] if hourly_only else _spans(first_hour, last_hour)
    for table, first, end, size in spans:
        if end <= first:
            continue
        columns: list[Any] = [(table.c.bucket * size).label("moment"), table.c.key_id, table.c.model,
                              table.c.upstream, *(table.c[name] for name in _SUMMED)]
        parts.append(select(*columns).where(table.c.bucket >= first, table.c.bucket < end,
                                            *(f(table) for f in filters)))
    if last_hour < end_ts and last_hour >= first_hour:
        parts.append(_raw(datetime.fromtimestamp(last_hour, UTC), until, dialect, filters))
    if not parts:  # an empty range: a query that finds nothing
        blank: list[Any] = [literal(0).label("moment"),
                            *(literal("").label(c) for c in ("key_id", "model", "upstream")),
                            *(literal(0).label(name) for name in _SUMMED)]
        parts.append(select(*blank).where(literal(False)))
    source: Any = parts[0] if len(parts) == 1 else union_all(*parts)
    return source.subquery("totals")


def _group_columns(totals: Any, group_by: Sequence[str]) -> list[Any]:
    columns = []
    for name in group_by:
        if name == "key":
            columns.append(totals.c.key_id.label("key"))
        elif name in ("model", "upstream"):
            columns.append(totals.c[name].label(name))
        elif name == "day":
            columns.append((totals.c.moment - totals.c.moment % DAY).label("day"))
        elif name == "hour":
            columns.append((totals.c.moment - totals.c.moment % HOUR).label("hour"))
        else:
            raise ValueError(f"unknown group_by {name!r}: expected {', '.join(GROUPS)}")
    return columns


def _make(counts: Sequence[int], cost: float, latency: float, histogram: tuple[int, ...]) -> Totals:
    requests, errors, input_tokens, output_tokens, cached_tokens, reasoning_tokens = counts
    return Totals(requests=requests, errors=errors, input_tokens=input_tokens, output_tokens=output_tokens,
                  cached_tokens=cached_tokens, reasoning_tokens=reasoning_tokens, cost_usd=cost,
                  latency_ms_sum=latency, histogram=histogram)


def _totals(row: Any) -> Totals:
    m = row._mapping
    return _make([int(m[name] or 0) for name in ROLLUP_COUNTS], float(m["cost_usd"] or 0.0),
                 float(m["latency_ms_sum"] or 0.0), tuple(int(m[name] or 0) for name in _LAT))


async def summarize(
    engine: AsyncEngine, *, since: datetime, until: datetime | None = None, key_id: str | None = None,
    model: str | None = None, upstream: str | None = None, group_by: Sequence[str] = ("key", "model"),
) -> list[UsageSummary]:
    """Totals per group, most expensive first (then most requests, then the group's values)."""
    until = until or datetime.now(UTC)
    hourly_only = "hour" in group_by
    if hourly_only and (until - since) > timedelta(hours=MAX_HOURS):
        raise ValueError(f"group_by=hour covers at most {MAX_HOURS // 24} days; use day for longer ranges")
    totals = _covering(since, until, engine.dialect.name, key_id=key_id, model=model, upstream=upstream,
                       hourly_only=hourly_only)
    groups = _group_columns(totals, group_by)
    selected: list[Any] = [*groups, *(func.coalesce(func.sum(totals.c[name]), 0).label(name) for name in _SUMMED)]
    query = select(*selected)
    if groups:
        query = query.group_by(*groups)
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    summaries = []
    for row in rows:
        group = {name: row._mapping[name] for name in group_by}
        for moment in ("day", "hour"):
            if moment in group:
                group[moment] = datetime.fromtimestamp(int(group[moment]), UTC).isoformat().replace("+00:00", "Z")
        result = _totals(row)
        if result.requests or not groups:
            summaries.append(UsageSummary(group, result))
    summaries.sort(key=lambda s: (-s.totals.cost_usd, -s.totals.requests, *(str(v) for v in s.group.values())))
    return summaries


async def key_totals(engine: AsyncEngine, key_id: str, *, since: datetime,
                     until: datetime | None = None) -> dict[str, float | int]:
    """One key's finished requests, tokens and cost since ``since`` (to the hour), all models together."""
    [summary] = await summarize(engine, since=since, until=until, key_id=key_id, group_by=())
    data: dict[str, float | int] = {name: getattr(summary.totals, name) for name in ROLLUP_COUNTS if name != "errors"}
    data["cost_usd"] = summary.totals.cost_usd
    return data


async def spend_since(engine: AsyncEngine, since: datetime) -> dict[str, float]:
    """USD spent per key since a moment (a budget period's start), for budgets: one grouped query."""
    rows = await summarize(engine, since=since, group_by=("key",))
    return {row.group["key"]: row.totals.cost_usd for row in rows}


async def timeseries(
    engine: AsyncEngine, *, since: datetime, until: datetime | None = None, step: str = "hour",
    key_id: str | None = None, model: str | None = None, upstream: str | None = None,
) -> list[tuple[str, Totals]]:
    """Totals per hour or day over a range, every step present (zeros where nothing happened)."""
    until = until or datetime.now(UTC)
    rows = await summarize(engine, since=since, until=until, key_id=key_id, model=model, upstream=upstream,
                           group_by=(step,))
    found = {row.group[step]: row.totals for row in rows}
    size = HOUR if step == "hour" else DAY
    first = int(_utc(since).timestamp()) // size * size
    last = int(_utc(until).timestamp()) // size * size
    points = []
    for moment in range(first, last + 1, size):
        label = datetime.fromtimestamp(moment, UTC).isoformat().replace("+00:00", "Z")
        points.append((label, found.get(label, Totals(histogram=(0,) * len(_LAT)))))
    return points


def merge(totals: Iterable[Totals]) -> Totals:
    items = list(totals)
    if not items:
        return Totals()
    width = max(len(t.histogram) for t in items)
    return _make([sum(getattr(t, name) for t in items) for name in ROLLUP_COUNTS], sum(t.cost_usd for t in items),
                 sum(t.latency_ms_sum for t in items),
                 tuple(sum(t.histogram[i] for t in items if i < len(t.histogram)) for i in range(width)))
