"""Upstream accounts in the database: add, change, remove, and read changes for the pool.

Like the key store, every change bumps a counter (``upstreams``) in the same write
transaction, so serving processes learn of changes by polling one row.
"""

from __future__ import annotations

import secrets
import string
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import urlsplit

from sqlalchemy import Row, Table, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app._db import MetaRow, bump_counter, read_counter, read_meta, write_meta, write_transaction
from app.crypto import Vault, VaultError
from app.pool._table import UpstreamRow
from keys import StoreError, validate_pattern

__all__ = [
    "KINDS",
    "ModelRoute",
    "UpstreamAuditHook",
    "UpstreamNotFound",
    "UpstreamRecord",
    "UpstreamStore",
    "check_base_url",
    "parse_routes",
]

VAULT_CHECK = "vault_check"
"""A meta row encrypted with the keys in use, so a process with other keys is found out before it
writes a credential the servers cannot read."""
_CHECK_TEXT = "poolgate vault check"

UPSTREAMS: Table = UpstreamRow.__table__  # type: ignore[attr-defined]
META: Table = MetaRow.__table__  # type: ignore[attr-defined]
KINDS = ("openai",)
_UNSET: Any = object()


class UpstreamAuditHook(Protocol):
    """Records a change inside the transaction that makes it (the admin layer's audit log)."""

    async def __call__(self, conn: AsyncConnection, action: str, before: UpstreamRecord | None,
                       after: UpstreamRecord) -> None: ...


class UpstreamNotFound(StoreError):
    def __init__(self, ref: str) -> None:
        super().__init__(f"no upstream with id or name {ref!r} (see: poolgate upstreams list)")


@dataclass(frozen=True, slots=True)
class ModelRoute:
    """A model pattern the upstream serves, and the name it knows the model by (if different)."""

    pattern: str
    upstream_model: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"pattern": self.pattern, "upstream_model": self.upstream_model}


def parse_routes(text: str) -> tuple[ModelRoute, ...]:
    """``gpt-5*,o3=o3-2025-04-16``: patterns, each optionally ``=`` the upstream's own model name."""
    routes = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        pattern, _, upstream_model = part.partition("=")
        pattern = validate_pattern(pattern)
        upstream_model = upstream_model.strip()
        if upstream_model and ("*" in pattern or "?" in pattern):
            raise StoreError(f"{part!r}: only an exact model id can be renamed, not a glob")
        routes.append(ModelRoute(pattern, upstream_model or None))
    if not routes:
        raise StoreError("an upstream must serve at least one model pattern, e.g. --models 'gpt-5*'")
    return tuple(routes)


@dataclass(frozen=True, slots=True)
class UpstreamRecord:
    id: str
    name: str
    kind: str
    base_url: str
    credential: str | None
    """Encrypted; decrypt with the vault only where the upstream is called."""
    routes: tuple[ModelRoute, ...]
    weight: float
    tier: int
    max_concurrency: int | None
    enabled: bool
    removed: bool
    created_at: float
    updated_at: float
    revision: int

    def public(self) -> dict[str, Any]:
        """What may leave the process: an allow-list that never includes the credential."""
        return {
            "id": self.id, "name": self.name, "kind": self.kind, "base_url": self.base_url,
            "has_credential": self.credential is not None,
            "models": [r.to_dict() for r in self.routes], "weight": self.weight, "tier": self.tier,
            "max_concurrency": self.max_concurrency, "enabled": self.enabled,
            "created_at": _iso(self.created_at), "updated_at": _iso(self.updated_at),
        }


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _ts(value: datetime) -> float:
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()


def _record(row: Row[Any]) -> UpstreamRecord:
    m = row._mapping
    return UpstreamRecord(
        id=m["id"], name=m["name"], kind=m["kind"], base_url=m["base_url"], credential=m["credential"],
        routes=tuple(ModelRoute(r["pattern"], r.get("upstream_model")) for r in m["models"]),
        weight=float(m["weight"]), tier=int(m["tier"]), max_concurrency=m["max_concurrency"],
        enabled=bool(m["enabled"]), removed=m["removed_at"] is not None,
        created_at=_ts(m["created_at"]), updated_at=_ts(m["updated_at"]), revision=int(m["revision"]),
    )


