"""Upstream credentials at rest: MultiFernet, newest key first, so keys can rotate.

Keys come from ``POOLGATE_ENCRYPTION_KEYS`` (or ``..._FILE``). When neither is set, a key
file is generated in the data directory with mode 0600 and used from then on.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from app.settings import Settings, SettingsError

__all__ = ["KEY_FILE_NAME", "Vault", "VaultError", "generate_key"]

KEY_FILE_NAME = "encryption.key"


class VaultError(Exception):
    """A stored secret cannot be decrypted with the configured keys."""


class Vault:
    def __init__(self, keys: tuple[str, ...]) -> None:
        if not keys:
            raise ValueError("at least one key is needed")
        self._fernet = MultiFernet([Fernet(key.encode()) for key in keys])
        self.key_count = len(keys)

    @classmethod
    def from_settings(cls, settings: Settings, *, create: bool = True) -> Vault:
        if settings.encryption_keys:
            return cls(settings.encryption_keys)
        return cls((_key_file(settings.data_dir / KEY_FILE_NAME, create=create),))

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def decrypt(self, token: str, *, what: str = "a stored secret") -> str:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken:
            raise VaultError(
                f"cannot decrypt {what}: none of the configured encryption keys opens it. Set "
                "POOLGATE_ENCRYPTION_KEYS to the key it was stored with (newest first, comma-separated)"
            ) from None

    def rotate(self, token: str) -> str:
        """Re-encrypt under the newest key."""
        try:
            return self._fernet.rotate(token.encode()).decode()
        except InvalidToken:
            raise VaultError("cannot re-encrypt a stored secret: no configured key opens it") from None


def generate_key() -> str:
    return Fernet.generate_key().decode()


def _key_file(path: Path, *, create: bool) -> str:
    try:
        key = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        if not create:
            raise SettingsError(
                f"no encryption key: {path} does not exist and POOLGATE_ENCRYPTION_KEYS is not set"
            ) from None
        key = generate_key()
        path.parent.mkdir(parents=True, exist_ok=True)
        # Written whole under a temporary name, then linked into place: a process starting at the
        # same moment sees either no file or a complete one, and the first link wins.
        temporary = path.with_name(f".{path.name}.{os.getpid()}")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(key + "\n")
        try:
            os.link(temporary, path)
        except FileExistsError:
            return _key_file(path, create=False)
        finally:
            temporary.unlink(missing_ok=True)
        return key
    except OSError as exc:
        raise SettingsError(f"cannot read the encryption key file {path}: {exc.strerror}") from None
    try:
        Fernet(key.encode())
    except ValueError:
        raise SettingsError(f"{path} does not hold a Fernet key") from None
    return key

