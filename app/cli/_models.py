"""``poolgate models list``: the catalog, or one key's view of it."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from app.catalog import ENDPOINTS, CatalogService
from app.cli._common import console, emit_json, fail, run, settings
from app.db import create_engine, upgrade
from keys import KeyStore, Policy

__all__ = ["models_app"]

models_app = typer.Typer(help="Inspect the model catalog.", no_args_is_help=True)


@models_app.command("list")
def list_models(
    key: Annotated[str | None, typer.Option("--key", help="Show what this key (id or name) sees.")] = None,
    endpoint: Annotated[str | None, typer.Option(help=f"Only models serving {', '.join(ENDPOINTS)}.")] = None,
    provider: Annotated[str | None, typer.Option(help="Only this provider's models, e.g. openai.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print what GET /v1/models would return.")] = False,
) -> None:
    """List models: the whole catalog, or exactly what a key's GET /v1/models returns."""
    if endpoint is not None and endpoint not in ENDPOINTS:
        fail(f"invalid --endpoint {endpoint!r}: expected one of {', '.join(ENDPOINTS)}")
    config = settings()
    catalog = CatalogService(config.catalog_file)
    policy = Policy(allowed_models=("*",))
    if key is not None:
        upgrade(config)

        async def load() -> Policy:
            store = KeyStore(create_engine(config))
            try:
                return (await store.get(key)).policy
            finally:
                await store.engine.dispose()

        policy = run(load)
    view = catalog.view(policy, endpoint, provider.lower() if provider else None)
    items = [json.loads(item) for item in view.items]
    if as_json:
        emit_json({"object": "list", "data": items, "catalog_version": view.catalog_version})
        return
    title = f"{len(items)} model(s), catalog {view.catalog_version}" + (f", as key {key}" if key else "")
    table = Table(title=title)
    for column in ("#", "id", "provider", "context", "efforts", "endpoints", "$ in/out per 1M"):
        table.add_column(column, overflow="fold")
    for rank, item in enumerate(items, 1):
        meta, price = item["metadata"], item["pricing"] or {}
        efforts = ",".join(level["effort"] for level in meta["supported_reasoning_levels"]) or "-"
        cost = f"{price.get('input')}/{price.get('output')}" if price else "-"
        table.add_row(str(rank), item["id"], meta["provider"], f"{meta['context_window'] or '-'}", efforts,
                      ",".join(meta["supported_endpoints"]), cost)
    console.print(table)
