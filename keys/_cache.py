"""The in-process key cache: what a request consults instead of the database.

A background task calls :meth:`KeyCache.refresh` every sync interval; it reads one
counter row and, when that moved, only the rows changed since. Revocations,
expiry and disabling made by any process therefore reach this one within one
interval plus one query.

A well-formed key this cache has not seen yet (made a moment ago, elsewhere) is looked
up in the database once (:meth:`KeyCache.fetch`), so it works at once rather than after
the next sync. Misses are remembered briefly and lookups are rate-limited, so keys that
do not exist cost at most a few queries a second; malformed ones never cost one.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable

from keys._policy import Policy
from keys._records import KeyRecord
from keys._store import KeyStore
from keys._token import parse_token

__all__ = ["AuthRejected", "KeyCache", "NotCached", "Rejection"]

MISS_TTL = 2.0  # seconds a public id that is not in the database is not looked up again
MISSES_KEPT = 10_000
LOOKUPS_PER_SECOND = 50.0


class Rejection(enum.Enum):
    INVALID = "invalid"  # missing, malformed, unknown, wrong secret or revoked: one answer for all
    EXPIRED = "expired"
    DISABLED = "disabled"


class AuthRejected(Exception):
    def __init__(self, reason: Rejection, record: KeyRecord | None = None) -> None:
        super().__init__(reason.value)
        self.reason = reason
        self.record = record


class NotCached(Exception):
    """A well-formed token whose public id this cache does not hold: :meth:`KeyCache.fetch` it."""

    def __init__(self, token: str, public_id: str) -> None:
        super().__init__(public_id)
        self.token = token
        self.public_id = public_id


class KeyCache:
    def __init__(self, store: KeyStore, clock: Callable[[], float] = time.monotonic) -> None:
        self._store = store
        self._by_id: dict[str, KeyRecord] = {}
        self._policies: dict[str, Policy] = {}
        self._missing: dict[str, float] = {}
        self._clock = clock
        self._allowance = LOOKUPS_PER_SECOND
        self._allowance_at = clock()
        self.revision = 0
        self.lookups = 0
        """Database lookups made for keys the cache did not hold (a metric)."""

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
        """The key a token belongs to, if it may be used now; raises :class:`AuthRejected`, or
        :class:`NotCached` for a well-formed key this cache has not seen (then await :meth:`fetch`)."""
        parts = parse_token(token)
        if parts is None:
            raise AuthRejected(Rejection.INVALID)
        record = self._by_id.get(parts.public_id)
        if record is None:
            raise NotCached(token, parts.public_id)
        return self._check(record, parts.secret, now)

    async def fetch(self, miss: NotCached, now: float) -> KeyRecord:
        """Look a key up in the database once; a key that is not there is refused for a while."""
        public_id = miss.public_id
        clock = self._clock()
        until = self._missing.get(public_id)
        if (until is not None and clock < until) or not self._may_look_up(clock):
            raise AuthRejected(Rejection.INVALID)
        self.lookups += 1
        record = await self._store.live(public_id)
        if record is None:
            if len(self._missing) >= MISSES_KEPT:
                self._missing.clear()
            self._missing[public_id] = clock + MISS_TTL
            raise AuthRejected(Rejection.INVALID)
        self._by_id.setdefault(public_id, record)
        parts = parse_token(miss.token)
        assert parts is not None
        return self._check(self._by_id[public_id], parts.secret, now)

    def _may_look_up(self, clock: float) -> bool:
        """A token bucket: a flood of made-up keys cannot turn into a flood of queries."""
        self._allowance = min(LOOKUPS_PER_SECOND, self._allowance + (clock - self._allowance_at) * LOOKUPS_PER_SECOND)
        self._allowance_at = clock
        if self._allowance < 1:
            return False
        self._allowance -= 1
        return True

    @staticmethod
    def _check(record: KeyRecord, secret: str, now: float) -> KeyRecord:
        if not record.secret_ok(secret, now):
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
            self._missing.pop(record.id, None)
        self.revision = max(self.revision, revision)
        return len(records) + len(dropped)
