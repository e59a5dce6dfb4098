"""``poolgate upstreams ...`` and ``poolgate secrets ...``: the accounts behind the gateway."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import aiohttp
import typer
from rich.table import Table

from app.cli._common import console, emit_json, fail, run, settings, store_session
from app.crypto import Vault, generate_key
from app.pool import UpstreamRecord, UpstreamStore, parse_routes

__all__ = ["secrets_app", "upstreams_app"]

T = TypeVar("T")
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


def _session(action: Callable[[UpstreamStore], Awaitable[T]], *, changes: bool = True) -> T:
    return store_session(lambda config, engine: UpstreamStore(engine, Vault.from_settings(config)), action,
                         announces="upstreams" if changes else None)


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
    routes = parse_routes(models)
    credential = _credential(api_key_env, api_key_stdin)
    record = _session(lambda store: store.add(
        name, base_url, routes, credential=credential, weight=1.0 if weight is None else weight,
        tier=tier or 0, max_concurrency=max_concurrency or None, enabled=not disabled))
    _report(record, as_json, "added")


@upstreams_app.command("list")
def list_upstreams(as_json: JsonFlag = False) -> None:
    """List upstream accounts (never their credentials)."""
    records = _session(lambda store: store.list(), changes=False)
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
    _report(_session(lambda store: store.get(ref), changes=False), as_json, "")


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
    changes: dict[str, Any] = {"name": name, "base_url": base_url, "weight": weight, "tier": tier, "enabled": enable,
                               "routes": parse_routes(models) if models is not None else None}
    if credential is not None:
        changes["credential"] = credential
    if max_concurrency is not None:
        changes["max_concurrency"] = max_concurrency or None  # 0 removes the limit
    _report(_session(lambda store: store.update(ref, **changes)), as_json, "updated")


@upstreams_app.command("remove")
def remove(ref: Ref, as_json: JsonFlag = False) -> None:
    """Remove an upstream; serving processes stop using it within 2 s."""
    _report(_session(lambda store: store.remove(ref)), as_json, "removed")


@upstreams_app.command("test")
def probe(ref: Ref, as_json: JsonFlag = False,
          wait: Annotated[float, typer.Option("--timeout", help="Seconds to wait for an answer.")] = 10.0) -> None:
    """Probe an upstream's /models: prints the latency and the models it reports."""
    config = settings()
    vault = Vault.from_settings(config)
    record = _session(lambda store: store.get(ref), changes=False)
    headers = {}
    if record.credential:
        headers["authorization"] = f"Bearer {vault.decrypt(record.credential, what=f'the credential of {record.name}')}"
    result = run(lambda: _probe(record.base_url + "/models", headers, wait))
    if as_json:
        emit_json({"id": record.id, "name": record.name, **result})
    elif result["ok"]:
        console.print(f"{record.name}: HTTP {result['status']} in {result['latency_ms']:.0f} ms, "
                      f"{len(result['models'])} model(s): {', '.join(result['models'][:30])}", highlight=False)
    else:
        console.print(f"{record.name}: FAILED: {result['error']}", highlight=False)
    if not result["ok"]:
        raise typer.Exit(1)


async def _probe(url: str, headers: dict[str, str], wait: float) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=wait)) as session, \
                session.get(url, headers=headers) as response:
            body = await response.json(content_type=None) if response.status == 200 else None
            latency = (time.perf_counter() - started) * 1000
            if response.status != 200:
                return {"ok": False, "status": response.status, "latency_ms": latency, "models": [],
                        "error": f"HTTP {response.status} from {url}"}
            data = body.get("data", []) if isinstance(body, dict) else []
            models = sorted(str(m.get("id")) for m in data if isinstance(m, dict))
            return {"ok": True, "status": 200, "latency_ms": latency, "models": models, "error": None}
    except (aiohttp.ClientError, TimeoutError, ValueError, AttributeError) as exc:
        return {"ok": False, "status": None, "latency_ms": (time.perf_counter() - started) * 1000, "models": [],
                "error": f"{exc.__class__.__name__}: {exc}" if str(exc) else exc.__class__.__name__}


@secrets_app.command("rotate")
def rotate(as_json: JsonFlag = False) -> None:
    """Re-encrypt every stored credential under the newest key in POOLGATE_ENCRYPTION_KEYS."""
    count = _session(lambda store: store.reencrypt_all())
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

