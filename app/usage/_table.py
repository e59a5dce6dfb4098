"""One row per relayed request: who, what, where, how it ended, what it used and cost."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Column, DateTime, Index, Integer
from sqlmodel import Field, SQLModel

__all__ = ["STATUSES", "InstanceRow", "UsageRow"]

STATUSES = ("started", "ok", "error", "client_closed", "interrupted")
"""``started`` until the request ends; ``interrupted`` when its process died before it did."""


class UsageRow(SQLModel, table=True):
    __tablename__ = "usage"
    __table_args__ = (
        Index("ix_usage_key_started", "key_id", "started_at"),
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

