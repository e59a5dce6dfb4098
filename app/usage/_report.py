"""Reports read from the hourly and daily usage totals, not from the rows.

A range is covered by daily totals for its whole days, hourly totals for the whole hours around
them, and the rows themselves only for the part of an hour at either end that the range cuts (a
range ending now takes the current hour's totals whole). Each report reads the narrowest totals that
can answer it: the fleet's per model and upstream when no key is asked about, per key and day when
neither a model nor an upstream is, and per key, model and upstream otherwise. So a month of a busy
gateway with 10,000 keys is a few thousand (or for every key's total, a few hundred thousand narrow)
totals and at most two hours of rows. Latency percentiles are
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

_TABLES = rollup_tables()
HOURLY, DAILY = _TABLES["usage_hourly"], _TABLES["usage_daily"]
KEY_DAILY, FLEET_HOURLY = _TABLES["usage_key_daily"], _TABLES["usage_fleet_hourly"]
_DIMENSIONS = ("key_id", "model", "upstream")
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


def _spans(start: int, end: int, daily: Table = DAILY) -> list[tuple[Table, int, int, int]]:
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
    spans.append((daily, first_day // DAY, last_day // DAY, DAY))
    if last_day < end:
        spans.append((HOURLY, last_day // HOUR, end // HOUR, HOUR))
    return spans


def _plan(first_hour: int, last_hour: int, *, key_id: str | None, model: str | None, upstream: str | None,
          group_by: Sequence[str]) -> list[tuple[Table, int, int, int]]:
    """The narrowest totals that answer a report over whole hours [first_hour, last_hour)."""
    if key_id is None and "key" not in group_by:
        return [(FLEET_HOURLY, first_hour // HOUR, last_hour // HOUR, HOUR)]
    if "hour" in group_by:
        return [(HOURLY, first_hour // HOUR, last_hour // HOUR, HOUR)]
    if model is None and upstream is None and set(group_by) <= {"key", "day"}:
        return _spans(first_hour, last_hour, KEY_DAILY)
    return _spans(first_hour, last_hour)


def _epoch(column: Any, dialect: str) -> Any:
    if dialect == "sqlite":
        return cast(func.strftime("%s", column), Integer)
    return cast(func.floor(func.extract("epoch", column)), BigInteger)


def _raw(since: datetime, until: datetime, dialect: str, filters: list[Any], names: Sequence[str]) -> Any:
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
    sums: dict[str, Any] = {
        "requests": literal(1).label("requests"), "errors": case((USAGE.c.status != "ok", 1), else_=0).label("errors"),
        **{name: USAGE.c[name] for name in ("input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens")},
        "cost_usd": USAGE.c.cost_usd, "latency_ms_sum": func.coalesce(latency, 0.0).label("latency_ms_sum"),
        **{bucket.name: bucket for bucket in buckets},
    }
    columns: list[Any] = [
        _epoch(USAGE.c.started_at, dialect).label("moment"), USAGE.c.key_id, USAGE.c.model,
        func.coalesce(USAGE.c.upstream, "").label("upstream"), *(sums[name] for name in names),
    ]
    moment_filters = [USAGE.c.started_at >= since, USAGE.c.started_at < until, USAGE.c.status != "started"]
    raw_filters = [f(USAGE) for f in filters]
    return select(*columns).where(*moment_filters, *raw_filters)


def _covering(since: datetime, until: datetime, dialect: str, *, key_id: str | None, model: str | None,
              upstream: str | None, group_by: Sequence[str], names: Sequence[str] = _SUMMED,
              within: Sequence[Any] = ()) -> Any:
    """One subquery of every total in [since, until), already summed per group (one column per name in
    ``group_by``, then the sums): the hourly and daily totals for the whole hours, and the rows themselves
    for a part of an hour at either end. An ``until`` in the current hour takes that hour's totals whole
    (everything in it happened before now). Each piece is summed on its own first, so each is read in one
    pass in its table's order, and what the pieces add up to is a few rows per group. ``names`` are the sums
    to carry (ranking needs two), ``within`` more filters (functions of a table)."""
    since, until = _utc(since), _utc(until)
    start_ts, end_ts = since.timestamp(), until.timestamp()
    first_hour = -(-int(start_ts) // HOUR) * HOUR if start_ts % HOUR else int(start_ts)
    now_hour = int(time.time()) // HOUR * HOUR
    last_hour = -(-int(end_ts) // HOUR) * HOUR if end_ts >= now_hour else int(end_ts) // HOUR * HOUR
    filters: list[Any] = list(within)
    if key_id is not None:
        filters.append(lambda table: table.c.key_id == key_id)
    if model is not None:
        filters.append(lambda table: table.c.model == model)
    if upstream is not None:
        filters.append(lambda table: table.c.upstream == upstream)
    parts: list[Any] = []
    if first_hour > start_ts:
        parts.append(_raw(since, datetime.fromtimestamp(min(first_hour, end_ts), UTC), dialect, filters, names))
    spans = _plan(first_hour, last_hour, key_id=key_id, model=model, upstream=upstream, group_by=group_by)
    for table, first, end, size in spans:
        if end <= first:
            continue
        columns: list[Any] = [(table.c.bucket * size).label("moment"),
                              *(table.c[dim] if dim in table.c else literal("").label(dim) for dim in _DIMENSIONS),
                              *(table.c[name] for name in names)]
        parts.append(select(*columns).where(table.c.bucket >= first, table.c.bucket < end,
                                            *(f(table) for f in filters)))
    if last_hour < end_ts and last_hour >= first_hour:
        parts.append(_raw(datetime.fromtimestamp(last_hour, UTC), until, dialect, filters, names))
    if not parts:  # an empty range: a query that finds nothing
        blank: list[Any] = [literal(0).label("moment"),
                            *(literal("").label(c) for c in ("key_id", "model", "upstream")),
                            *(literal(0).label(name) for name in names)]
        parts.append(select(*blank).where(literal(False)))
    summed = [_summed(part, group_by, names) for part in parts]
    source: Any = summed[0] if len(summed) == 1 else union_all(*summed)
    return source.subquery("totals")


def _summed(part: Any, group_by: Sequence[str], names: Sequence[str]) -> Any:
    piece = part.subquery()
    groups = _group_columns(piece, group_by)
    query = select(*groups, *(func.coalesce(func.sum(piece.c[name]), 0).label(name) for name in names))
    return query.group_by(*groups) if groups else query


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


_COUNT_SLICE = slice(0, len(ROLLUP_COUNTS))
_COST = len(ROLLUP_COUNTS)
_LATENCY = _COST + 1
_HISTOGRAM = slice(_LATENCY + 1, None)


def _totals(sums: Sequence[Any]) -> Totals:
    """Totals from the sums in ``_SUMMED``'s order (positional: a report may read thousands of them)."""
    counts = [int(v or 0) for v in sums[_COUNT_SLICE]]
    return _make(counts, float(sums[_COST] or 0.0), float(sums[_LATENCY] or 0.0),
                 tuple(int(v or 0) for v in sums[_HISTOGRAM]))


