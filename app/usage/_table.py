"""One row per relayed request: who, what, where, how it ended, what it used and cost."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Column, DateTime, Float, Index, Integer, PrimaryKeyConstraint, String, Table
from sqlmodel import Field, SQLModel

__all__ = [
    "LATENCY_BOUNDS_MS", "ROLLUP_COUNTS", "ROLLUP_SHAPES", "STATUSES", "InstanceRow", "UsageRow", "rollup_tables",
]

LATENCY_BOUNDS_MS: tuple[float, ...] = (
    10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 30_000, 60_000, 120_000, 300_000,
)
"""Upper bounds of the latency histogram the rollups keep (one more bucket holds the rest)."""
ROLLUP_COUNTS = ("requests", "errors", "input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens")

STATUSES = ("started", "ok", "error", "client_closed", "interrupted")
"""``started`` until the request ends; ``interrupted`` when its process died before it did."""


class UsageRow(SQLModel, table=True):
    __tablename__ = "usage"
    __table_args__ = (
        Index("ix_usage_key_started", "key_id", "started_at"),
        Index("ix_usage_started", "started_at"),
        Index("ix_usage_status", "status"),
    )

    # BIGINT on PostgreSQL, INTEGER on SQLite (only INTEGER PRIMARY KEY auto-increments there).
    id: int | None = Field(default=None, sa_column=Column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True))
    request_id: str = Field(max_length=40, unique=True)
    key_id: str = Field(max_length=32)
    upstream: str | None = Field(default=None, max_length=200)
    model: str = Field(max_length=200)
    endpoint: str = Field(max_length=32)
    stream: bool = Field(default=False)
    status: str = Field(max_length=16)
    http_status: int | None = Field(default=None)
    input_tokens: int = Field(default=0)
    output_tokens: int = Field(default=0)
    cached_tokens: int = Field(default=0)
    reasoning_tokens: int = Field(default=0)
    cost_usd: float = Field(default=0.0)
    latency_ms: float | None = Field(default=None)
    ttfb_ms: float | None = Field(default=None)
    error: str | None = Field(default=None, max_length=64)
    instance: str = Field(max_length=32)
    started_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    finished_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))


class InstanceRow(SQLModel, table=True):
    """Serving processes and when each last said it was alive; a silent one's started rows are interrupted."""

    __tablename__ = "instances"

    id: str = Field(primary_key=True, max_length=32)
    started_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    seen_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))



ROLLUP_SHAPES: dict[str, tuple[int, tuple[str, ...]]] = {
    "usage_hourly": (3600, ("key_id", "model", "upstream")),
    "usage_daily": (86_400, ("key_id", "model", "upstream")),
    "usage_key_daily": (86_400, ("key_id",)),
    "usage_fleet_hourly": (3600, ("model", "upstream")),
}
"""Each totals table: its bucket's size in seconds, and what it is counted by (besides the bucket)."""
_WIDTHS = {"key_id": 32, "model": 200, "upstream": 200}


def _rollup(name: str) -> Table:
    """Running totals per time bucket and dimensions: what reports, budgets and the dashboard read, so they
    cost the number of buckets, not the number of requests. ``bucket`` is whole hours (or days) since the
    epoch, in UTC; ``upstream`` is '' for requests no upstream answered.

    The full tables count by key, model and upstream. Two narrow ones answer the common reports in few rows:
    per key and day (a key's spend, the top keys) and per model, upstream and hour (the fleet's charts). On
    SQLite every one is stored in its primary key's order (WITHOUT ROWID): a key's days, or a range of hours,
    are read in one pass, not row by row through an index (three times faster over a month of totals)."""
    _, dims = ROLLUP_SHAPES[name]
    narrow = len(dims) < 3
    primary = ("key_id", "bucket") if dims == ("key_id",) else ("bucket", *dims)
    items: list[Any] = [
        Column("bucket", BigInteger, nullable=False),
        *(Column(dim, String(_WIDTHS[dim]), nullable=False) for dim in dims),
        *(Column(count, BigInteger, nullable=False, default=0) for count in ROLLUP_COUNTS),
        Column("cost_usd", Float, nullable=False, default=0.0),
        Column("latency_ms_sum", Float, nullable=False, default=0.0),
        *(Column(f"lat_{i:02d}", Integer, nullable=False, default=0) for i in range(len(LATENCY_BOUNDS_MS) + 1)),
        PrimaryKeyConstraint(*primary),
    ]
    if not narrow:
        items.append(Index(f"ix_{name}_key_bucket", "key_id", "bucket"))
    return Table(name, SQLModel.metadata, *items, sqlite_with_rowid=False)


ROLLUPS = {name: _rollup(name) for name in ROLLUP_SHAPES}


def rollup_tables() -> dict[str, Table]:
    return ROLLUPS
