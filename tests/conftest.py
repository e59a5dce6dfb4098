from __future__ import annotations

from pathlib import Path

import pytest

from app.settings import Settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """A fresh data directory with a real SQLite file; fast key sync for tests."""
    return Settings(data_dir=tmp_path / "data", sync_interval=0.1)
