"""The ``poolgate`` command: serve, keys, models, db. Reuses the service layer; nothing imports it."""

from __future__ import annotations

import sys
from typing import Annotated, NoReturn

import typer
from typer._click.exceptions import ClickException, NoArgsIsHelpError  # typer >= 0.29 vendors click

from app.cli._common import CliError, emit_json, err_console, run, settings
from app.cli._demo import register_demo
from app.cli._keys import keys_app
from app.cli._models import models_app
from app.cli._upstreams import secrets_app, upstreams_app
from app.cli._usage import register_usage
from app.settings import Settings

__all__ = ["cli", "main"]

cli = typer.Typer(
    help="poolgate: an OpenAI-compatible gateway sharing a pool of upstream accounts through per-person keys.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
cli.add_typer(keys_app, name="keys")
cli.add_typer(models_app, name="models")
cli.add_typer(upstreams_app, name="upstreams")
cli.add_typer(secrets_app, name="secrets")
register_demo(cli)
register_usage(cli)
db_app = typer.Typer(help="Database maintenance.", no_args_is_help=True)
cli.add_typer(db_app, name="db")


@db_app.command("upgrade")
def db_upgrade(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Migrate the database to the newest schema (also done by `serve`)."""
    from app.db import upgrade

    config = settings()
    upgrade(config)
    if as_json:
        emit_json({"status": "ok", "database": _safe_url(config.database_url)})
    else:
        err_console.print(f"database is up to date: {_safe_url(config.database_url)}", highlight=False)


@cli.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on [env POOLGATE_HOST; 127.0.0.1].")] = None,
    port: Annotated[int | None, typer.Option(help="Port [env POOLGATE_PORT, default 8080].")] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes [env POOLGATE_WORKERS, default 1].")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Log the start-up line as JSON.")] = False,
) -> None:
    """Migrate the database, then serve the gateway."""
    config = settings().with_overrides(
        **{k: v for k, v in {"host": host, "port": port, "workers": workers}.items() if v is not None}
    )
    prepare(config)
    run_server(config, as_json)


def prepare(config: Settings) -> None:
    """Everything that can stop a start, checked before the server binds, each failure one line."""
    from app.catalog import CatalogService
    from app.db import ensure_data_dir, upgrade
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


def run_server(config: Settings, as_json: bool = False) -> None:
    import uvicorn

    line = {"event": "listening", "url": f"http://{config.host}:{config.port}",
            "database": _safe_url(config.database_url)}
    if as_json:
        emit_json(line)
    else:
        err_console.print(f"poolgate listening on {line['url']} (database {line['database']})", highlight=False)
    uvicorn.run(
        "app.server:create_app_from_env",
        factory=True,
        host=config.host,
        port=config.port,
        workers=config.workers,
        loop="uvloop",
        http="httptools",
        log_level=config.log_level,
        access_log=False,
        server_header=False,
        env_file=None,
    )


async def _check_credentials(config: Settings) -> None:
    from app.crypto import Vault
    from app.db import create_engine
    from app.pool import UpstreamStore

    engine = create_engine(config)
    try:
        vault = Vault.from_settings(config)
        for record in await UpstreamStore(engine, vault).list():
            if record.credential is not None:
                vault.decrypt(record.credential, what=f"the credential of upstream {record.name!r}")
    finally:
        await engine.dispose()


def _safe_url(url: str) -> str:
    from app.settings import _redact

    return _redact(url)


def main() -> None:
    """Entry point: every failure ends as one line on stderr and a non-zero exit code."""
    from sqlalchemy.exc import DBAPIError

    from app.catalog import CatalogError
    from app.crypto import VaultError
    from app.settings import SettingsError
    from keys import PolicyError, StoreError

    try:
        code = cli(standalone_mode=False)
    except typer.Abort:
        _fail("aborted", 130)
    except NoArgsIsHelpError as exc:  # a bare `poolgate` or `poolgate keys`: show the help
        if exc.ctx is not None:
            typer.echo(exc.ctx.get_help())
        sys.exit(2)
    except ClickException as exc:  # usage errors: unknown flag, missing argument, bad number
        ctx = getattr(exc, "ctx", None)
        hint = f" (see: {ctx.command_path} --help)" if ctx is not None else ""
        _fail(exc.format_message().replace("\n", " ") + hint, exc.exit_code)
    except (CliError, StoreError, PolicyError, SettingsError, CatalogError, VaultError) as exc:
        _fail(str(exc), 1)
    except DBAPIError as exc:
        _fail(f"database error: {str(exc.orig).splitlines()[0] if exc.orig else exc.__class__.__name__}", 1)
    except OSError as exc:
        _fail(f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc), 1)
    sys.exit(code if isinstance(code, int) else 0)


def _fail(message: str, code: int) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    sys.exit(code)
