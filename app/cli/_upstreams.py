"""``poolgate upstreams ...`` and ``poolgate secrets ...``: the accounts behind the gateway."""

from __future__ import annotations

import os
import sys
from typing import Annotated, Any

import typer
from rich.table import Table

from app.admin import probe_models
from app.cli._common import Session, console, emit_json, fail, session, warn
from app.crypto import generate_key
from app.pool import UpstreamRecord, UpstreamStore

__all__ = ["secrets_app", "upstreams_app"]

upstreams_app = typer.Typer(help="Manage the upstream accounts requests are relayed to.", no_args_is_help=True)
secrets_app = typer.Typer(help="Encryption keys for stored upstream credentials.", no_args_is_help=True)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of a table.")]
Ref = Annotated[str, typer.Argument(help="The upstream's id or name.")]
BaseUrlOpt = Annotated[str | None, typer.Option(
    "--base-url", help="OpenAI-compatible base URL, e.g. https://api.openai.com/v1.")]
ModelsOpt = Annotated[str | None, typer.Option(
    "--models", "-m", help="Models it serves: ids or globs, comma-separated; 'o3=o3-2025-04-16' renames for it.")]
KeyEnvOpt = Annotated[str | None, typer.Option(
    "--api-key-env", help="Read the upstream's API key from this environment variable.")]
KeyStdinOpt = Annotated[bool, typer.Option("--api-key-stdin", help="Read the upstream's API key from standard input.")]
WeightOpt = Annotated[float | None, typer.Option("--weight", help="Share of traffic within its tier (default 1).")]
TierOpt = Annotated[int | None, typer.Option(
    "--tier", help="Priority tier: 0 is used first, higher tiers as fallback.")]
ConcOpt = Annotated[int | None, typer.Option(
    "--max-concurrency", help="Requests in flight at once (default unlimited; 0 = unlimited).")]
PROBE_TIMEOUT = 3.0


def _credential(env_name: str | None, from_stdin: bool) -> str | None:
    if env_name and from_stdin:
        fail("use either --api-key-env or --api-key-stdin, not both")
    if env_name:
        value = os.environ.get(env_name)
        if not value:
            fail(f"environment variable {env_name} is not set or empty")
        return value.strip()
    if from_stdin:
        value = sys.stdin.readline().strip()
        if not value:
            fail("no API key on standard input")
        return value
    return None


def _report(record: UpstreamRecord, as_json: bool, verb: str) -> None:
    if as_json:
        emit_json(record.public())
        return
    data = record.public()
    routes = ", ".join(r.pattern + (f" -> {r.upstream_model}" if r.upstream_model else "") for r in record.routes)
    console.print(f"{verb} upstream {data['id']} ({data['name']}): {data['base_url']}, models {routes}, "
                  f"tier {data['tier']}, weight {data['weight']:g}, "
                  f"{'credential stored encrypted' if data['has_credential'] else 'no credential'}"
                  f"{'' if data['enabled'] else ', disabled'}", highlight=False)


async def _check_base_url(base_url: str, headers: dict[str, str]) -> None:
    """A base URL without its ``/v1`` answers nothing useful: warn when ``/models`` fails and ``/v1/models`` answers."""
    url = base_url.rstrip("/")
    if url.endswith("/v1"):
        return
    here = await probe_models(url, headers, PROBE_TIMEOUT)
    if here["ok"]:
        return
    there = await probe_models(url + "/v1", headers, PROBE_TIMEOUT)
    if there["ok"]:
        warn(f"{url}/models does not answer but {url}/v1/models does: the base URL probably needs /v1 "
             f"(poolgate upstreams update NAME --base-url {url}/v1)")


