"""The audit log: who changed what, and when, from the API, the dashboard and the CLI alike.

Entries are written inside the transaction that makes the change, so a change and its entry land
together or not at all. They hold the public form of what changed (a key's policy, an upstream's
settings, an admin's name and role), never a secret: keys' hashes, admin tokens and upstream
credentials have no public form.
"""

from __future__ import annotations

import getpass
import socket
import time
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Table, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.admin._identities import AdminRecord
from app.admin._table import AuditRow
from app.pool import UpstreamRecord
from keys import KeyRecord

__all__ = ["AuditTrail", "cli_actor", "read_audit"]

AUDIT: Table = AuditRow.__table__  # type: ignore[attr-defined]
_VOLATILE = ("status", "updated_at", "previous_secret_valid_until", "created_at")


def cli_actor() -> str:
    """Who runs the CLI: the system user and host (there is no admin token on the command line)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def _key_view(record: KeyRecord | None) -> dict[str, Any] | None:
    if record is None:
        return None
    data = record.public(time.time())
    return {k: v for k, v in data.items() if k not in _VOLATILE}


def _upstream_view(record: UpstreamRecord | None) -> dict[str, Any] | None:
    if record is None:
        return None
    return {k: v for k, v in record.public().items() if k not in _VOLATILE}


def _admin_view(record: AdminRecord | None) -> dict[str, Any] | None:
    if record is None:
        return None
    return {k: v for k, v in record.public().items() if k not in _VOLATILE}


class AuditTrail:
    """One actor's audit entries; its methods are the stores' audit hooks."""

    def __init__(self, actor: str, source: str) -> None:
        self.actor = actor[:200]
        self.source = source

    async def record(self, conn: AsyncConnection, action: str, target: str, before: dict[str, Any] | None,
                     after: dict[str, Any] | None) -> None:
        await conn.execute(AUDIT.insert().values(
            at=datetime.now(UTC), actor=self.actor, source=self.source, action=action, target=target[:300],
            before=before, after=after))

    async def key(self, conn: AsyncConnection, action: str, before: KeyRecord | None, after: KeyRecord) -> None:
        await self.record(conn, action, f"key {after.id} ({after.name})", _key_view(before), _key_view(after))

    async def upstream(self, conn: AsyncConnection, action: str, before: UpstreamRecord | None,
                       after: UpstreamRecord) -> None:
        after_view = _upstream_view(after)
        replaced = before is not None and before.credential is not None and after.credential is not None \
            and before.credential != after.credential
        if replaced and after_view is not None:
            # The credential never shows, so say that it was replaced: otherwise the entry reads as no change.
            after_view["credential_replaced"] = True
        await self.record(conn, action, f"upstream {after.id} ({after.name})", _upstream_view(before), after_view)

    async def admin(self, conn: AsyncConnection, action: str, before: AdminRecord | None, after: AdminRecord) -> None:
        await self.record(conn, action, f"admin {after.id} ({after.name})", _admin_view(before), _admin_view(after))


async def read_audit(engine: AsyncEngine, *, limit: int = 100, before_id: int | None = None,
                     action: str | None = None, actor: str | None = None,
                     target: str | None = None) -> list[dict[str, Any]]:
    """The newest entries first; ``before_id`` pages back."""
    query = select(AUDIT).order_by(AUDIT.c.id.desc()).limit(limit)
    if before_id is not None:
        query = query.where(AUDIT.c.id < before_id)
    if action:
        query = query.where(AUDIT.c.action.startswith(action))
    if actor:
        query = query.where(AUDIT.c.actor == actor)
    if target:
        query = query.where(AUDIT.c.target.contains(target))
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    out = []
    for row in rows:
        at = row.at if row.at.tzinfo else row.at.replace(tzinfo=UTC)
        out.append({"id": row.id, "at": at.isoformat(timespec="seconds").replace("+00:00", "Z"), "actor": row.actor,
                    "source": row.source, "action": row.action, "target": row.target, "before": row.before,
                    "after": row.after})
    return out
