"""admins, the audit log, hourly and daily usage totals

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28

The totals are filled from the usage rows already there, so reports over old usage stay whole.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COUNTERS = sa.table("counters", sa.column("name", sa.String), sa.column("value", sa.BigInteger))
LATENCY_BOUNDS_MS = (100, 250, 500, 1000, 2500, 5000, 10_000, 30_000, 60_000, 120_000, 300_000)
COUNTS = ("requests", "errors", "input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens")
LAT = [f"lat_{i:02d}" for i in range(len(LATENCY_BOUNDS_MS) + 1)]


def _rollup(name: str) -> None:
    op.create_table(
        name,
        sa.Column("bucket", sa.BigInteger(), nullable=False),
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("upstream", sa.String(length=200), nullable=False),
        *(sa.Column(count, sa.BigInteger(), nullable=False) for count in COUNTS),
        sa.Column("cost_usd", sa.Float(), nullable=False),
        sa.Column("latency_ms_sum", sa.Float(), nullable=False),
        *(sa.Column(column, sa.Integer(), nullable=False) for column in LAT),
        sa.PrimaryKeyConstraint("bucket", "key_id", "model", "upstream"),
    )
    with op.batch_alter_table(name, schema=None) as batch_op:
        batch_op.create_index(f"ix_{name}_key_bucket", ["key_id", "bucket"], unique=False)


def _backfill(name: str, size: int) -> None:
    """Sum the finished rows already there into the new table, in the database."""
    dialect = op.get_bind().dialect.name
    epoch = ("CAST(strftime('%s', started_at) AS INTEGER)" if dialect == "sqlite"
             else "CAST(floor(extract(epoch from started_at)) AS BIGINT)")
    cases = []
    low = None
    for index, column in enumerate(LAT):
        high = LATENCY_BOUNDS_MS[index] if index < len(LATENCY_BOUNDS_MS) else None
        condition = " AND ".join(part for part in (
            "latency_ms IS NOT NULL",
            f"latency_ms > {low}" if low is not None else "",
            f"latency_ms <= {high}" if high is not None else "",
        ) if part)
        cases.append(f"SUM(CASE WHEN {condition} THEN 1 ELSE 0 END) AS {column}")
        low = high
    # Every name below is this file's constant; nothing comes from input.
    op.execute(
        f"INSERT INTO {name} (bucket, key_id, model, upstream, {', '.join(COUNTS)}, cost_usd, latency_ms_sum, "  # noqa: S608
        f"{', '.join(LAT)}) "
        f"SELECT {epoch} / {size}, key_id, model, COALESCE(upstream, ''), COUNT(*), "
        "SUM(CASE WHEN status <> 'ok' THEN 1 ELSE 0 END), SUM(input_tokens), SUM(output_tokens), "
        "SUM(cached_tokens), SUM(reasoning_tokens), COALESCE(SUM(cost_usd), 0), COALESCE(SUM(latency_ms), 0), "
        f"{', '.join(cases)} "
        f"FROM usage WHERE status <> 'started' GROUP BY {epoch} / {size}, key_id, model, COALESCE(upstream, '')"
    )


def upgrade() -> None:
    op.create_table(
        "admins",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("role", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("secret_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revision", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("admins", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_admins_revision"), ["revision"], unique=False)
        batch_op.create_index(
            "uq_admins_live_name", ["name"], unique=True,
            sqlite_where=sa.text("revoked_at IS NULL"), postgresql_where=sa.text("revoked_at IS NULL"),
        )
    op.create_table(
        "audit_log",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("source", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("action", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("target", sqlmodel.sql.sqltypes.AutoString(length=300), nullable=False),
        sa.Column("before", sa.JSON(), nullable=True),
        sa.Column("after", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.create_index("ix_audit_log_at", ["at"], unique=False)
    with op.batch_alter_table("usage", schema=None) as batch_op:
        batch_op.create_index("ix_usage_started", ["started_at"], unique=False)
    _rollup("usage_hourly")
    _rollup("usage_daily")
    _backfill("usage_hourly", 3600)
    _backfill("usage_daily", 86_400)
    op.bulk_insert(COUNTERS, [{"name": "admins", "value": 0}])


def downgrade() -> None:
    op.execute(COUNTERS.delete().where(COUNTERS.c.name == "admins"))
    with op.batch_alter_table("usage", schema=None) as batch_op:
        batch_op.drop_index("ix_usage_started")
    for name in ("usage_daily", "usage_hourly"):
        with op.batch_alter_table(name, schema=None) as batch_op:
            batch_op.drop_index(f"ix_{name}_key_bucket")
        op.drop_table(name)
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.drop_index("ix_audit_log_at")
    op.drop_table("audit_log")
    with op.batch_alter_table("admins", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_admins_live_name",
            sqlite_where=sa.text("revoked_at IS NULL"), postgresql_where=sa.text("revoked_at IS NULL"),
        )
        batch_op.drop_index(batch_op.f("ix_admins_revision"))
    op.drop_table("admins")
