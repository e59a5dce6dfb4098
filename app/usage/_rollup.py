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


class Rollups:
    """One batch's additions to every totals table."""

    __slots__ = ("_tables",)

    def __init__(self) -> None:
        self._tables: dict[str, dict[tuple[Any, ...], _Totals]] = {table: {} for table in ROLLUP_SHAPES}

    def __bool__(self) -> bool:
        return bool(self._tables["usage_hourly"])

    def add(self, row: Mapping[str, Any]) -> None:
        """Count one finished row (``started_at`` as epoch seconds)."""
        started = int(row["started_at"])
        values = {"key_id": row["key_id"], "model": row["model"], "upstream": row.get("upstream") or ""}
        latency = row.get("latency_ms")
        slot_of_latency = None if latency is None else bisect_left(LATENCY_BOUNDS_MS, latency)
        added = (1, int(row["status"] != "ok"), row.get("input_tokens") or 0, row.get("output_tokens") or 0,
                 row.get("cached_tokens") or 0, row.get("reasoning_tokens") or 0)
        cost = row.get("cost_usd") or 0.0
        for table, (size, dims) in ROLLUP_SHAPES.items():
            store = self._tables[table]
            slot = (started // size, *(values[dim] for dim in dims))
            totals = store.get(slot)
            if totals is None:
                totals = store[slot] = _Totals()
            counts = totals.counts
            for index, amount in enumerate(added):
                counts[index] += amount
            totals.cost += cost
            if slot_of_latency is not None and latency is not None:
                totals.latency += latency
                totals.histogram[slot_of_latency] += 1

    def params(self) -> dict[str, list[dict[str, Any]]]:
        """Rows for each table's upsert."""
        return {table: _params(ROLLUP_SHAPES[table][1], store.items()) for table, store in self._tables.items()}


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
