"""``poolgate admins ...``: the people who may use the admin API and the dashboard (through the admin
service, so creations and revocations are audited like every other change)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from app.admin import ROLES, AdminRecord
from app.cli._common import Session, console, emit_json, fail, session

__all__ = ["admins_app"]

admins_app = typer.Typer(help="Admin tokens for the admin API and the dashboard (/admin/).", no_args_is_help=True)
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of a table.")]


@admins_app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="A unique name, e.g. the person's handle.")],
    role: Annotated[str, typer.Option("--role", help="admin (may change everything) or viewer (may read).")] = "",
    as_json: JsonFlag = False,
) -> None:
    """Make an admin and print their token once (it signs in to /admin/ and calls /admin/api/)."""
    if role not in ROLES:
        fail("--role is required: admin (may change everything) or viewer (may read everything)")

    async def action(s: Session) -> tuple[AdminRecord, str]:
        return await s.service.create_admin(name, role, s.trail)

    record, token = session(action, writes=True)
    if as_json:
        emit_json({"name": record.name, "role": record.role, "token": token, "id": record.id})
        return
    console.print(f"admin {record.name} ({record.role}) created. Token (shown once; store it now):", highlight=False)
    console.print(token, highlight=False, soft_wrap=True)


@admins_app.command("list")
def list_admins(
    include_revoked: Annotated[bool, typer.Option("--all", help="Include revoked admins.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """List admins (never their tokens)."""

    async def action(s: Session) -> list[AdminRecord]:
        return await s.service.list_admins(include_revoked=include_revoked)

    records = session(action)
    if as_json:
        emit_json([r.public() for r in records])
        return
    table = Table(title=f"{len(records)} admin(s)")
    for column in ("id", "name", "role", "created", "revoked"):
        table.add_column(column)
    for r in records:
        data = r.public()
        table.add_row(r.id, r.name, r.role, str(data["created_at"]), str(data["revoked_at"] or "-"))
    console.print(table)


@admins_app.command("revoke")
def revoke(ref: Annotated[str, typer.Argument(help="The admin's name or id.")], as_json: JsonFlag = False) -> None:
    """Revoke an admin's token; every serving process refuses it within 2 s."""

    async def action(s: Session) -> AdminRecord:
        return await s.service.revoke_admin(ref, s.trail)

    record = session(action, writes=True)
    if as_json:
        emit_json(record.public())
    else:
        console.print(f"revoked admin {record.name} ({record.role})", highlight=False)
