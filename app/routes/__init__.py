"""Thin HTTP handlers: parse, call the services, return."""

from __future__ import annotations

from app.routes.health import healthz, readyz
from app.routes.models import list_models, retrieve_model

__all__ = ["ROUTES", "healthz", "list_models", "readyz", "retrieve_model"]

ROUTES = [list_models, retrieve_model, healthz, readyz]
