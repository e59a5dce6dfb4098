"""Upstream credentials at rest (app/crypto.py): encrypted, rotatable, and a clear line when keys differ."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from app.crypto import KEY_FILE_NAME, Vault, VaultError, generate_key
from app.settings import Settings, SettingsError


def test_a_secret_round_trips_and_is_not_stored_in_clear() -> None:
    vault = Vault((generate_key(),))
    token = vault.encrypt("sk-live-secret")
    assert "sk-live-secret" not in token and vault.decrypt(token) == "sk-live-secret"
    assert vault.encrypt("sk-live-secret") != token  # a fresh nonce each time


def test_rotation_reads_with_any_key_and_writes_with_the_newest() -> None:
    old, new = generate_key(), generate_key()
    stored = Vault((old,)).encrypt("sk-1")
    both = Vault((new, old))
    assert both.decrypt(stored) == "sk-1"
    rotated = both.rotate(stored)
    assert Vault((new,)).decrypt(rotated) == "sk-1"
    with pytest.raises(VaultError, match="POOLGATE_ENCRYPTION_KEYS"):
        Vault((old,)).decrypt(rotated, what="the credential of upstream 'acct-1'")


def test_a_wrong_key_is_one_clear_line_that_holds_no_secret() -> None:
    stored = Vault((generate_key(),)).encrypt("sk-live-secret")
    with pytest.raises(VaultError) as info:
        Vault((generate_key(),)).decrypt(stored, what="the credential of upstream 'acct-1'")
    assert "acct-1" in str(info.value) and "sk-live" not in str(info.value) and "\n" not in str(info.value)


def test_without_keys_set_a_private_key_file_is_made_once(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    old = os.umask(0o022)
    try:
        vaults: list[Vault] = []
        threads = [threading.Thread(target=lambda: vaults.append(Vault.from_settings(settings))) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        os.umask(old)
    key_file = settings.data_dir / KEY_FILE_NAME
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    token = vaults[0].encrypt("x")
    assert all(v.decrypt(token) == "x" for v in vaults)  # every process that raced made the same choice


def test_a_key_file_that_is_not_a_key_or_missing_is_one_line(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    with pytest.raises(SettingsError, match="does not exist"):
        Vault.from_settings(settings, create=False)
    (tmp_path / KEY_FILE_NAME).write_text("not a key\n")
    with pytest.raises(SettingsError, match="does not hold a Fernet key"):
        Vault.from_settings(settings)
