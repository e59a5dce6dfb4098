"""``poolgate demo``: poolgate in front of the bundled fake upstream, to try it with no account at all."""

from __future__ import annotations

import asyncio
import os
import tempfile
import threading
from typing import Annotated

import typer

from app.catalog import CatalogService
from app.cli._common import console, run, settings
from app.crypto import Vault
from app.db import create_engine
from app.fake_upstream import FakeUpstream
from app.pool import UpstreamNotFound, UpstreamStore, parse_routes
from app.settings import Settings
from keys import KeyNotFound, KeyStore, Policy

__all__ = ["register_demo"]

DEMO = "demo"


def register_demo(cli: typer.Typer) -> None:
    @cli.command()
    def demo(
        port: Annotated[int | None, typer.Option(help="Port for poolgate [env POOLGATE_PORT, default 8080].")] = None,
        chunks: Annotated[int, typer.Option(help="Chunks per streamed answer from the fake upstream.")] = 12,
        interval: Annotated[float, typer.Option(help="Seconds between streamed chunks.")] = 0.05,
    ) -> None:
        """Serve poolgate with a local fake upstream and a demo key, in a throwaway data directory."""
        from app.cli import prepare, run_server

        # Never the real database: the demo's upstream and key live in a temporary data dir,
        # which the uvicorn app factory also reads from the environment.
        data_dir = tempfile.mkdtemp(prefix="poolgate-demo-")
        os.environ["POOLGATE_DATA_DIR"] = data_dir
        os.environ.pop("POOLGATE_DATABASE_URL", None)
        os.environ.pop("POOLGATE_DATABASE_URL_FILE", None)
        config = settings().with_overrides(**({"port": port} if port is not None else {}))
        prepare(config)
        models = [m.id for m in CatalogService(config.catalog_file).catalog.models]
        # The fake runs on its own event loop in a thread of this process, so it ends with it
        # (uvicorn re-raises the stop signal after shutting down, so no cleanup code would run).
        fake = FakeUpstream(name=DEMO, models=models, chunks=chunks, interval=interval, record=False)
        loop = asyncio.new_event_loop()
        threading.Thread(target=loop.run_forever, name="poolgate-demo-upstream", daemon=True).start()
        base_url = asyncio.run_coroutine_threadsafe(fake.start(), loop).result(timeout=30)
        token = run(lambda: _register(config, base_url))
        console.print(
            f"\n[bold]poolgate demo[/]: every model is answered by a local fake upstream at {base_url}\n"
            f"(demo data in {data_dir}; your own database is not touched)\n"
            f"demo key (shown once): {token}\n\n"
            f"  curl -H 'Authorization: Bearer {token}' http://{config.host}:{config.port}/v1/models\n"
            f"  curl -N -H 'Authorization: Bearer {token}' -H 'Content-Type: application/json' "
            f"http://{config.host}:{config.port}/v1/chat/completions \\\n"
            "       -d '{\"model\": \"gpt-5\", \"stream\": true, \"messages\": [{\"role\": \"user\", "
            "\"content\": \"hi\"}]}'\n",
            highlight=False, soft_wrap=True,
        )
        run_server(config)


async def _register(config: Settings, base_url: str) -> str:
    """Point the ``demo`` upstream at this run's fake and give the ``demo`` key a fresh secret."""
    engine = create_engine(config)
    try:
        upstreams = UpstreamStore(engine, Vault.from_settings(config))
        try:
            await upstreams.update(DEMO, base_url=base_url, enabled=True)
        except UpstreamNotFound:
            await upstreams.add(DEMO, base_url, parse_routes("*"))
        keys = KeyStore(engine)
        try:
            _, token = await keys.rotate(DEMO)
        except KeyNotFound:
            _, token = await keys.create(DEMO, Policy(allowed_models=("*",)))
        return token
    finally:
        await engine.dispose()
