"""``poolgate serve``, ``poolgate demo`` and ``poolgate db upgrade``: the commands that may make a database."""

from __future__ import annotations

import asyncio
import errno
import shutil
import signal
import socket
import sys
import tempfile
import threading
from pathlib import Path
from typing import Annotated, Any

import typer

from app.cli._common import CliError, console, emit_json, err_console, run, settings
from app.settings import Settings

__all__ = ["db_app", "prepare", "register_serving", "run_server"]

db_app = typer.Typer(help="Database maintenance.", no_args_is_help=True)
DEMO = "demo"


@db_app.command("upgrade")
def db_upgrade(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Create or migrate the database to the newest schema (serve does this too)."""
    from app._db import describe, ensure_data_dir, upgrade

    config = settings()
    if config.is_sqlite:
        ensure_data_dir(config)
    upgrade(config)
    if as_json:
        emit_json({"status": "ok", "database": describe(config)})
    else:
        err_console.print(f"database is up to date: {describe(config)}", highlight=False)


def register_serving(cli: typer.Typer) -> None:
    cli.command()(serve)
    cli.command()(demo)


def serve(
    host: Annotated[str | None, typer.Option(
        help="Address to listen on.", show_default="POOLGATE_HOST or 127.0.0.1")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.", show_default="POOLGATE_PORT or 8080")] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes (more than one needs Redis limits).",
                                                show_default="POOLGATE_WORKERS or 1")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Log the start-up line as JSON.")] = False,
) -> None:
    """Create or migrate the database, then serve the gateway."""
    config = settings().with_overrides(
        **{k: v for k, v in {"host": host, "port": port, "workers": workers}.items() if v is not None}
    )
    prepare(config)
    run_server(config, as_json)


def demo(
    port: Annotated[int | None, typer.Option(help="Port for poolgate.", show_default="POOLGATE_PORT or 8080")] = None,
    chunks: Annotated[int, typer.Option(help="Chunks per streamed answer from the fake upstream.")] = 12,
    interval: Annotated[float, typer.Option(help="Seconds between streamed chunks.")] = 0.05,
) -> None:
    """Serve poolgate with a local fake upstream and a demo key, in a throwaway data directory (removed
    when the demo stops; your own database is never touched)."""
    base = settings()
    config = Settings(data_dir=Path(tempfile.mkdtemp(prefix="poolgate-demo-")), host=base.host,
                      port=port if port is not None else base.port, log_level=base.log_level,
                      catalog_file=base.catalog_file)
    try:
        _port_free(config.host, config.port)
        prepare(config)
        from app.catalog import CatalogService
        from app.fake_upstream import FakeUpstream

        models = [m.id for m in CatalogService(config.catalog_file).catalog.models]
        # The fake runs on its own event loop in a thread of this process, so it ends with it.
        fake = FakeUpstream(name=DEMO, models=models, chunks=chunks, interval=interval, record=False)
        loop = asyncio.new_event_loop()
        threading.Thread(target=loop.run_forever, name="poolgate-demo-upstream", daemon=True).start()
        base_url = asyncio.run_coroutine_threadsafe(fake.start(), loop).result(timeout=30)
        token = run(lambda: _register(config, base_url))
        url = f"http://{config.host}:{config.port}"
        console.print(
            f"\n[bold]poolgate demo[/]: every model is answered by a local fake upstream at {base_url}\n"
            f"(demo data in {config.data_dir}, removed when the demo stops; your own database is not touched)\n"
            f"demo key (shown once): {token}\n\n"
            f"  curl -H 'Authorization: Bearer {token}' {url}/v1/models\n"
            f"  curl -N -H 'Authorization: Bearer {token}' -H 'Content-Type: application/json' "
            f"{url}/v1/chat/completions \\\n"
            "       -d '{\"model\": \"gpt-5\", \"stream\": true, \"messages\": [{\"role\": \"user\", "
            "\"content\": \"hi\"}]}'\n",
            highlight=False, soft_wrap=True,
        )
        # uvicorn re-raises the stop signal once it has shut down: make SIGTERM end this process through
        # Python (as Ctrl-C does), so the temporary data directory is removed on the way out.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        run_server(config)
    finally:
        shutil.rmtree(config.data_dir, ignore_errors=True)


def _port_free(host: str, port: int) -> None:
    """Refuse, before printing a key for it, a port this process cannot take."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            reason = "it is in use" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc))
            raise CliError(f"cannot listen on {host}:{port}: {reason} (choose another with --port)") from None


async def _register(config: Settings, base_url: str) -> str:
    """The ``demo`` upstream at this run's fake, and the ``demo`` key."""
    from app._db import create_engine
    from app.crypto import Vault
    from app.pool import UpstreamStore, parse_routes
    from keys import KeyStore, Policy

    engine = create_engine(config)
    try:
        await UpstreamStore(engine, Vault.from_settings(config)).add(DEMO, base_url, parse_routes("*"))
        _, token = await KeyStore(engine).create(DEMO, Policy(allowed_models=("*",)))
        return token
    finally:
        await engine.dispose()


def prepare(config: Settings) -> None:
    """Everything that can stop a start, checked before the server binds, each failure one line."""
    from app._db import ensure_data_dir, upgrade
    from app.catalog import CatalogService
    from app.quota import QuotaService

    local_limits = config.limits_url.startswith("memory://")
    if config.workers > 1 and local_limits:
        raise CliError(
            "several workers cannot share memory:// limits: set POOLGATE_LIMITS_URL=redis://host:6379/0 "
            "or run one worker"
        )
    if not config.is_sqlite and local_limits and not config.single_instance:
        raise CliError(
            "replicas on PostgreSQL must share their quotas: set POOLGATE_LIMITS_URL=redis://host:6379/0 "
            "(for one single instance on PostgreSQL, set POOLGATE_SINGLE_INSTANCE=true instead)"
        )
    ensure_data_dir(config)
    CatalogService(config.catalog_file)
    QuotaService.check_url(config.limits_url)
    if not local_limits:
        run(lambda: QuotaService.ping(config.limits_url))
    upgrade(config)
    run(lambda: _check_credentials(config))


async def _check_credentials(config: Settings) -> None:
    from app._db import create_engine
    from app.crypto import Vault
    from app.pool import UpstreamStore, credential_headers

    engine = create_engine(config)
    try:
        vault = Vault.from_settings(config)
        store = UpstreamStore(engine, vault)
        await store.check_vault()
        for record in await store.list():
            credential_headers(record, vault)
    finally:
        await engine.dispose()


def uvicorn_options(config: Settings) -> dict[str, Any]:
    return {
        "host": config.host, "port": config.port, "loop": "uvloop", "log_level": config.log_level,
        "access_log": False, "server_header": False, "timeout_keep_alive": config.keepalive_timeout,
        "timeout_graceful_shutdown": 30,
        # A Responses turn over WebSocket is one frame holding the whole request: as large as a body may be.
        "ws_max_size": config.max_body_bytes,
    }


def run_server(config: Settings, as_json: bool = False) -> None:
    """Serve until stopped. One worker runs the app built from ``config`` here; several run
    ``app.server:create_app_from_env`` in worker processes that read the same environment."""

    import uvicorn

    from app._db import describe
    from app._http import protocol_for

    line = {"event": "listening", "url": f"http://{config.host}:{config.port}", "database": describe(config)}
    if as_json:
        emit_json(line)
    else:
        err_console.print(f"poolgate listening on {line['url']} (database {line['database']})", highlight=False)
    if config.workers > 1:
        uvicorn.run("app.server:create_app_from_env", factory=True, workers=config.workers,
                    http="app._http:GatewayProtocol", env_file=None, **uvicorn_options(config))
        return
    from app.server import configure_logging, create_app, serving

    configure_logging(config.log_level)
    uvicorn.run(serving(create_app(config)), http=protocol_for(config.head_timeout, config.max_connections),
                **uvicorn_options(config))
