from __future__ import annotations

from pathlib import Path

import pytest

from app.quota import format_reset
from app.settings import Settings, SettingsError


def test_defaults_are_sqlite_in_the_data_dir_on_localhost_8080() -> None:
    settings = Settings.from_env({})
    assert (settings.host, settings.port, settings.limits_url) == ("127.0.0.1", 8080, "memory://")
    assert settings.database_url == "sqlite+aiosqlite:///data/poolgate.db"


def test_values_come_from_poolgate_variables(tmp_path: Path) -> None:
    settings = Settings.from_env({
        "POOLGATE_DATA_DIR": str(tmp_path), "POOLGATE_PORT": "9000", "POOLGATE_HOST": "0.0.0.0",
        "POOLGATE_LIMITS_URL": "redis://127.0.0.1:6379/0", "POOLGATE_DATABASE_URL": "postgresql://u:p@db/pg",
    })
    assert settings.port == 9000 and settings.host == "0.0.0.0"
    assert settings.database_url == "postgresql+asyncpg://u:p@db/pg"
    assert settings.limits_url == "redis://127.0.0.1:6379/0"


def test_secrets_can_come_from_files(tmp_path: Path) -> None:
    secret = tmp_path / "db-url"
    secret.write_text("postgresql+asyncpg://u:hunter2@db/pg\n")
    settings = Settings.from_env({"POOLGATE_DATABASE_URL_FILE": str(secret)})
    assert settings.database_url == "postgresql+asyncpg://u:hunter2@db/pg"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"POOLGATE_PORT": "http"}, "POOLGATE_PORT: expected an integer, got 'http'"),
        ({"POOLGATE_PORT": "70000"}, "POOLGATE_PORT: expected 1-65535, got 70000"),
        ({"POOLGATE_LIMITS_URL": "mem"}, "POOLGATE_LIMITS_URL: expected memory:// or a Redis URL"),
        ({"POOLGATE_LIMITS_URL": "mongodb://db"}, "POOLGATE_LIMITS_URL: expected memory:// or a Redis URL"),
        ({"POOLGATE_DATABASE_URL": "mysql://x"}, "POOLGATE_DATABASE_URL: expected sqlite"),
        ({"POOLGATE_LOG_LEVEL": "loud"}, "POOLGATE_LOG_LEVEL: expected one of"),
        ({"POOLGATE_DATA_DIR": ""}, "POOLGATE_DATA_DIR: must not be empty"),
        ({"POOLGATE_PORT_FILE": "/nonexistent/port"}, "POOLGATE_PORT_FILE: cannot read"),
        ({"POOLGATE_DATABASE_POOL_SIZE": "1"}, "POOLGATE_DATABASE_POOL_SIZE: expected 2-1000, got 1"),
    ],
)
def test_bad_values_fail_with_one_line_naming_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_env(env)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_a_password_in_a_bad_url_is_never_echoed() -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_env({"POOLGATE_DATABASE_URL": "mysql://admin:hunter2@db/x"})
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize(
    ("seconds", "text"), [(0.02, "20ms"), (1.0, "1s"), (59.2, "1m0s"), (360, "6m0s"), (3723, "1h2m3s")]
)
def test_reset_durations_use_openais_format(seconds: float, text: str) -> None:
    assert format_reset(seconds) == text
