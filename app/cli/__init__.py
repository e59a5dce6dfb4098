"""The ``poolgate`` command: serve, keys, upstreams, models, usage, admins, db. It works through the same
service layer as the admin API; nothing imports it."""

from __future__ import annotations

import sys
from typing import NoReturn

import typer
from typer._click.exceptions import ClickException, NoArgsIsHelpError  # typer >= 0.29 vendors click

from app.cli._admins import admins_app
from app.cli._common import CliError, err_console, size_consoles
from app.cli._keys import keys_app
from app.cli._models import models_app
from app.cli._serve import db_app, register_serving
from app.cli._upstreams import secrets_app, upstreams_app
from app.cli._usage import register_usage

__all__ = ["cli", "main"]

cli = typer.Typer(
    help="poolgate: an OpenAI-compatible gateway sharing a pool of upstream accounts through per-person keys.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
register_serving(cli)
cli.add_typer(keys_app, name="keys")
cli.add_typer(upstreams_app, name="upstreams")
cli.add_typer(models_app, name="models")
cli.add_typer(admins_app, name="admins")
cli.add_typer(secrets_app, name="secrets")
cli.add_typer(db_app, name="db")
register_usage(cli)


def main() -> None:
    """Entry point: every failure ends as one line on stderr and a non-zero exit code."""
    from sqlalchemy.exc import DBAPIError

    from app.catalog import CatalogError
    from app.crypto import VaultError
    from app.settings import SettingsError
    from keys import PolicyError, StoreError

    size_consoles()
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
