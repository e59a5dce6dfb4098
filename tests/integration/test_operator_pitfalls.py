"""Operator pitfalls: the CLI run in the wrong place or with the wrong keys, files readable by others,
and the small things an admin trips over."""

from __future__ import annotations

import logging
import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.crypto import Vault, generate_key
from app.pool import UpstreamStore
from app.settings import Settings
from tests.support import FakeUpstreamThread, poolgate


@pytest.fixture
def umask_022() -> Iterator[None]:
    """The umask most systems have: files 0644 and directories 0755 unless the program says otherwise."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_data_directory_and_database_files_are_private_whatever_the_umask(
        empty_settings: Settings, umask_022: None) -> None:
    if not empty_settings.is_sqlite:
        pytest.skip("the files of a SQLite database")
    assert not empty_settings.data_dir.exists()
    assert poolgate(empty_settings, "db", "upgrade").code == 0
    assert poolgate(empty_settings, "keys", "create", "alice", "--models", "*").code == 0
    data = empty_settings.data_dir
    assert mode(data) == 0o700
    files = [p for p in data.iterdir() if p.name.startswith("poolgate.db") or p.name == "encryption.key"]
    assert any(p.name == "poolgate.db" for p in files)
    assert {p.name: mode(p) for p in files} == {p.name: 0o600 for p in files}


def test_a_database_made_before_is_tightened_on_the_next_start(settings: Settings, umask_022: None) -> None:
    if not settings.is_sqlite:
        pytest.skip("the files of a SQLite database")
    database = settings.data_dir / "poolgate.db"
    database.chmod(0o644)
    settings.data_dir.chmod(0o755)
    assert poolgate(settings, "keys", "list").code == 0
    assert mode(database) == 0o600  # any command that opens it
    assert poolgate(settings, "db", "upgrade").code == 0
    assert mode(settings.data_dir) == 0o700  # the commands that may create it


def test_only_serve_demo_and_db_upgrade_create_a_database(empty_settings: Settings) -> None:
    for args in (["keys", "create", "alice", "--models", "*"], ["keys", "list"], ["upstreams", "list"],
                 ["usage"], ["admins", "list"]):
        result = poolgate(empty_settings, *args)
        assert result.code == 1, args
        [line] = result.stderr.strip().splitlines()
        assert "poolgate db upgrade" in line
        if empty_settings.is_sqlite:
            assert f"no poolgate database at {empty_settings.data_dir / 'poolgate.db'}" in line
        else:
            assert "has no poolgate schema" in line and "127.0.0.1:5432" in line
    assert not (empty_settings.data_dir / "poolgate.db").exists()


def test_every_command_that_changes_state_names_the_database_it_wrote(settings: Settings) -> None:
    where = poolgate(settings, "keys", "list").stderr + poolgate(settings, "models", "list").stderr
    assert "(database:" not in where  # reading says nothing
    for args in (["keys", "create", "bob", "--models", "gpt-5"], ["keys", "update", "bob", "--rpm", "5"],
                 ["keys", "revoke", "bob"]):
        result = poolgate(settings, *args)
        assert result.code == 0
        assert "(database: " in result.stderr, args


def test_the_cli_with_other_encryption_keys_refuses_to_store_a_credential(settings: Settings) -> None:
    first = poolgate(settings, "upstreams", "add", "acct-1", "--base-url", "http://127.0.0.1:9/v1", "--models", "o3",
                     "--api-key-env", "KEY", env={"KEY": "sk-first-0123456789"})
    assert first.code == 0, first.stderr
    other = {"POOLGATE_ENCRYPTION_KEYS": generate_key(), "KEY": "sk-second-0123456789"}
    result = poolgate(settings, "upstreams", "add", "acct-2", "--base-url", "http://127.0.0.1:9/v1",
                      "--models", "o3", "--api-key-env", "KEY", env=other)
    assert result.code == 1
    [line] = result.stderr.strip().splitlines()
    assert "cannot read the credentials this database holds" in line
    listed = poolgate(settings, "upstreams", "list", "--json").json()
    assert [u["name"] for u in listed] == ["acct-1"]  # nothing was written


async def test_a_server_that_cannot_decrypt_one_upstream_says_so_once_and_serves_from_the_others(
        make_gateway: Any, caplog: Any) -> None:
    caplog.set_level(logging.ERROR, logger="poolgate")
    gateway = await make_gateway(upstreams={"acct-1": {}, "acct-2": {}})
    # A CLI that holds a newer key first (and the servers' key too, so its check passes) stores with it.
    stored_key = (gateway.settings.data_dir / "encryption.key").read_text().strip()
    newer = Vault((generate_key(), stored_key))
    await UpstreamStore(gateway.state.engine, newer).update("acct-2", credential="sk-acct-2-0123456789abcdef")
    for _ in range(5):
        await gateway.sync()
    said = [r.getMessage() for r in caplog.records if "unusable" in r.getMessage()]
    assert len(said) == 1 and "acct-2" in said[0]
    metrics = (await gateway.client.get("/metrics", headers=gateway.auth(gateway.settings.metrics_token))).text
    assert 'poolgate_upstream_usable{upstream="acct-2"} 0' in metrics
    assert 'poolgate_upstream_usable{upstream="acct-1"} 1' in metrics
    for _ in range(6):
        response = await gateway.client.post("/v1/chat/completions", headers=gateway.auth(),
                                             json={"model": "gpt-5", "messages": [{"role": "user", "content": "x"}]})
        assert response.status_code == 200
    assert gateway.served_by()["acct-2"] == 0


def test_help_shows_every_default(settings: Settings) -> None:
    for command in ("serve", "demo"):
        text = poolgate(settings, command, "--help").stdout
        assert "Port ." not in text
        assert "POOLGATE_PORT or 8080" in text


def test_demo_on_a_busy_port_says_so_and_prints_no_key(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = poolgate(Settings(data_dir=tmp_path / "unused"), "demo", "--port", str(port), process=True)
    assert result.code == 1
    assert f":{port}: it is in use" in result.stderr and "pg_" not in result.stdout + result.stderr


def test_budgets_print_as_money(settings: Settings) -> None:
    result = poolgate(settings, "keys", "create", "tiny", "--models", "*", "--budget-usd", "0.000001",
                      "--budget-period", "day")
    assert result.code == 0
    assert "1e-06" not in result.stdout and "$0.000001/day" in result.stdout


def test_revoking_twice_and_an_update_without_flags_say_what_happened(settings: Settings) -> None:
    assert poolgate(settings, "keys", "create", "bob", "--models", "*").code == 0
    assert "revoked key" in poolgate(settings, "keys", "revoke", "bob").stdout
    again = poolgate(settings, "keys", "revoke", "bob")
    assert "already revoked" in again.stdout + again.stderr and "revoked key" not in again.stdout
    assert poolgate(settings, "keys", "create", "carol", "--models", "*").code == 0
    nothing = poolgate(settings, "keys", "update", "carol")
    assert nothing.code == 1 and "nothing to change" in nothing.stderr


def test_a_key_pattern_that_matches_no_model_warns(settings: Settings) -> None:
    result = poolgate(settings, "keys", "create", "typo", "--models", "gtp-5*,gpt-5")
    assert result.code == 0
    assert "'gtp-5*' matches no model" in result.stderr and "'gpt-5'" not in result.stderr


def test_a_base_url_without_v1_is_taken_with_a_warning(settings: Settings) -> None:
    fake = FakeUpstreamThread(name="acct", api_key="sk-acct-0123456789abcdef", models=("gpt-5",))
    try:
        without = fake.base_url.removesuffix("/v1")
        result = poolgate(settings, "upstreams", "add", "acct", "--base-url", without, "--models", "gpt-5",
                          "--api-key-env", "KEY", env={"KEY": "sk-acct-0123456789abcdef"})
        assert result.code == 0
        assert f"{without}/v1" in result.stderr and "warning" in result.stderr
        right = poolgate(settings, "upstreams", "add", "acct-v1", "--base-url", fake.base_url, "--models", "gpt-5",
                         "--api-key-env", "KEY", env={"KEY": "sk-acct-0123456789abcdef"})
        assert right.code == 0 and "warning" not in right.stderr
    finally:
        fake.stop()


def test_models_list_shows_every_model_and_the_upstreams_serving_it(settings: Settings) -> None:
    assert poolgate(settings, "upstreams", "add", "openai", "--base-url", "http://127.0.0.1:9/v1",
                    "--models", "gpt-5*", "--api-key-env", "KEY", env={"KEY": "sk-0123456789abcdef"}).code == 0
    listed = {m["id"]: m for m in poolgate(settings, "models", "list", "--json").json()["data"]}
    assert listed["gpt-5"]["served_by"] == ["openai"]
    assert listed["claude-sonnet-4-5"]["served_by"] == []  # listed for the admin, not for clients
