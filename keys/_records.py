"""The in-memory form of a key: plain immutable values, built once per change, read per request."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from keys._policy import Policy
from keys._token import secret_matches

__all__ = ["KeyRecord", "KeyStatus", "to_datetime"]

KeyStatus = Literal["active", "expired", "disabled", "revoked"]


@dataclass(frozen=True, slots=True)
class KeyRecord:
    id: str
    name: str
    secret_digest: bytes
    """SHA-256 of the secret, raw; the cache compares it in constant time and never shows it."""
    previous_secret_digest: bytes | None
    previous_expires_at: float | None
    policy: Policy
    expires_at: float | None
    disabled: bool
    revoked_at: float | None
    created_at: float
    updated_at: float
    revision: int

    def secret_ok(self, secret: str, now: float) -> bool:
        """The current secret, or the previous one while a rotation's grace period lasts."""
        if secret_matches(secret, self.secret_digest):
            return True
        return (
            self.previous_secret_digest is not None
            and self.previous_expires_at is not None
            and now < self.previous_expires_at
            and secret_matches(secret, self.previous_secret_digest)
        )

    def status(self, now: float) -> KeyStatus:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and now >= self.expires_at:
            return "expired"
        if self.disabled:
            return "disabled"
        return "active"

    def public(self, now: float) -> dict[str, object]:
        """What may leave the process about a key: an allow-list, never a hash or secret."""
        return {
            "id": self.id,
            "name": self.name,
            "status": self.status(now),
            **self.policy.to_dict(),
            "expires_at": _iso(self.expires_at),
            "disabled": self.disabled,
            "revoked_at": _iso(self.revoked_at),
            "previous_secret_valid_until": _iso(
                self.previous_expires_at
                if self.previous_expires_at is not None and self.previous_expires_at > now
                else None
            ),
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
        }


def to_datetime(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


def _iso(ts: float | None) -> str | None:
    dt = to_datetime(ts)
    return None if dt is None else dt.isoformat(timespec="seconds").replace("+00:00", "Z")
