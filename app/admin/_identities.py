"""Admin identities: ``pga_`` tokens, stored as hashes, with a role (``admin`` changes, ``viewer`` reads).

Admins are never key holders: an admin token opens the admin API and dashboard only, and a
poolgate key opens neither. Serving processes hold the live admins in memory (:class:`AdminCache`),
synced like keys through a change counter, so a revoked admin is refused everywhere within 2 s.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import Row, Table, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app._db import COUNTERS, bump_counter, read_counter, write_transaction
from app.admin._table import AdminRow
from keys import ADMIN_PREFIX, StoreError, generate_token, hash_secret, parse_token

__all__ = ["ROLES", "AdminAuditHook", "AdminCache", "AdminRecord", "AdminStore", "Role"]

ADMINS: Table = AdminRow.__table__  # type: ignore[attr-defined]
Role = Literal["admin", "viewer"]
ROLES: tuple[str, ...] = ("admin", "viewer")
MISS_TTL = 2.0


@dataclass(frozen=True, slots=True)
class AdminRecord:
    id: str
    name: str
    role: str
    secret_digest: bytes
    created_at: float
    revoked_at: float | None
    revision: int

    @property
    def may_change(self) -> bool:
        return self.role == "admin"

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "role": self.role, "created_at": _iso(self.created_at),
                "revoked_at": _iso(self.revoked_at)}


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _ts(value: datetime | None) -> float | None:
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()


def _record(row: Row[Any]) -> AdminRecord:
    m = row._mapping
    return AdminRecord(id=m["id"], name=m["name"], role=m["role"], secret_digest=bytes.fromhex(m["secret_hash"]),
                       created_at=_ts(m["created_at"]) or 0.0, revoked_at=_ts(m["revoked_at"]),
                       revision=int(m["revision"]))


def _check_name(name: str) -> str:
    cleaned = name.strip()
    if not cleaned or len(cleaned) > 200 or any(c.isspace() or not c.isprintable() for c in cleaned):
        raise StoreError(f"invalid admin name {name!r}: use 1-200 printable characters without spaces")
    return cleaned


AdminAuditHook = Callable[[AsyncConnection, str, AdminRecord | None, AdminRecord], Awaitable[None]]
"""Records a change inside the transaction that makes it (the audit log), as for keys and upstreams."""


class AdminStore:
    """Admins in the database. ``audit`` (when given) records each creation and revocation inside the
    transaction that makes it; every door that changes admins passes one (see ``AdminService``)."""

    def __init__(self, engine: AsyncEngine, audit: AdminAuditHook | None = None) -> None:
        self.engine = engine
        self.audit = audit

    async def create(self, name: str, role: str) -> tuple[AdminRecord, str]:
        """A new admin and its token (shown once; only its hash is stored)."""
        if role not in ROLES:
            raise StoreError(f"unknown role {role!r}: expected admin or viewer")
        name = _check_name(name)
        token, parts = generate_token(prefix=ADMIN_PREFIX)
        async with write_transaction(self.engine) as conn:
            revision = await bump_counter(conn, "admins")
            try:
                await conn.execute(ADMINS.insert().values(
                    id=parts.public_id, name=name, role=role, secret_hash=hash_secret(parts.secret),
                    created_at=datetime.now(UTC), revision=revision))
            except IntegrityError:
                raise StoreError(f"an admin named {name!r} already exists; choose another name") from None
            record = _record((await conn.execute(select(ADMINS).where(ADMINS.c.id == parts.public_id))).one())
            if self.audit is not None:
                await self.audit(conn, "admin.create", None, record)
        return record, token

    async def list(self, *, include_revoked: bool = False) -> list[AdminRecord]:
        query = select(ADMINS).order_by(ADMINS.c.created_at, ADMINS.c.id)
        if not include_revoked:
            query = query.where(ADMINS.c.revoked_at.is_(None))
        async with self.engine.connect() as conn:
            return [_record(row) for row in await conn.execute(query)]

    async def revoke(self, ref: str) -> AdminRecord:
        async with write_transaction(self.engine) as conn:
            live = ADMINS.c.revoked_at.is_(None)
            row = (await conn.execute(select(ADMINS).where(live, (ADMINS.c.name == ref) | (ADMINS.c.id == ref))
                                      .with_for_update())).first()
            if row is None:
                raise StoreError(f"no admin with name or id {ref!r} (see: poolgate admins list)")
            revision = await bump_counter(conn, "admins")
            await conn.execute(update(ADMINS).where(ADMINS.c.id == row.id)
                               .values(revoked_at=datetime.now(UTC), revision=revision))
            record = _record((await conn.execute(select(ADMINS).where(ADMINS.c.id == row.id))).one())
            if self.audit is not None:
                await self.audit(conn, "admin.revoke", _record(row), record)
            return record

    async def live(self, public_id: str) -> AdminRecord | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(ADMINS).where(ADMINS.c.id == public_id,
                                                           ADMINS.c.revoked_at.is_(None)))).first()
        return None if row is None else _record(row)

    async def changes_since(self, revision: int) -> tuple[Sequence[AdminRecord], int]:
        async with self.engine.connect() as conn:
            newest = (await conn.execute(select(COUNTERS.c.value).where(COUNTERS.c.name == "admins"))).scalar()
            rows = (await conn.execute(select(ADMINS).where(ADMINS.c.revision > revision))).all()
        return [_record(row) for row in rows], int(newest or 0)

    async def revision(self) -> int:
        return await read_counter(self.engine, "admins")


class AdminCache:
    """The live admins, in memory; a token the cache does not know is looked up once (briefly cached)."""

    name = "admins"

    def __init__(self, store: AdminStore, clock: Callable[[], float] = time.monotonic) -> None:
        self._store = store
        self._by_id: dict[str, AdminRecord] = {}
        self._missing: dict[str, float] = {}
        self._clock = clock
        self.revision = 0

    async def refresh(self) -> bool:
        if self.revision and await self._store.revision() == self.revision:
            return False
        records, newest = await self._store.changes_since(self.revision)
        for record in records:
            if record.revoked_at is None:
                self._by_id[record.id] = record
                self._missing.pop(record.id, None)
            else:
                self._by_id.pop(record.id, None)
        self.revision = max(self.revision, newest)
        return bool(records)

    async def authenticate(self, token: str) -> AdminRecord | None:
        """The admin a token belongs to, or None (malformed, unknown, revoked or a wrong secret)."""
        parts = parse_token(token, prefix=ADMIN_PREFIX)
        if parts is None:
            return None
        record = self._by_id.get(parts.public_id)
        if record is None:
            now = self._clock()
            if self._missing.get(parts.public_id, 0.0) > now:
                return None
            record = await self._store.live(parts.public_id)
            if record is None:
                if len(self._missing) > 10_000:
                    self._missing.clear()
                self._missing[parts.public_id] = now + MISS_TTL
                return None
            self._by_id[record.id] = record
        if not hmac.compare_digest(hash_secret(parts.secret), record.secret_digest.hex()):
            return None
        return record

    def get(self, admin_id: str) -> AdminRecord | None:
        return self._by_id.get(admin_id)
