"""Thin HTTP handlers: parse, call the services, return."""

from __future__ import annotations

from app.routes.health import healthz, readyz
from app.routes.models import list_models, retrieve_model
from app.routes.openai import chat_completions, embeddings, responses, responses_websocket
from app.routes.usage import key_usage, metrics

__all__ = [
    "ROUTES",
    "chat_completions",
    "embeddings",
    "healthz",
    "key_usage",
    "list_models",
    "metrics",
    "readyz",
    "responses",
    "responses_websocket",
    "retrieve_model",
]

ROUTES = [
    list_models, retrieve_model, chat_completions, responses, responses_websocket, embeddings,
    key_usage, healthz, readyz, metrics,
]
