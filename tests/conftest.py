from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from app.settings import Settings
from tests.support import Databases


@pytest.fixture(scope="session")
def databases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Databases]:
    """Where tests keep their data: SQLite files, or PostgreSQL when POOLGATE_TEST_DATABASE_URL is set."""
    databases = Databases.from_env(tmp_path_factory.mktemp("databases"))
    try:
        yield databases
    finally:
        databases.close()


@pytest.fixture
def make_settings(databases: Databases, tmp_path: Path) -> Iterator[Callable[..., Settings]]:
    """``make_settings(data_dir=None, migrated=True, **fields)``: settings with a database of their own,
    migrated (a copy of the run's template) or empty; dropped after the test."""
    made: list[Settings] = []

    def make(data_dir: Path | None = None, *, migrated: bool = True, **changes: Any) -> Settings:
        settings = databases.settings(data_dir or tmp_path / "data", migrated=migrated, **changes)
        made.append(settings)
        return settings

    yield make
    for settings in made:
        databases.release(settings)


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    """A fresh data directory and a migrated database of its own; fast key sync for tests."""
    return make_settings(sync_interval=0.1)


@pytest.fixture
def empty_settings(make_settings: Callable[..., Settings]) -> Settings:
    """A fresh data directory and a database that has never been migrated."""
    return make_settings(migrated=False, sync_interval=0.1)


def pytest_report_header() -> str:
    server = Databases.from_env().server
    where = "a SQLite file" if server is None else f"a PostgreSQL database on {server.render_as_string()}"
    return f"databases: {where} per test, copied from one migrated template"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that use a database are marked ``db``: the PostgreSQL leg of CI runs only those."""
    for item in items:
        if "databases" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.db)