def check_base_url(url: str) -> str:
    cleaned = url.strip().rstrip("/")
    if len(cleaned) > 2000:
        raise StoreError(f"base URL is {len(cleaned)} characters long: at most 2000 fit")
    parts = urlsplit(cleaned)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise StoreError(f"invalid base URL {url!r}: expected http(s)://host[:port]/v1")
    if parts.username or parts.password:
        raise StoreError("put the credential in --api-key-env or --api-key-stdin, not in the base URL")
    return cleaned


def _check(name: str | None = None, weight: float | None = None, tier: int | None = None,
           max_concurrency: int | None = None, kind: str | None = None) -> None:
    if name is not None and (not name.strip() or len(name) > 200 or any(c.isspace() for c in name)):
        raise StoreError(f"invalid upstream name {name!r}: use 1-200 characters without spaces")
    if weight is not None and not 0 < weight <= 1000:
        raise StoreError(f"weight must be above 0 and at most 1000, got {weight}")
    if tier is not None and not 0 <= tier <= 100:
        raise StoreError(f"tier must be between 0 and 100, got {tier}")
    if max_concurrency is not None and not 1 <= max_concurrency <= 100_000:
        raise StoreError(f"max concurrency must be between 1 and 100000, got {max_concurrency}")
    if kind is not None and kind not in KINDS:
        raise StoreError(f"unknown upstream kind {kind!r}: expected {', '.join(KINDS)}")


