"""``poolgate usage``: requests, tokens, cost and latency per key and model, from the usage totals."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from app.cli._common import CliError, Session, console, emit_json, fail, parse_duration, session
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
    """Report requests, errors, tokens, cost and median latency per key and model (to the hour; requests in
    flight excluded)."""
    start = parse_since(since)

    async def go(s: Session) -> tuple[list[UsageSummary], dict[str, str]]:
        store = KeyStore(s.engine)
        key_id = (await store.get(key)).id if key is not None else None
        rows = await summarize(s.engine, since=start, key_id=key_id, model=model)
        return rows, await store.names()

    rows, names = session(go)
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


def _money(value: float) -> float:
    """Drop float noise from summing (0.30000000000000004) while keeping sub-cent precision."""
    return round(value, 10)


def _row(r: UsageSummary, names: dict[str, str]) -> dict[str, Any]:
    t = r.totals
    return {"key_id": r.group["key"], "key_name": names.get(r.group["key"]), "model": r.group["model"],
            **{name: getattr(t, name) for name in _COUNTS}, "cost_usd": _money(t.cost_usd),
            "p50_latency_ms": None if t.latency(0.5) is None else round(t.latency(0.5) or 0.0, 1)}


def _as_json(start: datetime, rows: list[UsageSummary], names: dict[str, str]) -> dict[str, Any]:
    totals: dict[str, Any] = {name: sum(getattr(r.totals, name) for r in rows) for name in _COUNTS}
    totals["cost_usd"] = _money(math.fsum(r.totals.cost_usd for r in rows))
    return {"since": start.isoformat(), "rows": [_row(r, names) for r in rows], "totals": totals}


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
        data = _row(r, names)
        label = f"{data['key_id']} ({data['key_name']})" if data["key_name"] else data["key_id"]
        table.add_row(
            escape(label), escape(data["model"]), f"{data['requests']:,}", f"{data['errors']:,}",
            f"{data['input_tokens']:,}", f"{data['output_tokens']:,}", f"${data['cost_usd']:,.4f}",
            "-" if data["p50_latency_ms"] is None else f"{data['p50_latency_ms']:,.0f}",
        )
    totals = _as_json(start, rows, names)["totals"]
    table.add_section()
    table.add_row(
        "total", "", f"{totals['requests']:,}", f"{totals['errors']:,}", f"{totals['input_tokens']:,}",
        f"{totals['output_tokens']:,}", f"${totals['cost_usd']:,.4f}", "", style="bold",
    )
    console.print(table)
