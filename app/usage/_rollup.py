"""Running totals of usage per hour and per day, added to in the same transaction as the rows they count.

A finished request adds to one hourly and one daily bucket of (key, model, upstream). The
writer sums a batch in memory first, so a flush of a thousand requests of one key is two
upserts. The SQL is the same on SQLite and PostgreSQL (``ON CONFLICT ... DO UPDATE``).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from app.usage._table import LATENCY_BOUNDS_MS, ROLLUP_COUNTS

__all__ = ["DAY", "HOUR", "UPSERTS", "Rollups", "latency_percentile"]

HOUR, DAY = 3600, 86_400
_BUCKETS = len(LATENCY_BOUNDS_MS) + 1
_LAT = [f"lat_{i:02d}" for i in range(_BUCKETS)]
_SUMS = [*ROLLUP_COUNTS, "cost_usd", "latency_ms_sum", *_LAT]


def _upsert(table: str) -> str:
    columns = ["bucket", "key_id", "model", "upstream", *_SUMS]
    updates = ", ".join(f"{c} = {table}.{c} + excluded.{c}" for c in _SUMS)
    # Table and column names are this module's constants; every value is a bound parameter.
    values = ", ".join(":" + c for c in columns)
    insert = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({values}) "  # noqa: S608
    return insert + f"ON CONFLICT (bucket, key_id, model, upstream) DO UPDATE SET {updates}"


UPSERTS = {"usage_hourly": _upsert("usage_hourly"), "usage_daily": _upsert("usage_daily")}


@dataclass(slots=True)
class _Totals:
    counts: list[int] = field(default_factory=lambda: [0] * len(ROLLUP_COUNTS))
    cost: float = 0.0
    latency: float = 0.0
    histogram: list[int] = field(default_factory=lambda: [0] * _BUCKETS)


class Rollups:
    """One batch's additions to the hourly and daily totals."""

    __slots__ = ("_daily", "_hourly")

    def __init__(self) -> None:
        self._hourly: dict[tuple[int, str, str, str], _Totals] = {}
        self._daily: dict[tuple[int, str, str, str], _Totals] = {}

    def __bool__(self) -> bool:
        return bool(self._hourly)

    def add(self, row: Mapping[str, Any]) -> None:
        """Count one finished row (``started_at`` as epoch seconds)."""
        started = int(row["started_at"])
        key_id, model, upstream = row["key_id"], row["model"], row.get("upstream") or ""
        latency = row.get("latency_ms")
        for store, size in ((self._hourly, HOUR), (self._daily, DAY)):
            slot = (started // size, key_id, model, upstream)
            totals = store.get(slot)
            if totals is None:
                totals = store[slot] = _Totals()
            counts = totals.counts
            counts[0] += 1
            counts[1] += row["status"] != "ok"
            counts[2] += row.get("input_tokens") or 0
            counts[3] += row.get("output_tokens") or 0
            counts[4] += row.get("cached_tokens") or 0
            counts[5] += row.get("reasoning_tokens") or 0
            totals.cost += row.get("cost_usd") or 0.0
            if latency is not None:
                totals.latency += latency
                totals.histogram[bisect_left(LATENCY_BOUNDS_MS, latency)] += 1

    def params(self) -> dict[str, list[dict[str, Any]]]:
        """Rows for the two upserts."""
        return {"usage_hourly": _params(self._hourly.items()), "usage_daily": _params(self._daily.items())}


def _params(items: Iterable[tuple[tuple[int, str, str, str], _Totals]]) -> list[dict[str, Any]]:
    rows = []
    for (bucket, key_id, model, upstream), totals in items:
        row: dict[str, Any] = {"bucket": bucket, "key_id": key_id, "model": model, "upstream": upstream}
        row.update(zip(ROLLUP_COUNTS, totals.counts, strict=True))
        row["cost_usd"] = totals.cost
        row["latency_ms_sum"] = totals.latency
        row.update(zip(_LAT, totals.histogram, strict=True))
        rows.append(row)
    return rows


def latency_percentile(histogram: list[int], fraction: float) -> float | None:
    """The latency (ms) below which ``fraction`` of the requests fell, read from the histogram: the
    bucket's upper bound, interpolated linearly inside it (the last, open bucket reports its lower bound)."""
    total = sum(histogram)
    if not total:
        return None
    rank = fraction * total
    seen = 0
    for index, count in enumerate(histogram):
        if seen + count >= rank and count:
            low = 0.0 if index == 0 else LATENCY_BOUNDS_MS[index - 1]
            if index >= len(LATENCY_BOUNDS_MS):
                return low
            high = LATENCY_BOUNDS_MS[index]
            return low + (high - low) * (rank - seen) / count
        seen += count
    return float(LATENCY_BOUNDS_MS[-1])
