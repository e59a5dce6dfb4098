"""Pages from Mako templates (``templates/``), compiled once per process, escaping every value by default."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from litestar import Response
from mako.lookup import TemplateLookup

from app.quota import format_usd

__all__ = ["HTML", "page", "when"]

HTML = "text/html; charset=utf-8"
_TEMPLATES = TemplateLookup(directories=[str(Path(__file__).parent / "templates")], default_filters=["h"],
                            strict_undefined=True, input_encoding="utf-8")
_HEADERS = {
    "cache-control": "no-store",
    # Everything the pages load comes from poolgate itself; nothing may frame them.
    "content-security-policy": ("default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; "
                                "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
}


def number(value: float | int | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def money(value: float | None) -> str:
    """Dollars for a table: cents from one cent up, three significant digits below it."""
    if value is None:
        return "-"
    if value == 0 or value >= 0.01:
        return f"${value:,.2f}"
    return format_usd(float(f"{value:.3g}"))


def when(value: float | str | None) -> str:
    """A moment as people read it on a page: 2026-11-28 14:03 UTC."""
    if value is None or value == "":
        return "-"
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value
    else:
        moment = datetime.fromtimestamp(value, UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def ago(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


_LAYOUT = {"admin": None, "section": "", "flash": "", "error": None, "csrf": ""}
"""What the layouts read on every page; a page without a signed-in admin (sign-in) leaves them so."""


def page(name: str, status: int = 200, **context: Any) -> Response[bytes]:
    template = _TEMPLATES.get_template(name)
    body = template.render_unicode(number=number, money=money, when=when, ago=ago, now=time.time(),
                                   **{**_LAYOUT, **context})
    return Response(content=body.encode(), status_code=status, media_type=HTML, headers=dict(_HEADERS))
