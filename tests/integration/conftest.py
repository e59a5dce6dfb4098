from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db import create_engine, upgrade
from app.settings import Settings


@pytest.fixture
async def engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    """A migrated database for the test, closed afterwards."""
    await asyncio.to_thread(upgrade, settings)
    engine = create_engine(settings)
    yield engine
    await engine.dispose()
