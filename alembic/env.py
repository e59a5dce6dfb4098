"""Alembic environment: async engine, batch mode for SQLite, metadata from the app.

The whole upgrade runs in one write transaction (``BEGIN IMMEDIATE`` on SQLite, an
advisory lock on PostgreSQL), so processes starting together on a fresh database
migrate one after the other, and a crash mid-migration leaves the schema unchanged.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import text
from sqlalchemy.engine import Connection

from app._db import WRITE_OPTION, create_engine, metadata
from app.settings import Settings

config = context.config
target_metadata = metadata()
MIGRATION_LOCK = 7_474_010  # any constant shared by every poolgate process


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_online() -> None:
    engine = create_engine(Settings(database_url=config.get_main_option("sqlalchemy.url") or ""), pooled=False)
    try:
        async with engine.connect() as plain:
            conn = await plain.execution_options(**{WRITE_OPTION: True})
            async with conn.begin():
                if conn.dialect.name == "postgresql":
                    await conn.execute(text(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})"))
                await conn.run_sync(_configure)
    finally:
        await engine.dispose()


def _run_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    _run_offline()
else:
    asyncio.run(_run_online())
