from __future__ import annotations

import asyncio
import sqlite3

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from app.db import create_engine, downgrade, metadata, upgrade
from app.settings import Settings
from keys import Policy
from tests.support import create_key


def _tables(settings: Settings) -> set[str]:
    with sqlite3.connect(settings.data_dir / "poolgate.db") as db:
        return {row[0] for row in db.execute("select name from sqlite_master where type='table'")}


def test_upgrade_downgrade_upgrade(settings: Settings) -> None:
    upgrade(settings)
    assert {"api_keys", "counters"} <= _tables(settings)
    downgrade(settings, "base")
    assert not {"api_keys", "counters"} & _tables(settings)
    upgrade(settings)
    assert {"api_keys", "counters"} <= _tables(settings)


def test_upgrading_again_keeps_the_data(settings: Settings) -> None:
    record, _ = create_key(settings, "kept", Policy(allowed_models=("*",)))
    upgrade(settings)
    with sqlite3.connect(settings.data_dir / "poolgate.db") as db:
        assert db.execute("select id from api_keys").fetchall() == [(record.id,)]


def test_the_models_and_the_migrations_agree(settings: Settings) -> None:
    upgrade(settings)

    async def diff() -> list[object]:
        engine = create_engine(settings)
        async with engine.connect() as conn:
            result = await conn.run_sync(
                lambda sync: compare_metadata(MigrationContext.configure(sync, opts={"compare_type": True}), metadata)
            )
        await engine.dispose()
        return list(result)

    assert asyncio.run(diff()) == []
