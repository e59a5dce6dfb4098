"""Thin HTTP handlers: parse, call the services, return."""

from __future__ import annotations

from app.routes.health import healthz, readyz
from app.routes.models import list_models, retrieve_model
from app.routes.openai import chat_completions, embeddings, responses

__all__ = [
    "ROUTES",
    "chat_completions",
    "embeddings",
    "healthz",
    "list_models",
    "readyz",
    "responses",
    "retrieve_model",
]

ROUTES = [list_models, retrieve_model, chat_completions, responses, embeddings, healthz, readyz]
