"""The in-process key cache: what a request consults instead of the database.

A background task calls :meth:`KeyCache.refresh` every sync interval; it reads one
counter row and, when that moved, only the rows changed since. Revocations,
expiry and disabling made by any process therefore reach this one within one
interval plus one query.
"""

from __future__ import annotations

import enum

from keys._policy import Policy
from keys._records import KeyRecord
from keys._store import KeyStore
from keys._token import parse_token

__all__ = ["AuthRejected", "KeyCache", "Rejection"]


class Rejection(enum.Enum):
    INVALID = "invalid"  # missing, malformed, unknown, wrong secret or revoked: one answer for all
    EXPIRED = "expired"
    DISABLED = "disabled"


class AuthRejected(Exception):
    def __init__(self, reason: Rejection, record: KeyRecord | None = None) -> None:
        super().__init__(reason.value)
        self.reason = reason
        self.record = record


class KeyCache:
    def __init__(self, store: KeyStore) -> None:
        self._store = store
        self._by_id: dict[str, KeyRecord] = {}
        self._policies: dict[str, Policy] = {}
        self.revision = 0

    def __len__(self) -> int:
        return len(self._by_id)

    def get(self, public_id: str) -> KeyRecord | None:
        return self._by_id.get(public_id)

    def records(self) -> list[KeyRecord]:
        return list(self._by_id.values())

    def policies(self) -> list[Policy]:
        """The distinct policies seen so far (keys share them), for pre-computing views."""
        return list(self._policies.values())

    def authenticate(self, token: str, now: float) -> KeyRecord:
        """The key a token belongs to, if it may be used now; raises :class:`AuthRejected`."""
        parts = parse_token(token)
        if parts is None:
            raise AuthRejected(Rejection.INVALID)
        record = self._by_id.get(parts.public_id)
        if record is None or not record.secret_ok(parts.secret, now):
            raise AuthRejected(Rejection.INVALID)
        if record.revoked_at is not None:
            raise AuthRejected(Rejection.INVALID)
        if record.expires_at is not None and now >= record.expires_at:
            raise AuthRejected(Rejection.EXPIRED, record)
        if record.disabled:
            raise AuthRejected(Rejection.DISABLED, record)
        return record

    async def refresh(self) -> int:
        """Apply what changed since the last refresh; returns how many keys changed."""
        if self.revision:
            stored = await self._store.revision()
            if stored == self.revision:
                return 0
            if stored < self.revision:  # the database was restored from an older copy: start over
                self._by_id, self.revision = {}, 0
        records, dropped, revision = await self._store.changes_since(self.revision, self._policies)
        by_id = self._by_id
        for key_id in dropped:
            by_id.pop(key_id, None)
        for record in records:
            by_id[record.id] = record
        self.revision = max(self.revision, revision)
        return len(records) + len(dropped)
