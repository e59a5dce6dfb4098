"""The upstream accounts table. Credentials are stored encrypted (see app.crypto)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, DateTime, Index, Text, text
from sqlmodel import Field, SQLModel

__all__ = ["UpstreamRow"]


class UpstreamRow(SQLModel, table=True):
    __tablename__ = "upstreams"
    # Unique among live upstreams only, so a removed upstream's name can be reused.
    __table_args__ = (
        Index(
            "uq_upstreams_live_name", "name", unique=True,
            sqlite_where=text("removed_at IS NULL"), postgresql_where=text("removed_at IS NULL"),
        ),
    )

    id: str = Field(primary_key=True, max_length=32)
    name: str = Field(max_length=200)
    kind: str = Field(default="openai", max_length=32)
    base_url: str = Field(max_length=2000)
    credential: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    models: list[dict[str, Any]] = Field(sa_column=Column(JSON, nullable=False))
    weight: float = Field(default=1.0)
    tier: int = Field(default=0)
    max_concurrency: int | None = Field(default=None)
    enabled: bool = Field(default=True)
    removed_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    updated_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    revision: int = Field(sa_column=Column(BigInteger, nullable=False, index=True))
