"""The ``poolgate`` command as an admin uses it: real subprocesses, a real database."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.settings import Settings
from tests.support import poolgate, query


def _create(settings: Settings, *args: str) -> dict[str, object]:
    result = poolgate(settings, "keys", "create", *args, "--json")
    assert result.code == 0, result.stderr
    data: dict[str, object] = result.json()
    return data


def test_create_prints_the_key_once_and_list_show_never_do(settings: Settings) -> None:
    created = _create(settings, "alice", "--models", "gpt-5*,o3", "--rpm", "60", "--priority",
                      "gpt-5.1-codex,gpt-5*", "--efforts", "low,medium", "--expires", "30d")
    key = str(created["key"])
    assert key.startswith(f"pg_{created['id']}_")
    assert created["allowed_models"] == ["gpt-5*", "o3"]
    assert created["allowed_reasoning_efforts"] == ["low", "medium"]
    assert created["quotas"]["rpm"] == 60  # type: ignore[index]
    assert created["expires_at"] is not None

    listed = poolgate(settings, "keys", "list", "--json")
    shown = poolgate(settings, "keys", "show", "alice", "--json")
    table = poolgate(settings, "keys", "list")
    for result in (listed, shown, table):
        assert result.code == 0
        assert key not in result.stdout and key[16:] not in result.stdout
        assert "secret_hash" not in result.stdout
    assert [k["name"] for k in listed.json()] == ["alice"]
    assert shown.json()["id"] == created["id"]
    assert "alice" in table.stdout


def test_human_output_shows_the_key_with_a_warning(settings: Settings) -> None:
    result = poolgate(settings, "keys", "create", "bob", "--models", "*")
    assert result.code == 0
    assert "shown once" in result.stdout and "pg_" in result.stdout


def test_update_changes_only_the_flags_given(settings: Settings) -> None:
    _create(settings, "carol", "--models", "gpt-5*", "--rpm", "10", "--efforts", "low")
    result = poolgate(settings, "keys", "update", "carol", "--rpd", "1000", "--json")
    assert result.code == 0, result.stderr
    data = result.json()
    assert data["quotas"]["rpm"] == 10 and data["quotas"]["rpd"] == 1000
    assert data["allowed_reasoning_efforts"] == ["low"]
    cleared = poolgate(settings, "keys", "update", "carol", "--rpm", "none", "--efforts", "*", "--disable", "--json")
    data = cleared.json()
    assert data["quotas"]["rpm"] is None and data["allowed_reasoning_efforts"] is None
    assert data["status"] == "disabled"


def test_rotate_prints_a_new_key_for_the_same_id(settings: Settings) -> None:
    created = _create(settings, "dave", "--models", "*")
    result = poolgate(settings, "keys", "rotate", "dave", "--grace", "1h", "--json")
    assert result.code == 0, result.stderr
    rotated = result.json()
    assert rotated["id"] == created["id"] and rotated["key"] != created["key"]
    assert rotated["previous_secret_valid_until"] is not None


def test_revoke_then_list(settings: Settings) -> None:
    created = _create(settings, "erin", "--models", "*")
    assert poolgate(settings, "keys", "revoke", str(created["id"])).code == 0
    assert poolgate(settings, "keys", "list", "--json").json() == []
    everything = poolgate(settings, "keys", "list", "--all", "--json").json()
    assert everything[0]["status"] == "revoked"


def test_models_list_for_a_key_matches_its_view(settings: Settings) -> None:
    _create(settings, "frank", "--models", "o3,gpt-5.1*", "--priority", "o3")
    result = poolgate(settings, "models", "list", "--key", "frank", "--json")
    assert result.code == 0, result.stderr
    ids = [m["id"] for m in result.json()["data"]]
    assert ids[0] == "o3" and set(ids) == {"o3", "gpt-5.1", "gpt-5.1-codex", "gpt-5.1-codex-max", "gpt-5.1-codex-mini"}
    table = poolgate(settings, "models", "list")
    assert table.code == 0 and "claude-sonnet-4-5" in table.stdout


def test_db_upgrade(settings: Settings) -> None:
    result = poolgate(settings, "db", "upgrade", "--json")
    assert result.code == 0, result.stderr
    assert result.json()["status"] == "ok"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["keys", "create", "x"], "--models is required"),
        (["keys", "create", "x", "--models", "*", "--rpm", "-5"], "invalid --rpm -5"),
        (["keys", "create", "x", "--models", "*", "--rpm", "lots"], "invalid --rpm 'lots'"),
        (["keys", "create", "x", "--models", "*", "--budget-usd", "20"], "a budget needs a period"),
        (["keys", "create", "x", "--models", "gpt 5"], "invalid model pattern"),
        (["keys", "create", "x", "--models", "*", "--efforts", "turbo"], "unknown reasoning effort"),
        (["keys", "create", "x", "--models", "*", "--expires", "2001-01-01"], "is in the past"),
        (["keys", "create", "x", "--models", "*", "--expires", "soon"], "invalid expiry"),
        (["keys", "show", "ghost"], "no key with id or name 'ghost'"),
        (["keys", "revoke", "ghost"], "no key with id or name 'ghost'"),
        (["models", "list", "--endpoint", "images"], "invalid --endpoint"),
        (["keys", "create"], "Missing argument 'name'"),
        (["keys", "create", "x", "--models", "*", "--tier", "abc"], "Invalid value for '--tier'"),
        (["keys", "list", "--bogus"], "No such option: --bogus"),
        (["nosuch"], "No such command 'nosuch'"),
    ],
)
def test_bad_input_gets_one_clear_line_and_a_non_zero_exit(
    settings: Settings, args: list[str], message: str
) -> None:
    result = poolgate(settings, *args)
    assert result.code in (1, 2)  # 2 for usage errors, as click does
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_duplicate_name_is_refused_and_nothing_is_half_written(settings: Settings) -> None:
    _create(settings, "gina", "--models", "*")
    result = poolgate(settings, "keys", "create", "gina", "--models", "o3")
    assert result.code == 1 and "already exists" in result.stderr
    assert query(settings, "select count(*) as n, max(revision) as newest from api_keys") == [{"n": 1, "newest": 1}]
    assert query(settings, "select value from counters where name = 'keys'") == [{"value": 1}]


def test_a_data_dir_that_is_a_file_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "data"
    blocker.write_text("not a directory")
    result = poolgate(Settings(data_dir=blocker), "keys", "list")
    assert result.code == 1 and "POOLGATE_DATA_DIR: cannot write to" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_bad_environment_value_is_one_line(settings: Settings) -> None:
    result = poolgate(settings, "keys", "list", env={"POOLGATE_PORT": "eighty"})
    assert result.code == 1 and "POOLGATE_PORT: expected an integer" in result.stderr
