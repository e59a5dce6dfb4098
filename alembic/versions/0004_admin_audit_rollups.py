"""admins, the audit log, hourly and daily usage totals

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28

The totals are filled from the usage rows already there, so reports over old usage stay whole.
Besides the totals per (key, model, upstream), two narrow ones answer the common reports in few rows:
per key and day, and per model and upstream and hour (the whole fleet). On SQLite every totals table is
stored in its primary key's order (WITHOUT ROWID), so a range of it is read in one pass.
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
LATENCY_BOUNDS_MS = (10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 30_000, 60_000, 120_000, 300_000)
COUNTS = ("requests", "errors", "input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens")
LAT = [f"lat_{i:02d}" for i in range(len(LATENCY_BOUNDS_MS) + 1)]


SHAPES = {
    # table: (bucket size, its dimensions, its primary key)
    "usage_hourly": (3600, ("key_id", "model", "upstream"), ("bucket", "key_id", "model", "upstream")),
    "usage_daily": (86_400, ("key_id", "model", "upstream"), ("bucket", "key_id", "model", "upstream")),
    "usage_key_daily": (86_400, ("key_id",), ("key_id", "bucket")),
    "usage_fleet_hourly": (3600, ("model", "upstream"), ("bucket", "model", "upstream")),
}
WIDTHS = {"key_id": 32, "model": 200, "upstream": 200}
SOURCES = {"key_id": "key_id", "model": "model", "upstream": "COALESCE(upstream, '')"}


def _rollup(name: str) -> None:
    _, dims, primary = SHAPES[name]
    narrow = name in ("usage_key_daily", "usage_fleet_hourly")
    op.create_table(
        name,
        sa.Column("bucket", sa.BigInteger(), nullable=False),
        *(sa.Column(dim, sa.String(length=WIDTHS[dim]), nullable=False) for dim in dims),
        *(sa.Column(count, sa.BigInteger(), nullable=False) for count in COUNTS),
        sa.Column("cost_usd", sa.Float(), nullable=False),
        sa.Column("latency_ms_sum", sa.Float(), nullable=False),
        *(sa.Column(column, sa.Integer(), nullable=False) for column in LAT),
        sa.PrimaryKeyConstraint(*primary),
        sqlite_with_rowid=False,
    )
    if not narrow:
        with op.batch_alter_table(name, schema=None) as batch_op:
            batch_op.create_index(f"ix_{name}_key_bucket", ["key_id", "bucket"], unique=False)


def _backfill(name: str) -> None:
    """Sum the finished rows already there into the new table, in the database."""
    size, dims, _ = SHAPES[name]
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
    sources = ", ".join(SOURCES[dim] for dim in dims)
    # Every name below is this file's constant; nothing comes from input.
    op.execute(
        f"INSERT INTO {name} (bucket, {', '.join(dims)}, {', '.join(COUNTS)}, cost_usd, latency_ms_sum, "  # noqa: S608
        f"{', '.join(LAT)}) "
        f"SELECT {epoch} / {size}, {sources}, COUNT(*), "
        "SUM(CASE WHEN status <> 'ok' THEN 1 ELSE 0 END), SUM(input_tokens), SUM(output_tokens), "
        "SUM(cached_tokens), SUM(reasoning_tokens), COALESCE(SUM(cost_usd), 0), COALESCE(SUM(latency_ms), 0), "
        f"{', '.join(cases)} "
        f"FROM usage WHERE status <> 'started' GROUP BY {epoch} / {size}, {sources}"
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
    for name in SHAPES:
        _rollup(name)
        _backfill(name)
    op.bulk_insert(COUNTERS, [{"name": "admins", "value": 0}])


def downgrade() -> None:
    op.execute(COUNTERS.delete().where(COUNTERS.c.name == "admins"))
    with op.batch_alter_table("usage", schema=None) as batch_op:
        batch_op.drop_index("ix_usage_started")
    op.drop_table("usage_fleet_hourly")
    op.drop_table("usage_key_daily")
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
