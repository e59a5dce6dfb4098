"""The dashboard (``/admin/``) and the member page (``/me/``), served by poolgate itself."""

from __future__ import annotations

from typing import Any

from app.settings import Settings

__all__ = ["web_handlers"]


def web_handlers(settings: Settings) -> list[Any]:
    return []
