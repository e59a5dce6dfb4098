from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from app.settings import Settings
from tests.support import Databases


@pytest.fixture(scope="session")
def databases() -> Iterator[Databases]:
    """Where tests keep their data: SQLite files, or PostgreSQL when POOLGATE_TEST_DATABASE_URL is set."""
    databases = Databases.from_env()
    try:
        yield databases
    finally:
        databases.close()


@pytest.fixture
def make_settings(databases: Databases, tmp_path: Path) -> Iterator[Callable[..., Settings]]:
    """``make_settings(data_dir=None, **fields)``: settings with a fresh database, dropped after the test."""
    made: list[Settings] = []

    def make(data_dir: Path | None = None, **changes: Any) -> Settings:
        settings = databases.settings(data_dir or tmp_path / "data", **changes)
        made.append(settings)
        return settings

    yield make
    for settings in made:
        databases.release(settings)


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    """A fresh data directory and a fresh, empty database; fast key sync for tests."""
    return make_settings(sync_interval=0.1)


def pytest_report_header() -> str:
    server = Databases.from_env().server
    where = "a SQLite file" if server is None else f"a PostgreSQL database on {server.render_as_string()}"
    return f"databases: {where} per test"
