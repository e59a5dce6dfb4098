"""The API-key token: ``pg_<public id>_<secret><checksum>``.

The public id (12 base36 characters) names the key in lists and logs. The secret is
32 base62 characters (about 190 random bits). A 6-character CRC32 checksum over the
rest lets malformed or mistyped keys be rejected without any lookup. Admin tokens have
the same shape with the prefix ``pga``, so one can never be taken for the other.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string
import zlib
from typing import NamedTuple

__all__ = [
    "ADMIN_PREFIX",
    "ParsedToken",
    "generate_token",
    "hash_secret",
    "new_public_id",
    "parse_token",
    "secret_digest",
    "secret_matches",
]

PREFIX = "pg"
ADMIN_PREFIX = "pga"
ID_ALPHABET = string.ascii_lowercase + string.digits
SECRET_ALPHABET = string.ascii_letters + string.digits
ID_LENGTH = 12
SECRET_LENGTH = 32
CHECKSUM_LENGTH = 6
TOKEN_LENGTH = len(PREFIX) + 2 + ID_LENGTH + SECRET_LENGTH + CHECKSUM_LENGTH
_SHAPES = {
    prefix: re.compile(
        rf"{prefix}_([a-z0-9]{{{ID_LENGTH}}})_([A-Za-z0-9]{{{SECRET_LENGTH}}})([A-Za-z0-9]{{{CHECKSUM_LENGTH}}})"
    )
    for prefix in (PREFIX, ADMIN_PREFIX)
}
_BASE62 = [a + b for a in SECRET_ALPHABET for b in SECRET_ALPHABET]  # two digits per step


class ParsedToken(NamedTuple):
    public_id: str
    secret: str


def new_public_id() -> str:
    return "".join(secrets.choice(ID_ALPHABET) for _ in range(ID_LENGTH))


def generate_token(public_id: str | None = None, *, prefix: str = PREFIX) -> tuple[str, ParsedToken]:
    """A fresh token (for a new key, or a new secret for an existing public id)."""
    public_id = public_id or new_public_id()
    secret = "".join(secrets.choice(SECRET_ALPHABET) for _ in range(SECRET_LENGTH))
    body = f"{prefix}_{public_id}_{secret}"
    return body + _checksum(body), ParsedToken(public_id, secret)


def parse_token(token: str, *, prefix: str = PREFIX) -> ParsedToken | None:
    """The token's parts, or None when its shape or checksum is wrong (no lookup needed)."""
    match = _SHAPES[prefix].fullmatch(token)
    if match is None:
        return None
    public_id, secret, checksum = match.groups()
    if not hmac.compare_digest(checksum, _checksum(token[:-CHECKSUM_LENGTH])):
        return None
    return ParsedToken(public_id, secret)


def hash_secret(secret: str) -> str:
    """What is stored: the SHA-256 of the secret, hex. The secret itself never is."""
    return hashlib.sha256(secret.encode()).hexdigest()


def secret_digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def secret_matches(secret: str, stored_digest: bytes) -> bool:
    """Constant-time comparison of the secret's SHA-256 with the stored one (raw bytes)."""
    return hmac.compare_digest(hashlib.sha256(secret.encode()).digest(), stored_digest)


def _checksum(body: str) -> str:
    """Six base62 digits of the CRC32 (62**6 > 2**32, so nothing is lost)."""
    value = zlib.crc32(body.encode())
    high, low = divmod(value, 3844 * 3844)
    middle, low = divmod(low, 3844)
    return _BASE62[high] + _BASE62[middle] + _BASE62[low]
