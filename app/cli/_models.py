"""``poolgate models list``: the whole catalog (with the upstreams serving each model), or one key's view."""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import typer
from rich.table import Table

from app.catalog import ENDPOINTS, CatalogService, render_page
from app.cli._common import Session, console, emit_json, fail, session, settings
from keys import Matcher, Policy

__all__ = ["models_app"]

models_app = typer.Typer(help="Inspect the model catalog.", no_args_is_help=True)


@models_app.command("list")
def list_models(
    key: Annotated[str | None, typer.Option(
        "--key", help="Show what this key (id or name) may use, in its order.")] = None,
    endpoint: Annotated[str | None, typer.Option(help=f"Only models serving {', '.join(ENDPOINTS)}.")] = None,
    provider: Annotated[str | None, typer.Option(help="Only this provider's models, e.g. openai.")] = None,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print the /v1/models list, each model with its upstreams.")] = False,
) -> None:
    """List models with the upstreams that serve each: the whole catalog, or a key's view of it.

    Clients see only the models some enabled upstream serves; this lists them all, so a model
    no upstream serves yet shows with none.
    """
    if endpoint is not None and endpoint not in ENDPOINTS:
        fail(f"invalid --endpoint {endpoint!r}: expected one of {', '.join(ENDPOINTS)}")
    catalog = CatalogService(settings().catalog_file)

    async def load(s: Session) -> tuple[Policy, dict[str, list[str]]]:
        policy = (await s.service.get_key(key)).policy if key is not None else Policy(allowed_models=("*",))
        serving: dict[str, list[str]] = {}
        for upstream in await s.service.list_upstreams():
            if not upstream.enabled:
                continue
            matcher = Matcher([route.pattern for route in upstream.routes])
            for model in catalog.catalog.models:
                if matcher.matches(model.names):
                    serving.setdefault(model.id, []).append(upstream.name)
        return policy, serving

    policy, serving = session(load)
    view = catalog.view(policy, endpoint, provider.lower() if provider else None)
    listing: dict[str, Any] = json.loads(render_page(view, int(time.time() - catalog.catalog.built_at)))
    for item in listing["data"]:
        item["served_by"] = serving.get(item["id"], [])
    if as_json:
        emit_json(listing)
        return
    items = listing["data"]
    title = f"{len(items)} model(s), catalog {view.catalog_version}" + (f", as key {key}" if key else "")
    table = Table(title=title)
    for column in ("#", "id", "provider", "context", "efforts", "endpoints", "$ in/out per 1M", "upstreams"):
        table.add_column(column, overflow="fold")
    for rank, item in enumerate(items, 1):
        meta, price = item["metadata"], item["pricing"] or {}
        efforts = ",".join(level["effort"] for level in meta["supported_reasoning_levels"]) or "-"
        cost = f"{price.get('input')}/{price.get('output')}" if price else "-"
        table.add_row(str(rank), item["id"], meta["provider"], f"{meta['context_window'] or '-'}", efforts,
                      ",".join(meta["supported_endpoints"]), cost, ", ".join(item["served_by"]) or "none")
    console.print(table)