@upstreams_app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="A unique name for the account, e.g. acct-1.")],
    base_url: BaseUrlOpt = None, models: ModelsOpt = None, api_key_env: KeyEnvOpt = None,
    api_key_stdin: KeyStdinOpt = False, weight: WeightOpt = None, tier: TierOpt = None,
    max_concurrency: ConcOpt = None,
    disabled: Annotated[bool, typer.Option("--disabled", help="Add it switched off.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Add an upstream account. Its API key is stored encrypted and never shown again."""
    if base_url is None:
        fail("--base-url is required, e.g. --base-url https://api.openai.com/v1")
    if models is None:
        fail("--models is required: the models this account serves, e.g. --models 'gpt-5*,o3'")
    credential = _credential(api_key_env, api_key_stdin)
    spec: dict[str, Any] = {"name": name, "base_url": base_url, "models": models, "api_key": credential,
                            "weight": 1.0 if weight is None else weight, "tier": tier or 0,
                            "max_concurrency": max_concurrency or None, "enabled": not disabled}

    async def action(s: Session) -> UpstreamRecord:
        record = await s.service.create_upstream(spec, s.trail)
        await _check_base_url(record.base_url, {"authorization": f"Bearer {credential}"} if credential else {})
        return record

    _report(session(action, writes=True), as_json, "added")


@upstreams_app.command("list")
def list_upstreams(as_json: JsonFlag = False) -> None:
    """List upstream accounts (never their credentials)."""

    async def action(s: Session) -> list[UpstreamRecord]:
        return await s.service.list_upstreams()

    records = session(action)
    if as_json:
        emit_json([r.public() for r in records])
        return
    table = Table(title=f"{len(records)} upstream(s)")
    for column in ("id", "name", "base url", "models", "tier", "weight", "max conc.", "enabled", "credential"):
        table.add_column(column, overflow="fold")
    for r in records:
        table.add_row(r.id, r.name, r.base_url, ", ".join(x.pattern for x in r.routes), str(r.tier), f"{r.weight:g}",
                      str(r.max_concurrency or "-"), "yes" if r.enabled else "no",
                      "encrypted" if r.credential else "none")
    console.print(table)


@upstreams_app.command("show")
def show(ref: Ref, as_json: JsonFlag = False) -> None:
    """Show one upstream account."""

    async def action(s: Session) -> UpstreamRecord:
        return await s.service.get_upstream(ref)

    _report(session(action), as_json, "")


@upstreams_app.command("update")
def update(
    ref: Ref, base_url: BaseUrlOpt = None, models: ModelsOpt = None, api_key_env: KeyEnvOpt = None,
    api_key_stdin: KeyStdinOpt = False, weight: WeightOpt = None, tier: TierOpt = None,
    max_concurrency: ConcOpt = None,
    name: Annotated[str | None, typer.Option("--name", help="Rename it.")] = None,
    enable: Annotated[bool | None, typer.Option("--enable/--disable", help="Switch it on or off.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Change an upstream; only the flags given change. Every serving process sees it within 2 s."""
    credential = _credential(api_key_env, api_key_stdin)
    changes: dict[str, Any] = {k: v for k, v in {
        "name": name, "base_url": base_url, "weight": weight, "tier": tier, "enabled": enable, "models": models,
    }.items() if v is not None}
    if credential is not None:
        changes["api_key"] = credential
    if max_concurrency is not None:
        changes["max_concurrency"] = max_concurrency or None  # 0 removes the limit
    if not changes:
        fail("nothing to change: give at least one flag, such as --weight 2 (see: poolgate upstreams update --help)")

    async def action(s: Session) -> UpstreamRecord:
        return await s.service.update_upstream(ref, changes, s.trail)

    _report(session(action, writes=True), as_json, "updated")


@upstreams_app.command("remove")
def remove(ref: Ref, as_json: JsonFlag = False) -> None:
    """Remove an upstream; serving processes stop using it within 2 s."""

    async def action(s: Session) -> UpstreamRecord:
        return await s.service.remove_upstream(ref, s.trail)

    _report(session(action, writes=True), as_json, "removed")


@upstreams_app.command("test")
def probe(ref: Ref, as_json: JsonFlag = False,
          wait: Annotated[float, typer.Option("--timeout", help="Seconds to wait for an answer.")] = 10.0) -> None:
    """Probe an upstream's /models: prints the latency and the models it reports."""

    async def action(s: Session) -> dict[str, Any]:
        return await s.service.test_upstream(ref, wait)

    result = session(action)
    if as_json:
        emit_json(result)
    elif result["ok"]:
        console.print(f"{result['name']}: HTTP {result['status']} in {result['latency_ms']:.0f} ms, "
                      f"{len(result['models'])} model(s): {', '.join(result['models'][:30])}", highlight=False)
    else:
        console.print(f"{result['name']}: FAILED: {result['error']}", highlight=False)
    if not result["ok"]:
        raise typer.Exit(1)


@secrets_app.command("rotate")
def rotate(as_json: JsonFlag = False) -> None:
    """Re-encrypt every stored credential under the newest key in POOLGATE_ENCRYPTION_KEYS."""

    async def action(s: Session) -> int:
        return await UpstreamStore(s.engine, s.vault).reencrypt_all()

    count = session(action, writes=True)
    if as_json:
        emit_json({"reencrypted": count})
    else:
        console.print(f"re-encrypted {count} credential(s) under the newest key")


@secrets_app.command("generate")
def generate(as_json: JsonFlag = False) -> None:
    """Print a new encryption key (put it first in POOLGATE_ENCRYPTION_KEYS, then run `secrets rotate`)."""
    key = generate_key()
    if as_json:
        emit_json({"key": key})
    else:
        console.print(key, highlight=False)

