"""What every command shares: settings, the async runner, a session on the admin service, flags, output."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, NoReturn, TypeVar

from rich.console import Console

from app.settings import Settings

__all__ = [
    "CliError",
    "Session",
    "console",
    "emit_json",
    "err_console",
    "fail",
    "parse_duration",
    "parse_expiry",
    "parse_limit",
    "parse_list",
    "run",
    "session",
    "settings",
    "size_consoles",
    "warn",
]

T = TypeVar("T")
console = Console()
err_console = Console(stderr=True)


def size_consoles() -> None:
    """Output piped into a file or another program is as wide as it needs, not 80 columns; ``COLUMNS``
    sets it; a terminal keeps its own width. (Read at each command, since the streams can change.)"""
    columns = os.environ.get("COLUMNS", "")
    for out, stream in ((console, sys.stdout), (err_console, sys.stderr)):
        if columns.isdigit():
            out.size = (int(columns), 50)
        elif not stream.isatty():
            out.size = (200, 50)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$", re.IGNORECASE)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class CliError(Exception):
    """Ends a command with one line on stderr and exit code 1."""


def fail(message: str) -> NoReturn:
    raise CliError(message)


def warn(message: str) -> None:
    err_console.print(f"[bold yellow]warning:[/] {message}", highlight=False, soft_wrap=True)


def settings() -> Settings:
    return Settings.from_env()


def run(factory: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        return await factory()

    return asyncio.run(main())


class Session:
    """One command's hold on the database: the admin service (audited as this user), the engine, the settings."""

    def __init__(self, config: Settings) -> None:
        from app._db import create_engine
        from app.admin import AdminService, AuditTrail, cli_actor
        from app.crypto import Vault
        from app.fleet import announce

        self.settings = config
        self.engine = create_engine(config)
        self.vault = Vault.from_settings(config)
        self.trail = AuditTrail(cli_actor(), "cli")
        self.service = AdminService(self.engine, self.vault,
                                    announce=lambda what: announce(config.limits_url, what))

    async def close(self) -> None:
        await self.engine.dispose()


def session(action: Callable[[Session], Awaitable[T]], *, writes: bool = False) -> T:
    """Run one action on an existing, migrated database (never a new one: only ``serve``, ``demo`` and
    ``db upgrade`` make one); a change says which database it went to."""
    from app._db import describe, require_database

    config = settings()
    require_database(config)

    async def go() -> T:
        opened = Session(config)
        try:
            return await action(opened)
        finally:
            await opened.close()

    result = run(go)
    if writes:
        err_console.print(f"(database: {describe(config)})", highlight=False, soft_wrap=True)
    return result


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False) + "\n")


def parse_duration(text: str, what: str) -> float:
    match = _DURATION.match(text)
    if not match:
        fail(f"invalid {what} {text!r}: use a number with s, m, h, d or w, such as 30d or 1h")
    return float(match.group(1)) * _UNITS[match.group(2).lower()]


def parse_expiry(text: str | None) -> float | None:
    """``30d`` (from now), ``2027-01-01`` or an ISO timestamp; ``never`` clears it."""
    if text is None:
        return None
    if text.strip().lower() in ("never", "none"):
        return None
    if _DURATION.match(text):
        return time.time() + parse_duration(text, "expiry")
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        fail(f"invalid expiry {text!r}: use a duration such as 30d, a date such as 2027-01-01, or 'never'")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    if moment.timestamp() <= time.time():
        fail(f"expiry {text!r} is in the past")
    return moment.timestamp()


def parse_limit(text: str | None, what: str) -> int | None:
    """A positive whole number, or ``none`` for unlimited."""
    if text is None or text.strip().lower() in ("none", "unlimited"):
        return None
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        fail(f"invalid {what} {text!r}: expected a whole number, or 'none' for unlimited")
    if not 1 <= value <= 1_000_000_000:
        fail(f"invalid {what} {value}: expected 1 to 1000000000, or 'none' for unlimited")
    return value


def parse_list(text: str | None) -> tuple[str, ...] | None:
    """Comma-separated values; ``*`` (or ``any``) means no restriction (None)."""
    if text is None:
        return None
    items = tuple(part.strip() for part in text.split(",") if part.strip())
    if items in (("*",), ("any",)):
        return None
    return items