async def summarize(
    engine: AsyncEngine, *, since: datetime, until: datetime | None = None, key_id: str | None = None,
    model: str | None = None, upstream: str | None = None, group_by: Sequence[str] = ("key", "model"),
    limit: int | None = None,
) -> list[UsageSummary]:
    """Totals per group, most expensive first (then most requests, then the group's values); with ``limit``,
    only that many of the first (the database sorts and cuts them)."""
    until = until or datetime.now(UTC)
    hourly_only = "hour" in group_by
    if hourly_only and (until - since) > timedelta(hours=MAX_HOURS):
        raise ValueError(f"group_by=hour covers at most {MAX_HOURS // 24} days; use day for longer ranges")
    scope: dict[str, Any] = {"key_id": key_id, "model": model, "upstream": upstream, "group_by": group_by}
    dialect = engine.dialect.name
    chosen: set[tuple[Any, ...]] | None = None
    within: list[Any] = []
    async with engine.connect() as conn:
        if group_by and limit is not None:
            # Rank the groups on two sums first (a tenth of the work of all of them), then sum everything
            # for the chosen ones only.
            ranking = _covering(since, until, dialect, **scope, names=("requests", "cost_usd"))
            groups = [ranking.c[name] for name in group_by]
            cost, requests = func.sum(ranking.c.cost_usd), func.sum(ranking.c.requests)
            ranked = (await conn.execute(select(*groups).group_by(*groups).having(requests > 0)
                                         .order_by(cost.desc(), requests.desc(), *groups).limit(limit))).all()
            chosen = {tuple(row) for row in ranked}
            if not chosen:
                return []
            for name, column in (("key", "key_id"), ("model", "model"), ("upstream", "upstream")):
                if name in group_by:
                    wanted = {row[group_by.index(name)] for row in ranked}
                    within.append(lambda table, column=column, wanted=wanted: table.c[column].in_(wanted))
        totals = _covering(since, until, dialect, **scope, within=within)
        groups = [totals.c[name] for name in group_by]
        sums = [func.coalesce(func.sum(totals.c[name]), 0).label(name) for name in _SUMMED]
        query = select(*groups, *sums)
        if groups:
            query = query.group_by(*groups)
        rows = (await conn.execute(query)).all()
    if chosen is not None:
        rows = [row for row in rows if tuple(row[:len(group_by)]) in chosen]
    width = len(group_by)
    moments = [(i, name) for i, name in enumerate(group_by) if name in ("day", "hour")]
    summaries = []
    for row in rows:
        values = list(row[:width])
        for index, _ in moments:
            values[index] = datetime.fromtimestamp(int(values[index]), UTC).isoformat().replace("+00:00", "Z")
        result = _totals(row[width:])
        if result.requests or not groups:
            summaries.append(UsageSummary(dict(zip(group_by, values, strict=True)), result))
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
    """USD spent per key since a moment (a budget period's start), for budgets: one grouped query over the
    per-key totals, summing cost alone (every few seconds, it must stay light with thousands of keys)."""
    totals = _covering(since, datetime.now(UTC), engine.dialect.name, key_id=None, model=None, upstream=None,
                       group_by=("key",), names=("cost_usd",))
    query = select(totals.c.key, func.sum(totals.c.cost_usd)).group_by(totals.c.key)
    async with engine.connect() as conn:
        return {str(key): float(cost or 0.0) for key, cost in (await conn.execute(query)).all() if cost}


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
