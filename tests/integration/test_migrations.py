from __future__ import annotations

import asyncio
import subprocess
import sys

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from app._db import create_engine, downgrade, metadata, upgrade
from app.settings import Settings
from keys import Policy
from tests.support import ROOT, create_key, env_for, query, table_names


def _tables(settings: Settings) -> set[str]:
    return table_names(settings)


def test_upgrade_downgrade_upgrade(empty_settings: Settings) -> None:
    settings = empty_settings
    upgrade(settings)
    assert {"api_keys", "counters"} <= _tables(settings)
    downgrade(settings, "base")
    assert not {"api_keys", "counters"} & _tables(settings)
    upgrade(settings)
    assert {"api_keys", "counters"} <= _tables(settings)


def test_upgrading_again_keeps_the_data(settings: Settings) -> None:
    record, _ = create_key(settings, "kept", Policy(allowed_models=("*",)))
    upgrade(settings)
    assert query(settings, "select id from api_keys") == [{"id": record.id}]


def test_the_models_and_the_migrations_agree(settings: Settings) -> None:
    upgrade(settings)

    async def diff() -> list[object]:
        engine = create_engine(settings)
        async with engine.connect() as conn:
            result = await conn.run_sync(
                lambda sync: compare_metadata(MigrationContext.configure(sync, opts={"compare_type": True}), metadata())
            )
        await engine.dispose()
        return list(result)

    assert asyncio.run(diff()) == []


def test_processes_starting_together_on_a_fresh_database_all_migrate(empty_settings: Settings) -> None:
    settings = empty_settings
    procs = [
        subprocess.Popen([sys.executable, "-m", "app", "db", "upgrade"], cwd=ROOT, env=env_for(settings),
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for _ in range(6)
    ]
    results = [(proc.wait(timeout=60), proc.stderr.read() if proc.stderr else "") for proc in procs]
    for proc in procs:
        if proc.stderr:
            proc.stderr.close()
    assert [code for code, _ in results] == [0] * 6, results
    assert query(settings, "select value from counters where name='keys'") == [{"value": 0}]
    [secret] = query(settings, "select value from meta where name='page_token_secret'")
    assert len(secret["value"]) == 64
