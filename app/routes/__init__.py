"""Thin HTTP handlers: parse, call the services, return."""

from __future__ import annotations

from typing import Any

from app.routes.admin_api import admin_api_router
from app.routes.health import healthz, metrics, readyz
from app.routes.models import list_models, retrieve_model
from app.routes.openai import RELAY_ROUTES
from app.routes.usage import key_usage
from app.settings import Settings

__all__ = ["route_handlers"]


def route_handlers(settings: Settings) -> list[Any]:
    from app.web import web_handlers

    return [
        *RELAY_ROUTES, list_models, retrieve_model, key_usage, healthz, readyz, metrics, admin_api_router(),
        *web_handlers(settings),
    ]
