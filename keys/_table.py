"""The key store's table. Only the store and migrations use it; the hot path never does."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, DateTime, Index, text
from sqlmodel import Field, SQLModel

__all__ = ["ApiKeyRow"]


class ApiKeyRow(SQLModel, table=True):
    __tablename__ = "api_keys"
    # A name is unique among live keys only, so a revoked key's name can be issued again.
    __table_args__ = (
        Index(
            "uq_api_keys_live_name", "name", unique=True,
            sqlite_where=text("revoked_at IS NULL"), postgresql_where=text("revoked_at IS NULL"),
        ),
    )

    id: str = Field(primary_key=True, max_length=32)
    name: str = Field(max_length=200)
    secret_hash: str = Field(max_length=64)
    previous_secret_hash: str | None = Field(default=None, max_length=64)
    previous_expires_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    policy: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    expires_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    disabled: bool = Field(default=False)
    revoked_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    updated_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    revision: int = Field(sa_column=Column(BigInteger, nullable=False, index=True))