class UpstreamStore:
    def __init__(self, engine: AsyncEngine, vault: Vault, audit: UpstreamAuditHook | None = None) -> None:
        self.engine = engine
        self.vault = vault
        self.audit = audit

    async def _find(self, conn: AsyncConnection, ref: str, *, lock: bool = False) -> UpstreamRecord:
        """A live upstream by id, else by name; ``lock`` holds its row until the transaction ends
        (PostgreSQL; SQLite's writers already run one at a time)."""
        live = UPSTREAMS.c.removed_at.is_(None)
        for match in (UPSTREAMS.c.id == ref, UPSTREAMS.c.name == ref):
            query = select(UPSTREAMS).where(live, match)
            row = (await conn.execute(query.with_for_update() if lock else query)).first()
            if row is not None:
                break
        if row is None:
            raise UpstreamNotFound(ref)
        return _record(row)

    async def check_vault(self, conn: AsyncConnection | None = None) -> None:
        """Refuse, in one line, keys that cannot read what the servers stored; the first credential
        ever stored leaves the check value (inside ``conn``'s write transaction, when given)."""
        if conn is None:
            stored = await read_meta(self.engine, VAULT_CHECK)
        else:
            stored = (await conn.execute(select(META.c.value).where(META.c.name == VAULT_CHECK))).scalar()
        if stored is None:
            if conn is not None:
                await write_meta(conn, VAULT_CHECK, self.vault.encrypt(_CHECK_TEXT))
            return
        try:
            self.vault.decrypt(stored, what="the database's encryption check value")
        except VaultError:
            raise VaultError(
                "the encryption keys set here cannot read the credentials this database holds: set "
                "POOLGATE_ENCRYPTION_KEYS (or the data directory's encryption.key) to what the servers use"
            ) from None

    async def _audit(self, conn: AsyncConnection, action: str, before: UpstreamRecord | None,
                     after: UpstreamRecord) -> None:
        if self.audit is not None:
            await self.audit(conn, action, before, after)

    async def add(
        self, name: str, base_url: str, routes: Sequence[ModelRoute], *, credential: str | None = None,
        weight: float = 1.0, tier: int = 0, max_concurrency: int | None = None, enabled: bool = True,
        kind: str = "openai",
    ) -> UpstreamRecord:
        _check(name, weight, tier, max_concurrency, kind)
        upstream_id = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(10))
        now = datetime.now(UTC)
        async with write_transaction(self.engine) as conn:
            if credential:
                await self.check_vault(conn)
            revision = await bump_counter(conn, "upstreams")
            try:
                await conn.execute(UPSTREAMS.insert().values(
                    id=upstream_id, name=name.strip(), kind=kind, base_url=check_base_url(base_url),
                    credential=self.vault.encrypt(credential) if credential else None,
                    models=[r.to_dict() for r in routes], weight=weight, tier=tier,
                    max_concurrency=max_concurrency, enabled=enabled,
                    created_at=now, updated_at=now, revision=revision,
                ))
            except IntegrityError:
                raise StoreError(f"an upstream named {name!r} already exists; choose another name") from None
            record = await self._find(conn, upstream_id)
            await self._audit(conn, "upstream.create", None, record)
            return record

    async def update(
        self, ref: str, *, name: str | None = None, base_url: str | None = None,
        routes: Sequence[ModelRoute] | None = None, credential: str | None = _UNSET, weight: float | None = None,
        tier: int | None = None, max_concurrency: int | None = _UNSET, enabled: bool | None = None,
    ) -> UpstreamRecord:
        _check(name, weight, tier, None if max_concurrency is _UNSET else max_concurrency)
        values: dict[str, Any] = {}
        if name is not None:
            values["name"] = name.strip()
        if base_url is not None:
            values["base_url"] = check_base_url(base_url)
        if routes is not None:
            values["models"] = [r.to_dict() for r in routes]
        if credential is not _UNSET:
            values["credential"] = self.vault.encrypt(credential) if credential else None
        for field_name, value in (("weight", weight), ("tier", tier), ("enabled", enabled)):
            if value is not None:
                values[field_name] = value
        if max_concurrency is not _UNSET:
            values["max_concurrency"] = max_concurrency
        if not values:
            raise StoreError("nothing to change: give at least one field to update")
        return await self._change(ref, values, "upstream.update", check_vault=bool(values.get("credential")))

    async def remove(self, ref: str) -> UpstreamRecord:
        return await self._change(ref, {"removed_at": datetime.now(UTC)}, "upstream.remove")

    async def _change(self, ref: str, values: dict[str, Any], action: str, *,
                      check_vault: bool = False) -> UpstreamRecord:
        async with write_transaction(self.engine) as conn:
            if check_vault:
                await self.check_vault(conn)
            current = await self._find(conn, ref, lock=True)
            values["revision"] = await bump_counter(conn, "upstreams")
            values["updated_at"] = datetime.now(UTC)
            try:
                await conn.execute(update(UPSTREAMS).where(UPSTREAMS.c.id == current.id).values(**values))
            except IntegrityError:
                raise StoreError(f"an upstream named {values.get('name')!r} already exists") from None
            row = (await conn.execute(select(UPSTREAMS).where(UPSTREAMS.c.id == current.id))).one()
            record = _record(row)
            await self._audit(conn, action, current, record)
            return record

    async def get(self, ref: str) -> UpstreamRecord:
        async with self.engine.connect() as conn:
            return await self._find(conn, ref)

    async def list(self) -> list[UpstreamRecord]:
        query = select(UPSTREAMS).where(UPSTREAMS.c.removed_at.is_(None)).order_by(UPSTREAMS.c.tier, UPSTREAMS.c.name)
        async with self.engine.connect() as conn:
            return [_record(row) for row in await conn.execute(query)]

    async def revision(self) -> int:
        return await read_counter(self.engine, "upstreams")

    async def reencrypt_all(self) -> int:
        """Re-encrypt every stored credential (and the check value) under the newest key; returns how many."""
        async with write_transaction(self.engine) as conn:
            rows = (await conn.execute(select(UPSTREAMS.c.id, UPSTREAMS.c.credential)
                                       .where(UPSTREAMS.c.credential.is_not(None)).with_for_update())).all()
            if rows:
                revision = await bump_counter(conn, "upstreams")
            for row in rows:
                await conn.execute(update(UPSTREAMS).where(UPSTREAMS.c.id == row.id).values(
                    credential=self.vault.rotate(row.credential), revision=revision))
            stored = (await conn.execute(select(META.c.value).where(META.c.name == VAULT_CHECK))).scalar()
            check = self.vault.rotate(stored) if stored else self.vault.encrypt(_CHECK_TEXT)
            await write_meta(conn, VAULT_CHECK, check)
        return len(rows)
