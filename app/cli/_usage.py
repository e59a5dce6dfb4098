"""``poolgate usage``: requests, tokens, cost and latency per key and model."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from app.cli._common import CliError, console, emit_json, fail, parse_duration, run, settings
from app.db import create_engine, upgrade
from app.usage import UsageSummary, summarize
from keys import KeyStore

__all__ = ["register_usage"]

SINCE_HELP = "Start of the report: a duration back from now (7d, 24h, 2w) or a date/time (2026-11-01, UTC)."
_COUNTS = ("requests", "errors", "input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens")


def register_usage(cli: typer.Typer) -> None:
    cli.command("usage")(usage)


def usage(
    since: Annotated[str, typer.Option("--since", help=SINCE_HELP)] = "30d",
    key: Annotated[str | None, typer.Option("--key", help="Only this key: its id or its name.")] = None,
    model: Annotated[str | None, typer.Option("--model", help="Only this model (exact id).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of a table.")] = False,
) -> None:
    """Report requests, errors, tokens, cost and median latency per key and model (requests in flight excluded)."""
    start = parse_since(since)
    config = settings()
    upgrade(config)

    async def go() -> tuple[list[UsageSummary], dict[str, str]]:
        engine = create_engine(config)
        try:
            store = KeyStore(engine)
            key_id = (await store.get(key)).id if key is not None else None
            rows = await summarize(engine, since=start, key_id=key_id, model=model)
            names = {record.id: record.name for record in await store.list(include_revoked=True)}
            return rows, names
        finally:
            await engine.dispose()

    rows, names = run(go)
    if as_json:
        emit_json(_as_json(start, rows, names))
    else:
        _print_table(start, rows, names)


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """A duration back from ``now`` or an ISO date/datetime (UTC when naive); never in the future."""
    now = now or datetime.now(UTC)
    try:
        seconds = parse_duration(text, "--since")
    except CliError:
        pass
    else:
        try:
            return now - timedelta(seconds=seconds)
        except OverflowError:
            fail(f"invalid --since {text!r}: that is before the year 1")
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        fail(f"invalid --since {text!r}: use a duration such as 7d or a date such as 2026-11-01")
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    if moment > now:
        fail(f"invalid --since {text!r}: it is in the future")
    return moment


def _totals(rows: list[UsageSummary]) -> dict[str, Any]:
    totals: dict[str, Any] = {name: sum(getattr(r, name) for r in rows) for name in _COUNTS}
    totals["cost_usd"] = _money(math.fsum(r.cost_usd for r in rows))
    return totals


def _money(value: float) -> float:
    """Drop float noise from summing (0.30000000000000004) while keeping sub-cent precision."""
    return round(value, 10)


def _as_json(start: datetime, rows: list[UsageSummary], names: dict[str, str]) -> dict[str, Any]:
    return {
        "since": start.isoformat(),
        "rows": [
            {
                "key_id": r.key_id, "key_name": names.get(r.key_id), "model": r.model,
                **{name: getattr(r, name) for name in _COUNTS},
                "cost_usd": _money(r.cost_usd), "p50_latency_ms": r.p50_latency_ms,
            }
            for r in rows
        ],
        "totals": _totals(rows),
    }


def _print_table(start: datetime, rows: list[UsageSummary], names: dict[str, str]) -> None:
    title = f"usage since {start.strftime('%Y-%m-%d %H:%M')} UTC"
    if not rows:
        console.print(f"no finished requests ({title})", highlight=False)
        return
    table = Table(title=title)
    table.add_column("key", overflow="fold")
    table.add_column("model", overflow="fold")
    for column in ("requests", "errors", "input tokens", "output tokens", "cost", "p50 latency (ms)"):
        table.add_column(column, justify="right")
    for r in rows:
        name = names.get(r.key_id)
        table.add_row(
            escape(f"{r.key_id} ({name})" if name else r.key_id), escape(r.model), f"{r.requests:,}", f"{r.errors:,}",
            f"{r.input_tokens:,}", f"{r.output_tokens:,}", f"${r.cost_usd:,.4f}",
            "-" if r.p50_latency_ms is None else f"{r.p50_latency_ms:,.0f}",
        )
    totals = _totals(rows)
    table.add_section()
    table.add_row(
        "total", "", f"{totals['requests']:,}", f"{totals['errors']:,}", f"{totals['input_tokens']:,}",
        f"{totals['output_tokens']:,}", f"${totals['cost_usd']:,.4f}", "", style="bold",
    )
    console.print(table)
