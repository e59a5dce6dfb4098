"""One row per relayed request: who, what, where, how it ended, what it used and cost."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Column, DateTime, Float, Index, Integer, PrimaryKeyConstraint, String, Table
from sqlmodel import Field, SQLModel

__all__ = ["LATENCY_BOUNDS_MS", "ROLLUP_COUNTS", "STATUSES", "InstanceRow", "UsageRow", "rollup_tables"]

LATENCY_BOUNDS_MS: tuple[float, ...] = (100, 250, 500, 1000, 2500, 5000, 10_000, 30_000, 60_000, 120_000, 300_000)
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



def _rollup(name: str) -> Table:
    """Running totals per (time bucket, key, model, upstream): what reports, budgets and the dashboard read,
    so they cost the number of buckets, not the number of requests. ``bucket`` is whole hours (or days)
    since the epoch, in UTC; ``upstream`` is '' for requests no upstream answered."""
    return Table(
        name, SQLModel.metadata,
        Column("bucket", BigInteger, nullable=False),
        Column("key_id", String(32), nullable=False),
        Column("model", String(200), nullable=False),
        Column("upstream", String(200), nullable=False),
        *(Column(count, BigInteger, nullable=False, default=0) for count in ROLLUP_COUNTS),
        Column("cost_usd", Float, nullable=False, default=0.0),
        Column("latency_ms_sum", Float, nullable=False, default=0.0),
        *(Column(f"lat_{i:02d}", Integer, nullable=False, default=0) for i in range(len(LATENCY_BOUNDS_MS) + 1)),
        PrimaryKeyConstraint("bucket", "key_id", "model", "upstream"),
        Index(f"ix_{name}_key_bucket", "key_id", "bucket"),
    )


HOURLY = _rollup("usage_hourly")
DAILY = _rollup("usage_daily")


def rollup_tables() -> tuple[Table, Table]:
    return HOURLY, DAILY
