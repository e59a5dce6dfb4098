"""What every command shares: settings, the async runner, parsing of flags, output."""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, NoReturn, TypeVar

from rich.console import Console
from sqlalchemy.ext.asyncio import AsyncEngine

from app.settings import Settings

__all__ = [
    "CliError",
    "console",
    "emit_json",
    "err_console",
    "fail",
    "parse_duration",
    "parse_expiry",
    "parse_limit",
    "parse_list",
    "run",
    "settings",
]

T = TypeVar("T")
S = TypeVar("S")
console = Console()
err_console = Console(stderr=True)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$", re.IGNORECASE)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class CliError(Exception):
    """Ends a command with one line on stderr and exit code 1."""


def fail(message: str) -> NoReturn:
    raise CliError(message)


def settings() -> Settings:
    return Settings.from_env()


def run(factory: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        return await factory()

    return asyncio.run(main())


def store_session(
    open_store: Callable[[Settings, AsyncEngine], S],
    action: Callable[[S], Awaitable[T]],
    *,
    announces: str | None,
) -> T:
    """Migrate if needed, run one store action, close the engine; a change (``announces`` names
    what changed) wakes every replica's sync through Redis, when there is one."""
    from app.db import create_engine, upgrade
    from app.fleet import announce

    config = settings()
    upgrade(config)

    async def go() -> T:
        engine = create_engine(config)
        try:
            result = await action(open_store(config, engine))
        finally:
            await engine.dispose()
        if announces is not None:
            await announce(config.limits_url, announces)
        return result

    return run(go)


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
