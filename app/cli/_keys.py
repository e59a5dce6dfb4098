"""``poolgate keys ...``: issue, inspect, change, revoke and rotate API keys (through the admin service)."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.panel import Panel
from rich.table import Table

from app.cli._common import (
    Session,
    console,
    emit_json,
    err_console,
    fail,
    parse_duration,
    parse_expiry,
    parse_limit,
    parse_list,
    session,
    settings,
    warn,
)
from app.quota import format_usd
from keys import KeyAlreadyRevoked, KeyRecord

__all__ = ["keys_app"]

keys_app = typer.Typer(help="Issue and manage API keys.", no_args_is_help=True)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of a table.")]
Ref = Annotated[str, typer.Argument(help="The key's id (as in `keys list`) or its name.")]
ModelsOpt = Annotated[
    str | None,
    typer.Option("--models", "-m", help="Models the key may call: ids, aliases or globs, comma-separated. "
                 "'*' allows every model; an empty list allows none."),
]
RpmOpt = Annotated[str | None, typer.Option("--rpm", help="Requests per minute ('none' = unlimited).")]
RpdOpt = Annotated[str | None, typer.Option("--rpd", help="Requests per day ('none' = unlimited).")]
TpmOpt = Annotated[str | None, typer.Option("--tpm", help="Tokens per minute ('none' = unlimited).")]
TpdOpt = Annotated[str | None, typer.Option("--tpd", help="Tokens per day ('none' = unlimited).")]
ConcOpt = Annotated[str | None, typer.Option(
    "--max-concurrency", help="Requests in flight at once ('none' = unlimited).")]
BudgetOpt = Annotated[str | None, typer.Option(
    "--budget-usd", help="Spend limit in USD per budget period ('none' removes it).")]
PeriodOpt = Annotated[str | None, typer.Option("--budget-period", help="day, week or month (UTC calendar periods).")]
EffortsOpt = Annotated[str | None, typer.Option(
    "--efforts", help="Reasoning efforts allowed, e.g. low,medium ('*' = any).")]
ModalitiesOpt = Annotated[str | None, typer.Option(
    "--modalities", help="Input modalities allowed, e.g. text,image ('*' = any).")]
VerbosityOpt = Annotated[str | None, typer.Option(
    "--verbosity", help="Verbosity levels allowed, e.g. low,medium ('*' = any).")]
TiersOpt = Annotated[str | None, typer.Option(
    "--service-tiers", help="Service tiers allowed, e.g. default,flex ('*' = any, the default).")]
PriorityOpt = Annotated[str | None, typer.Option(
    "--priority", help="Model patterns in the order the key's model list should show them.")]
TierOpt = Annotated[int | None, typer.Option(
    "--tier", help="Best upstream priority tier the key may use (0 = all tiers).")]
ExpiresOpt = Annotated[str | None, typer.Option(
    "--expires", help="30d, 12h, a date such as 2027-01-01, or 'never'.")]


def _quota_changes(rpm: str | None, rpd: str | None, tpm: str | None, tpd: str | None, conc: str | None,
                   budget: str | None, period: str | None) -> dict[str, Any]:
    """The quota fields a command gave, as the service takes them (absent fields keep their value)."""
    quotas: dict[str, Any] = {}
    for name, text, flag in (("rpm", rpm, "--rpm"), ("rpd", rpd, "--rpd"), ("tpm", tpm, "--tpm"),
                             ("tpd", tpd, "--tpd"), ("max_concurrency", conc, "--max-concurrency")):
        if text is not None:
            quotas[name] = parse_limit(text, flag)
    if budget is not None:
        if budget.strip().lower() in ("none", "unlimited"):
            quotas["budget_usd"] = None
        else:
            try:
                quotas["budget_usd"] = float(budget)
            except ValueError:
                fail(f"invalid budget {budget!r}: expected an amount in USD such as 20 or 12.50")
    if period is not None:
        quotas["budget_period"] = period.strip().lower()
    return quotas


def _models(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _policy_changes(models: str | None, efforts: str | None, modalities: str | None, verbosity: str | None,
                    tiers: str | None, priority: str | None, tier: int | None) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    if models is not None:
        changes["allowed_models"] = _models(models)
    for name, text in (("allowed_reasoning_efforts", efforts), ("allowed_modalities", modalities),
                       ("allowed_verbosities", verbosity), ("allowed_service_tiers", tiers)):
        if text is not None:
            parsed = parse_list(text)
            changes[name] = None if parsed is None else list(parsed)
    if priority is not None:
        changes["priority_rules"] = list(parse_list(priority) or ())
    if tier is not None:
        changes["tier"] = tier
    return changes


def _warn_unmatched(patterns: list[str]) -> None:
    """A pattern that matches no catalog model is most likely a typo: say so (the key is made all the same)."""
    from app.catalog import CatalogService
    from keys import Matcher, NameIndex

    catalog = CatalogService(settings().catalog_file).catalog
    index = NameIndex([model.names for model in catalog.models])
    for pattern in patterns:
        if not Matcher([pattern]).find(index):
            warn(f"the model pattern {pattern!r} matches no model in the catalog (see: poolgate models list)")


def _fmt(values: object) -> str:
    if values is None:
        return "any"
    if isinstance(values, list | tuple):
        return ", ".join(str(v) for v in values) or "(none)"
    return str(values)


def _limits(record: KeyRecord) -> str:
    q = record.policy.quotas
    parts = [f"{name} {value:,}" for name, value in (("rpm", q.rpm), ("rpd", q.rpd), ("tpm", q.tpm),
             ("tpd", q.tpd), ("concurrency", q.max_concurrency)) if value is not None]
    if q.budget_usd is not None:
        parts.append(f"{format_usd(q.budget_usd)}/{q.budget_period}")
    return ", ".join(parts) or "unlimited"


def _show(record: KeyRecord, title: str | None = None) -> None:
    data = record.public(time.time())
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    for label, value in (
        ("id", data["id"]), ("name", data["name"]), ("status", data["status"]),
        ("models", _fmt(data["allowed_models"])),
        ("priority", _fmt(data["priority_rules"]) if data["priority_rules"] else "catalog order"),
        ("efforts", _fmt(data["allowed_reasoning_efforts"])), ("modalities", _fmt(data["allowed_modalities"])),
        ("verbosity", _fmt(data["allowed_verbosities"])), ("service tiers", _fmt(data["allowed_service_tiers"])),
        ("tier", data["tier"]), ("limits", _limits(record)),
        ("expires", data["expires_at"] or "never"), ("created", data["created_at"]),
        ("old secret valid until", data["previous_secret_valid_until"]),
    ):
        if value is not None:
            table.add_row(label, str(value))
    console.print(Panel(table, title=title, expand=False) if title else table)


def _report(record: KeyRecord, as_json: bool, title: str | None = None) -> None:
    if as_json:
        emit_json(record.public(time.time()))
    else:
        _show(record, title=title)


def _print_token(record: KeyRecord, token: str, as_json: bool, verb: str) -> None:
    if as_json:
        emit_json({"id": record.id, "name": record.name, "key": token, **record.public(time.time())})
        return
    _show(record, title=f"key {verb}")
    console.print("\n[bold]API key[/] (shown once; store it now, it cannot be shown again):")
    console.print(token, highlight=False, soft_wrap=True)


@keys_app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="A unique name, e.g. the person's handle.")],
    models: ModelsOpt = None,
    rpm: RpmOpt = None, rpd: RpdOpt = None, tpm: TpmOpt = None, tpd: TpdOpt = None,
    max_concurrency: ConcOpt = None, budget_usd: BudgetOpt = None, budget_period: PeriodOpt = None,
    efforts: EffortsOpt = None, modalities: ModalitiesOpt = None, verbosity: VerbosityOpt = None,
    service_tiers: TiersOpt = None, priority: PriorityOpt = None, tier: TierOpt = None, expires: ExpiresOpt = None,
    disabled: Annotated[bool, typer.Option("--disabled", help="Create it switched off.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Issue a new key and print it once."""
    if models is None:
        fail("--models is required: list the models the key may call, e.g. --models 'gpt-5*,o3', "
             "or allow every model with --models '*'")
    spec: dict[str, Any] = {"name": name, **_policy_changes(models, efforts, modalities, verbosity, service_tiers,
                                                            priority, tier)}
    quotas = _quota_changes(rpm, rpd, tpm, tpd, max_concurrency, budget_usd, budget_period)
    if quotas:
        spec["quotas"] = quotas
    expires_at = parse_expiry(expires)
    if expires_at is not None:
        spec["expires_at"] = expires_at
    spec["disabled"] = disabled

    async def action(s: Session) -> tuple[KeyRecord, str]:
        return await s.service.create_key(spec, s.trail)

    record, token = session(action, writes=True)
    _warn_unmatched(spec["allowed_models"])
    _print_token(record, token, as_json, "created")


