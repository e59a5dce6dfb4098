"""The API-key token: ``pg_<public id>_<secret><checksum>``.

The public id (12 base36 characters) names the key in lists and logs. The secret is
32 base62 characters (about 190 random bits). A 6-character CRC32 checksum over the
rest lets malformed or mistyped keys be rejected without any lookup.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
import zlib
from typing import NamedTuple

__all__ = ["ParsedToken", "generate_token", "hash_secret", "new_public_id", "parse_token", "secret_matches"]

PREFIX = "pg"
ID_ALPHABET = string.ascii_lowercase + string.digits
SECRET_ALPHABET = string.ascii_letters + string.digits
ID_LENGTH = 12
SECRET_LENGTH = 32
CHECKSUM_LENGTH = 6
TOKEN_LENGTH = len(PREFIX) + 2 + ID_LENGTH + SECRET_LENGTH + CHECKSUM_LENGTH
_ID_CHARS = frozenset(ID_ALPHABET)
_SECRET_CHARS = frozenset(SECRET_ALPHABET)


class ParsedToken(NamedTuple):
    public_id: str
    secret: str


def new_public_id() -> str:
    return "".join(secrets.choice(ID_ALPHABET) for _ in range(ID_LENGTH))


def generate_token(public_id: str | None = None) -> tuple[str, ParsedToken]:
    """A fresh token (for a new key, or a new secret for an existing public id)."""
    public_id = public_id or new_public_id()
    secret = "".join(secrets.choice(SECRET_ALPHABET) for _ in range(SECRET_LENGTH))
    body = f"{PREFIX}_{public_id}_{secret}"
    return body + _checksum(body), ParsedToken(public_id, secret)


def parse_token(token: str) -> ParsedToken | None:
    """The token's parts, or None when its shape or checksum is wrong (no lookup needed)."""
    if len(token) != TOKEN_LENGTH or not token.startswith(PREFIX + "_"):
        return None
    public_id = token[3 : 3 + ID_LENGTH]
    if token[3 + ID_LENGTH] != "_":
        return None
    secret = token[4 + ID_LENGTH : 4 + ID_LENGTH + SECRET_LENGTH]
    checksum = token[-CHECKSUM_LENGTH:]
    if not _ID_CHARS.issuperset(public_id) or not _SECRET_CHARS.issuperset(secret):
        return None
    if not hmac.compare_digest(checksum, _checksum(token[:-CHECKSUM_LENGTH])):
        return None
    return ParsedToken(public_id, secret)


def hash_secret(secret: str) -> str:
    """What is stored: the SHA-256 of the secret, hex. The secret itself never is."""
    return hashlib.sha256(secret.encode()).hexdigest()


def secret_matches(secret: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(secret), stored_hash)


def _checksum(body: str) -> str:
    value = zlib.crc32(body.encode())
    out = []
    for _ in range(CHECKSUM_LENGTH):
        value, digit = divmod(value, 62)
        out.append(SECRET_ALPHABET[digit])
    return "".join(reversed(out))
