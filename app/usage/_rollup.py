"""Running totals of usage per hour and per day, added to in the same transaction as the rows they count.

A finished request adds to one bucket of each totals table (``_table.ROLLUP_SHAPES``): per hour and per
day by key, model and upstream; per day by key; per hour by model and upstream. The writer sums a batch in
memory first, so a flush of a thousand requests of one key is four upserts. The SQL is the same on
SQLite and PostgreSQL (``ON CONFLICT ... DO UPDATE``).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from app.usage._table import LATENCY_BOUNDS_MS, ROLLUP_COUNTS, ROLLUP_SHAPES

__all__ = ["DAY", "HOUR", "UPSERTS", "Rollups", "latency_percentile"]

HOUR, DAY = 3600, 86_400
_BUCKETS = len(LATENCY_BOUNDS_MS) + 1
_LAT = [f"lat_{i:02d}" for i in range(_BUCKETS)]
_SUMS = [*ROLLUP_COUNTS, "cost_usd", "latency_ms_sum", *_LAT]


def _upsert(table: str) -> str:
    _, dims = ROLLUP_SHAPES[table]
    columns = ["bucket", *dims, *_SUMS]
    updates = ", ".join(f"{c} = {table}.{c} + excluded.{c}" for c in _SUMS)
    # Table and column names are this module's constants; every value is a bound parameter.
    values = ", ".join(":" + c for c in columns)
    insert = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({values}) "  # noqa: S608
    return insert + f"ON CONFLICT ({', '.join(('bucket', *dims))}) DO UPDATE SET {updates}"


UPSERTS = {table: _upsert(table) for table in ROLLUP_SHAPES}


@dataclass(slots=True)
class _Totals:
    counts: list[int] = field(default_factory=lambda: [0] * len(ROLLUP_COUNTS))
    cost: float = 0.0
    latency: float = 0.0
    histogram: list[int] = field(default_factory=lambda: [0] * _BUCKETS)

    def absorb(self, other: _Totals) -> None:
        self.counts = [a + b for a, b in zip(self.counts, other.counts, strict=True)]
        self.cost += other.cost
        self.latency += other.latency
        self.histogram = [a + b for a, b in zip(self.histogram, other.histogram, strict=True)]


class Rollups:
    """One batch's additions to every totals table: each row is counted once, per hour, key, model and
    upstream; the other tables are sums of those (one step per hour and group, not per row)."""

    __slots__ = ("_hourly",)

    def __init__(self) -> None:
        self._hourly: dict[tuple[int, str, str, str], _Totals] = {}

    def __bool__(self) -> bool:
        return bool(self._hourly)

    def add(self, row: Mapping[str, Any]) -> None:
        """Count one finished row (``started_at`` as epoch seconds)."""
        slot = (int(row["started_at"]) // HOUR, row["key_id"], row["model"], row.get("upstream") or "")
        totals = self._hourly.get(slot)
        if totals is None:
            totals = self._hourly[slot] = _Totals()
        counts = totals.counts
        counts[0] += 1
        if row["status"] != "ok":
            counts[1] += 1
        counts[2] += row.get("input_tokens") or 0
        counts[3] += row.get("output_tokens") or 0
        counts[4] += row.get("cached_tokens") or 0
        counts[5] += row.get("reasoning_tokens") or 0
        totals.cost += row.get("cost_usd") or 0.0
        latency = row.get("latency_ms")
        if latency is not None:
            totals.latency += latency
            totals.histogram[bisect_left(LATENCY_BOUNDS_MS, latency)] += 1

    def params(self) -> dict[str, list[dict[str, Any]]]:
        """Rows for each table's upsert."""
        out = {}
        for table, (size, dims) in ROLLUP_SHAPES.items():
            if table == "usage_hourly":
                out[table] = _params(dims, self._hourly.items())
                continue
            store: dict[tuple[Any, ...], _Totals] = {}
            for (hour, key_id, model, upstream), hourly in self._hourly.items():
                values = {"key_id": key_id, "model": model, "upstream": upstream}
                slot = (hour * HOUR // size, *(values[dim] for dim in dims))
                totals = store.get(slot)
                if totals is None:
                    totals = store[slot] = _Totals()
                totals.absorb(hourly)
            out[table] = _params(dims, store.items())
        return out


def _params(dims: tuple[str, ...], items: Iterable[tuple[tuple[Any, ...], _Totals]]) -> list[dict[str, Any]]:
    rows = []
    for slot, totals in items:
        row: dict[str, Any] = {"bucket": slot[0], **dict(zip(dims, slot[1:], strict=True))}
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