@keys_app.command("list")
def list_keys(
    include_revoked: Annotated[bool, typer.Option("--all", help="Include revoked keys.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """List keys (never their secrets)."""

    async def action(s: Session) -> list[KeyRecord]:
        from keys import KeyStore

        return await KeyStore(s.engine).list(include_revoked=include_revoked)

    records = session(action)
    now = time.time()
    if as_json:
        emit_json([r.public(now) for r in records])
        return
    table = Table(title=f"{len(records)} key(s)")
    for column in ("id", "name", "status", "models", "limits", "expires", "created"):
        table.add_column(column, overflow="fold")
    for r in records:
        data = r.public(now)
        table.add_row(r.id, r.name, str(data["status"]), _fmt(r.policy.allowed_models), _limits(r),
                      str(data["expires_at"] or "never"), str(data["created_at"]))
    console.print(table)


@keys_app.command("show")
def show(ref: Ref, as_json: JsonFlag = False) -> None:
    """Show one key's policy and status."""

    async def action(s: Session) -> KeyRecord:
        return await s.service.get_key(ref)

    _report(session(action), as_json)


@keys_app.command("update")
def update(
    ref: Ref,
    models: ModelsOpt = None,
    rpm: RpmOpt = None, rpd: RpdOpt = None, tpm: TpmOpt = None, tpd: TpdOpt = None,
    max_concurrency: ConcOpt = None, budget_usd: BudgetOpt = None, budget_period: PeriodOpt = None,
    efforts: EffortsOpt = None, modalities: ModalitiesOpt = None, verbosity: VerbosityOpt = None,
    service_tiers: TiersOpt = None, priority: PriorityOpt = None, tier: TierOpt = None, expires: ExpiresOpt = None,
    name: Annotated[str | None, typer.Option("--name", help="Rename the key.")] = None,
    enable: Annotated[bool | None, typer.Option("--enable/--disable", help="Switch the key on or off.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Change a key's policy; only the flags given change. Every serving process sees it within 2 s."""
    changes = _policy_changes(models, efforts, modalities, verbosity, service_tiers, priority, tier)
    quotas = _quota_changes(rpm, rpd, tpm, tpd, max_concurrency, budget_usd, budget_period)
    if quotas:
        changes["quotas"] = quotas
    if expires is not None:
        changes["expires_at"] = parse_expiry(expires)
    if name is not None:
        changes["name"] = name
    if enable is not None:
        changes["disabled"] = not enable
    if not changes:
        fail("nothing to change: give at least one flag, such as --rpm 60 (see: poolgate keys update --help)")

    async def action(s: Session) -> KeyRecord:
        return await s.service.update_key(ref, changes, s.trail)

    record = session(action, writes=True)
    if models is not None:
        _warn_unmatched(changes["allowed_models"])
    _report(record, as_json, title="key updated")


@keys_app.command("revoke")
def revoke(ref: Ref, as_json: JsonFlag = False) -> None:
    """Revoke a key for good; every serving process refuses it within 2 s."""

    async def action(s: Session) -> tuple[KeyRecord, bool]:
        try:
            return await s.service.revoke_key(ref, s.trail), True
        except KeyAlreadyRevoked as exc:
            return exc.record, False

    record, changed = session(action, writes=True)
    if as_json:
        emit_json(record.public(time.time()))
    elif changed:
        console.print(f"revoked key {record.id} ({record.name})", highlight=False)
    else:
        revoked = record.public(time.time())["revoked_at"]
        err_console.print(f"key {record.id} ({record.name}) was already revoked at {revoked}; nothing changed",
                          highlight=False)


@keys_app.command("rotate")
def rotate(
    ref: Ref,
    grace: Annotated[str | None, typer.Option(
        "--grace", help="How long the old secret keeps working, e.g. 1h (default: stops at once).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Give a key a new secret (same id and policy) and print it once."""
    grace_seconds = parse_duration(grace, "grace") if grace else 0.0

    async def action(s: Session) -> tuple[KeyRecord, str]:
        return await s.service.rotate_key(ref, s.trail, grace_seconds=grace_seconds)

    record, token = session(action, writes=True)
    _print_token(record, token, as_json, "rotated")
