"""The dashboard (``/admin/``) and the member page (``/me/``), served by poolgate itself.

Pages are rendered on the server from Mako templates; charts are SVG drawn on the server; the one
script (copying a new key) and the stylesheet ship in ``static/``, inside the package, so the wheel,
the single-file build and the image carry them and nothing is loaded from elsewhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from litestar.static_files import create_static_files_router

from app.settings import Settings
from app.web._dashboard import dashboard_router
from app.web._member import member_router

__all__ = ["web_handlers"]

STATIC = Path(__file__).parent / "static"


def web_handlers(settings: Settings) -> list[Any]:
    return [
        dashboard_router(), member_router(),
        create_static_files_router(path="/admin/static", directories=[STATIC], include_in_schema=False,
                                   cache_control=None, send_as_attachment=False),
    ]
