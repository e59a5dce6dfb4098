"""How many PostgreSQL connections one process opens, measured on the server itself."""
from __future__ import annotations

import asyncio
import os

import pytest
from sqlalchemy import text

from app._db import create_engine
from app.settings import Settings

PG_DATABASE = os.environ.get("POOLGATE_TEST_PG_DATABASE", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")


async def backends_used(pool_size: int, queries: int) -> set[int]:
    engine = create_engine(Settings(database_url=PG_DATABASE, database_pool_size=pool_size))

    async def one() -> int:
        async with engine.connect() as conn:
            pid = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
            await conn.execute(text("SELECT pg_sleep(0.2)"))
            return int(pid)

    try:
        return set(await asyncio.gather(*(one() for _ in range(queries))))
    finally:
        await engine.dispose()


def test_busy_queries_wait_for_a_connection_rather_than_open_more_than_the_pool_size() -> None:
    try:
        used = asyncio.run(backends_used(pool_size=3, queries=9))
    except OSError as exc:
        pytest.skip(f"needs PostgreSQL at {PG_DATABASE} ({exc})")
    assert len(used) == 3  # nine queries at once shared three connections
