"""``poolgate keys ...``: issue, inspect, change, revoke and rotate API keys."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import typer
from rich.panel import Panel
from rich.table import Table

from app.cli._common import (
    console,
    emit_json,
    fail,
    parse_duration,
    parse_expiry,
    parse_limit,
    parse_list,
    store_session,
)
from keys import KeyRecord, KeyStore, Policy, Quotas

__all__ = ["keys_app"]

T = TypeVar("T")

keys_app = typer.Typer(help="Issue and manage API keys.", no_args_is_help=True)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of a table.")]
Ref = Annotated[str, typer.Argument(help="The key's id (as in `keys list`) or its name.")]
ModelsOpt = Annotated[
    str | None,
    typer.Option("--models", "-m", help="Models the key may call: ids, aliases or globs, comma-separated. "
                 "'*' allows every model; an empty list allows none."),
]
RpmOpt = Annotated[str | None, typer.Option("--rpm", help="Requests per minute ('none' = unlimited).")]
RpdOpt = Annotated[str | None, typer.Option("--rpd", help="Requests per day.")]
TpmOpt = Annotated[str | None, typer.Option("--tpm", help="Tokens per minute.")]
TpdOpt = Annotated[str | None, typer.Option("--tpd", help="Tokens per day.")]
ConcOpt = Annotated[str | None, typer.Option("--max-concurrency", help="Requests in flight at once.")]
BudgetOpt = Annotated[str | None, typer.Option("--budget-usd", help="Spend limit in USD per budget period.")]
PeriodOpt = Annotated[str | None, typer.Option("--budget-period", help="day, week or month.")]
EffortsOpt = Annotated[str | None, typer.Option(
    "--efforts", help="Reasoning efforts allowed, e.g. low,medium ('*' = any).")]
ModalitiesOpt = Annotated[str | None, typer.Option(
    "--modalities", help="Input modalities allowed, e.g. text,image ('*' = any).")]
VerbosityOpt = Annotated[str | None, typer.Option(
    "--verbosity", help="Verbosity levels allowed, e.g. low,medium ('*' = any).")]
PriorityOpt = Annotated[str | None, typer.Option(
    "--priority", help="Model patterns in the order the key's model list should show them.")]
TierOpt = Annotated[int | None, typer.Option(
    "--tier", help="Best upstream priority tier the key may use (0 = all tiers).")]
ExpiresOpt = Annotated[str | None, typer.Option(
    "--expires", help="30d, 12h, a date such as 2027-01-01, or 'never'.")]


def _session(action: Callable[[KeyStore], Awaitable[T]], *, changes: bool = True) -> T:
    return store_session(lambda _config, engine: KeyStore(engine), action, announces="keys" if changes else None)


def _quotas(rpm: str | None, rpd: str | None, tpm: str | None, tpd: str | None, conc: str | None,
            budget: str | None, period: str | None, base: Quotas | None = None) -> Quotas:
    base = base or Quotas()

    def pick(text: str | None, current: int | None, what: str) -> int | None:
        return current if text is None else parse_limit(text, what)

    budget_usd = base.budget_usd
    budget_period = base.budget_period
    if budget is not None:
        if budget.strip().lower() in ("none", "unlimited"):
            budget_usd, budget_period = None, None
        else:
            try:
                budget_usd = float(budget)
            except ValueError:
                fail(f"invalid budget {budget!r}: expected an amount in USD such as 20 or 12.50")
    if period is not None:
        budget_period = period.strip().lower()  # type: ignore[assignment]
    return Quotas(
        rpm=pick(rpm, base.rpm, "--rpm"), rpd=pick(rpd, base.rpd, "--rpd"),
        tpm=pick(tpm, base.tpm, "--tpm"), tpd=pick(tpd, base.tpd, "--tpd"),
        max_concurrency=pick(conc, base.max_concurrency, "--max-concurrency"),
        budget_usd=budget_usd, budget_period=budget_period,
    )


def _models(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _fmt(values: object) -> str:
    if values is None:
        return "any"
    if isinstance(values, list | tuple):
        return ", ".join(str(v) for v in values) or "(none)"
    return str(values)


def _limits(record: KeyRecord) -> str:
    q = record.policy.quotas
    parts = [f"{name} {value}" for name, value in (("rpm", q.rpm), ("rpd", q.rpd), ("tpm", q.tpm),
             ("tpd", q.tpd), ("concurrency", q.max_concurrency)) if value is not None]
    if q.budget_usd is not None:
        parts.append(f"${q.budget_usd:g}/{q.budget_period}")
    return ", ".join(parts) or "unlimited"


def _show(record: KeyRecord, title: str | None = None) -> None:
    data = record.public(time.time())
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    for label, value in (
        ("id", data["id"]), ("name", data["name"]), ("status", data["status"]),
        ("models", _fmt(data["allowed_models"])), ("priority", _fmt(data["priority_rules"]) if
                                                   data["priority_rules"] else "catalog order"),
        ("efforts", _fmt(data["allowed_reasoning_efforts"])), ("modalities", _fmt(data["allowed_modalities"])),
        ("verbosity", _fmt(data["allowed_verbosities"])), ("tier", data["tier"]), ("limits", _limits(record)),
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
    priority: PriorityOpt = None, tier: TierOpt = None, expires: ExpiresOpt = None,
    disabled: Annotated[bool, typer.Option("--disabled", help="Create it switched off.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Issue a new key and print it once."""
    if models is None:
        fail("--models is required: list the models the key may call, e.g. --models 'gpt-5*,o3', "
             "or allow every model with --models '*'")
    policy = Policy(
        allowed_models=_models(models),
        allowed_reasoning_efforts=parse_list(efforts), allowed_modalities=parse_list(modalities),
        allowed_verbosities=parse_list(verbosity), priority_rules=parse_list(priority) or (),
        tier=tier or 0,
        quotas=_quotas(rpm, rpd, tpm, tpd, max_concurrency, budget_usd, budget_period),
    )
    expires_at = parse_expiry(expires)
    record, token = _session(lambda store: store.create(name, policy, expires_at=expires_at, disabled=disabled))
    _print_token(record, token, as_json, "created")


