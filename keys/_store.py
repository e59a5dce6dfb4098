"""The key store: create, change and read keys in the database.

Every change bumps the ``keys`` counter in the same transaction and stamps the row with
the new value, so a serving process learns of changes by polling one row and then
reading only the rows newer than what it has. Writes on SQLite take the write lock at
``BEGIN`` (``BEGIN IMMEDIATE``) so two writers never deadlock on an upgrade. PostgreSQL
lets writers run side by side, so a change locks the row it reads (``FOR UPDATE``) before
deciding what to write: an edit made meanwhile is then read, never overwritten.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import Row, Table, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app._db import COUNTERS, bump_counter, read_counter, write_transaction
from keys._policy import Policy, PolicyError, policy_from_dict
from keys._records import KeyRecord, to_datetime
from keys._table import ApiKeyRow
from keys._token import generate_token, hash_secret

__all__ = [
    "AuditHook",
    "KeyAlreadyRevoked",
    "KeyNameTaken",
    "KeyNotFound",
    "KeyRevoked",
    "KeyStore",
    "StoreError",
]

log = logging.getLogger("poolgate.keys")

KEYS: Table = ApiKeyRow.__table__  # type: ignore[attr-defined]
MAX_NAME = 200
_UNSET: Any = object()


class AuditHook(Protocol):
    """Records a change inside the transaction that makes it (the admin layer's audit log)."""

    async def __call__(
        self, conn: AsyncConnection, action: str, before: KeyRecord | None, after: KeyRecord
    ) -> None: ...


class StoreError(Exception):
    """A change the store refuses; the message is fit for the person who asked."""


class KeyNotFound(StoreError):
    def __init__(self, ref: str) -> None:
        super().__init__(f"no key with id or name {ref!r} (see: poolgate keys list)")


class KeyNameTaken(StoreError):
    def __init__(self, name: str) -> None:
        super().__init__(f"a key named {name!r} already exists; choose another name")


class KeyRevoked(StoreError):
    def __init__(self, record: KeyRecord) -> None:
        super().__init__(f"key {record.id} ({record.name}) is revoked and cannot be changed")


def _ts(value: datetime | None) -> float | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


def _record(row: Row[Any], policies: dict[str, Policy] | None = None) -> KeyRecord:
    m = row._mapping
    raw_policy = m["policy"]
    policy: Policy | None = None
    cache_key = ""
    if policies is not None:
        cache_key = repr(sorted(raw_policy.items()))
        policy = policies.get(cache_key)
    if policy is None:
        policy = policy_from_dict(raw_policy)
        if policies is not None:
            policies[cache_key] = policy
    return KeyRecord(
        id=m["id"],
        name=m["name"],
        secret_digest=bytes.fromhex(m["secret_hash"]),
        previous_secret_digest=bytes.fromhex(m["previous_secret_hash"]) if m["previous_secret_hash"] else None,
        previous_expires_at=_ts(m["previous_expires_at"]),
        policy=policy,
        expires_at=_ts(m["expires_at"]),
        disabled=bool(m["disabled"]),
        revoked_at=_ts(m["revoked_at"]),
        created_at=_ts(m["created_at"]) or 0.0,
        updated_at=_ts(m["updated_at"]) or 0.0,
        revision=int(m["revision"]),
    )


def _check_name(name: str) -> str:
    cleaned = name.strip()
    if not cleaned or len(cleaned) > MAX_NAME or any(c.isspace() or not c.isprintable() for c in cleaned):
        raise StoreError(f"invalid key name {name!r}: use 1-{MAX_NAME} printable characters without spaces")
    return cleaned


class KeyAlreadyRevoked(StoreError):
    def __init__(self, record: KeyRecord) -> None:
        super().__init__(f"key {record.id} ({record.name}) was already revoked")
        self.record = record


class KeyStore:
    """All key reads and writes, shared by the CLI, the admin API and the serving cache.

    ``audit`` (when given) records every change inside the transaction that makes it, so a
    change and its audit entry land together or not at all.
    """

    def __init__(self, engine: AsyncEngine, audit: AuditHook | None = None) -> None:
        self.engine = engine
        self.audit = audit

    def _write(self) -> AbstractAsyncContextManager[AsyncConnection]:
        return write_transaction(self.engine)

    async def _bump(self, conn: AsyncConnection) -> int:
        return await bump_counter(conn, "keys")

    async def _find(self, conn: AsyncConnection, ref: str, *, lock: bool = False) -> KeyRecord:
        """By id, else by name (the live key of that name, else the newest revoked one).

        ``lock`` holds the row until the transaction ends (SQLite ignores it: its writers
        already run one at a time)."""
        by_id = select(KEYS).where(KEYS.c.id == ref)
        row = (await conn.execute(by_id.with_for_update() if lock else by_id)).first()
        if row is None:
            by_name = (select(KEYS).where(KEYS.c.name == ref)
                       .order_by(KEYS.c.revoked_at.is_not(None), KEYS.c.revision.desc()).limit(1))
            row = (await conn.execute(by_name.with_for_update() if lock else by_name)).first()
        if row is None:
            raise KeyNotFound(ref)
        return _record(row)

    async def _audit(self, conn: AsyncConnection, action: str, before: KeyRecord | None, after: KeyRecord) -> None:
        if self.audit is not None:
            await self.audit(conn, action, before, after)

    async def create(
        self, name: str, policy: Policy, *, expires_at: float | None = None, disabled: bool = False
    ) -> tuple[KeyRecord, str]:
        """A new key and its full token; the token is not stored and cannot be shown again."""
        name = _check_name(name)
        token, parts = generate_token()
        now = datetime.now(UTC)
        async with self._write() as conn:
            revision = await self._bump(conn)
            try:
                await conn.execute(KEYS.insert().values(
                    id=parts.public_id, name=name, secret_hash=hash_secret(parts.secret),
                    policy=policy.to_dict(), expires_at=to_datetime(expires_at), disabled=disabled,
                    created_at=now, updated_at=now, revision=revision,
                ))
            except IntegrityError:
                raise KeyNameTaken(name) from None
            record = await self._find(conn, parts.public_id)
            await self._audit(conn, "key.create", None, record)
        return record, token

    async def update(
        self,
        ref: str,
        *,
        policy: Policy | Callable[[Policy], Policy] | None = None,
        name: str | None = None,
        expires_at: float | None = _UNSET,
        disabled: bool | None = None,
    ) -> KeyRecord:
        """Change a key. ``policy`` may be a function of the current policy: it runs inside the
        write transaction, so two concurrent edits of different fields both land."""
        async with self._write() as conn:
            current = await self._find(conn, ref, lock=True)
            if current.revoked_at is not None:
                raise KeyRevoked(current)
            values: dict[str, Any] = {}
            if callable(policy):
                policy = policy(current.policy)
            if policy is not None:
                values["policy"] = policy.to_dict()
            if name is not None:
                values["name"] = _check_name(name)
            if expires_at is not _UNSET:
                values["expires_at"] = to_datetime(expires_at)
            if disabled is not None:
                values["disabled"] = disabled
            record = await self._change(conn, current, values)
            await self._audit(conn, "key.update", current, record)
            return record

    async def revoke(self, ref: str) -> KeyRecord:
        """Revoke for good; raises :class:`KeyAlreadyRevoked` when it already was."""
        async with self._write() as conn:
            current = await self._find(conn, ref, lock=True)
            if current.revoked_at is not None:
                raise KeyAlreadyRevoked(current)
            record = await self._change(conn, current, {"revoked_at": datetime.now(UTC)})
            await self._audit(conn, "key.revoke", current, record)
            return record

    async def rotate(self, ref: str, *, grace_seconds: float = 0.0) -> tuple[KeyRecord, str]:
        """A new secret for the same key id; the old one keeps working for ``grace_seconds``."""
        if grace_seconds < 0:
            raise StoreError("grace must not be negative")
        async with self._write() as conn:
            current = await self._find(conn, ref, lock=True)
            if current.revoked_at is not None:
                raise KeyRevoked(current)
            token, parts = generate_token(current.id)
            keep_old = grace_seconds > 0
            record = await self._change(conn, current, {
                "secret_hash": hash_secret(parts.secret),
                "previous_secret_hash": current.secret_digest.hex() if keep_old else None,
                "previous_expires_at": to_datetime(time.time() + grace_seconds) if keep_old else None,
            })
            await self._audit(conn, "key.rotate", current, record)
        return record, token

    async def _change(self, conn: AsyncConnection, current: KeyRecord, values: dict[str, Any]) -> KeyRecord:
        values["revision"] = await self._bump(conn)
        values["updated_at"] = datetime.now(UTC)
        try:
            await conn.execute(update(KEYS).where(KEYS.c.id == current.id).values(**values))
        except IntegrityError:
            raise KeyNameTaken(str(values.get("name"))) from None
        return await self._find(conn, current.id)

    async def get(self, ref: str) -> KeyRecord:
        async with self.engine.connect() as conn:
            return await self._find(conn, ref)

    async def live(self, public_id: str) -> KeyRecord | None:
        """The live key with this public id, or None: one indexed read, for a key the cache has not seen yet."""
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(KEYS).where(KEYS.c.id == public_id, KEYS.c.revoked_at.is_(None)))).first()
        if row is None:
            return None
        try:
            return _record(row)
        except (PolicyError, ValueError):
            return None

    async def list(self, *, include_revoked: bool = False) -> list[KeyRecord]:
        query = select(KEYS).order_by(KEYS.c.created_at, KEYS.c.id)
        if not include_revoked:
            query = query.where(KEYS.c.revoked_at.is_(None))
        async with self.engine.connect() as conn:
            policies: dict[str, Policy] = {}
            return [_record(row, policies) for row in await conn.execute(query)]

    async def names(self) -> dict[str, str]:
        """Every key's name by id, revoked ones included (for reports)."""
        async with self.engine.connect() as conn:
            return {row.id: row.name for row in await conn.execute(select(KEYS.c.id, KEYS.c.name))}

    async def revision(self) -> int:
        return await read_counter(self.engine, "keys")

    async def changes_since(
        self, revision: int, policies: dict[str, Policy]
    ) -> tuple[Sequence[KeyRecord], set[str], int]:
        """Keys changed after ``revision``: live ones to (re)load, ids to drop, the newest revision.

        A revoked row is dropped by id without reading its policy, and a live row this
        version cannot read is dropped too (and logged): a key is refused rather than
        left with rights it may no longer have.
        """
        query = select(KEYS).where(KEYS.c.revision > revision).order_by(KEYS.c.revision)
        if revision == 0:
            query = query.where(KEYS.c.revoked_at.is_(None))
        async with self.engine.connect() as conn:
            newest = (await conn.execute(select(COUNTERS.c.value).where(COUNTERS.c.name == "keys"))).scalar()
            rows = (await conn.execute(query)).all()
        records: list[KeyRecord] = []
        dropped: set[str] = set()
        highest = int(newest or 0)
        for row in rows:
            highest = max(highest, int(row.revision))
            if row.revoked_at is not None:
                dropped.add(row.id)
                continue
            try:
                records.append(_record(row, policies))
            except (PolicyError, ValueError) as exc:
                log.error("key %s is refused until fixed: its stored policy cannot be read: %s", row.id, exc)
                dropped.add(row.id)
        return records, dropped, highest
