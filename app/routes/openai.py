"""The relayed OpenAI endpoints."""

from __future__ import annotations

from typing import Any

from litestar import Response, post

from app._types import AnyRequest
from app.routes._auth import authorize
from app.services import Services

__all__ = ["chat_completions", "embeddings", "responses"]


async def _relay(request: AnyRequest, services: Services, endpoint: str) -> Response[Any]:
    key, headers = await authorize(request, services)
    return await services.proxy.handle(request, endpoint, key, headers)


@post("/v1/chat/completions", status_code=200)
async def chat_completions(request: AnyRequest, services: Services) -> Response[Any]:
    return await _relay(request, services, "chat_completions")


@post("/v1/responses", status_code=200)
async def responses(request: AnyRequest, services: Services) -> Response[Any]:
    return await _relay(request, services, "responses")


@post("/v1/embeddings", status_code=200)
async def embeddings(request: AnyRequest, services: Services) -> Response[Any]:
    return await _relay(request, services, "embeddings")