@keys_app.command("list")
def list_keys(
    include_revoked: Annotated[bool, typer.Option("--all", help="Include revoked keys.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """List keys (never their secrets)."""
    records = _session(lambda store: store.list(include_revoked=include_revoked), changes=False)
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
    _report(_session(lambda store: store.get(ref), changes=False), as_json)


@keys_app.command("update")
def update(
    ref: Ref,
    models: ModelsOpt = None,
    rpm: RpmOpt = None, rpd: RpdOpt = None, tpm: TpmOpt = None, tpd: TpdOpt = None,
    max_concurrency: ConcOpt = None, budget_usd: BudgetOpt = None, budget_period: PeriodOpt = None,
    efforts: EffortsOpt = None, modalities: ModalitiesOpt = None, verbosity: VerbosityOpt = None,
    priority: PriorityOpt = None, tier: TierOpt = None, expires: ExpiresOpt = None,
    name: Annotated[str | None, typer.Option("--name", help="Rename the key.")] = None,
    enable: Annotated[bool | None, typer.Option("--enable/--disable", help="Switch the key on or off.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Change a key's policy; only the flags given change. Every serving process sees it within 2 s."""

    quota_flags = (rpm, rpd, tpm, tpd, max_concurrency, budget_usd, budget_period)
    expires_at = parse_expiry(expires) if expires is not None else None

    def change(p: Policy) -> Policy:
        """Applied to the stored policy inside the write transaction: flags not given keep their value."""
        return Policy(
            allowed_models=_models(models) if models is not None else p.allowed_models,
            allowed_reasoning_efforts=parse_list(efforts) if efforts is not None else p.allowed_reasoning_efforts,
            allowed_modalities=parse_list(modalities) if modalities is not None else p.allowed_modalities,
            allowed_verbosities=parse_list(verbosity) if verbosity is not None else p.allowed_verbosities,
            priority_rules=(parse_list(priority) or ()) if priority is not None else p.priority_rules,
            tier=tier if tier is not None else p.tier,
            quotas=_quotas(*quota_flags, base=p.quotas),
        )

    async def action(store: KeyStore) -> KeyRecord:
        disabled = None if enable is None else not enable
        if expires is None:
            return await store.update(ref, policy=change, name=name, disabled=disabled)
        return await store.update(ref, policy=change, name=name, disabled=disabled, expires_at=expires_at)

    _report(_session(action), as_json, title="key updated")


@keys_app.command("revoke")
def revoke(ref: Ref, as_json: JsonFlag = False) -> None:
    """Revoke a key for good; every serving process refuses it within 2 s."""
    record = _session(lambda store: store.revoke(ref))
    if as_json:
        emit_json(record.public(time.time()))
    else:
        console.print(f"revoked key {record.id} ({record.name})")


@keys_app.command("rotate")
def rotate(
    ref: Ref,
    grace: Annotated[str | None, typer.Option(
        "--grace", help="How long the old secret keeps working, e.g. 1h (default: stops at once).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Give a key a new secret (same id and policy) and print it once."""
    grace_seconds = parse_duration(grace, "grace") if grace else 0.0
    record, token = _session(lambda store: store.rotate(ref, grace_seconds=grace_seconds))
    _print_token(record, token, as_json, "rotated")
