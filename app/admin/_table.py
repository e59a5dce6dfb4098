"""Admin identities and the audit log."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, DateTime, Index, Integer, text
from sqlmodel import Field, SQLModel

__all__ = ["AdminRow", "AuditRow"]


class AdminRow(SQLModel, table=True):
    """A person who runs the gateway: an admin token's public id, its role and the hash of its secret."""

    __tablename__ = "admins"
    __table_args__ = (
        Index("uq_admins_live_name", "name", unique=True,
              sqlite_where=text("revoked_at IS NULL"), postgresql_where=text("revoked_at IS NULL")),
    )

    id: str = Field(primary_key=True, max_length=32)
    name: str = Field(max_length=200)
    role: str = Field(max_length=16)
    secret_hash: str = Field(max_length=64)
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    revoked_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    revision: int = Field(sa_column=Column(BigInteger, nullable=False, index=True))


class AuditRow(SQLModel, table=True):
    """Who changed what, and when: one row per change, from the API, the dashboard or the CLI."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_at", "at"),)

    id: int | None = Field(default=None, sa_column=Column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True))
    at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    actor: str = Field(max_length=200)
    source: str = Field(max_length=16)
    action: str = Field(max_length=64)
    target: str = Field(max_length=300)
    before: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    after: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
