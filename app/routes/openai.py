"""The relayed OpenAI endpoints."""

from __future__ import annotations

from typing import Any

from litestar import Response, WebSocket, post, websocket
from litestar.types import WebSocketResponseBodyEvent, WebSocketResponseStartEvent

from app._types import AnyRequest
from app.access import codex_fatal, is_codex
from app.errors import PermissionDeniedError, RateLimitError, error_body
from app.routes._auth import authorize
from app.services import Services

__all__ = ["chat_completions", "embeddings", "responses", "responses_websocket"]


async def _relay(request: AnyRequest, services: Services, endpoint: str) -> Response[Any]:
    try:
        key, headers = await authorize(request, services)
        return await services.proxy.handle(request, endpoint, key, headers)
    except (PermissionDeniedError, RateLimitError) as exc:
        raise codex_fatal(exc) if is_codex(request.headers) else exc from None


@post("/v1/chat/completions", status_code=200)
async def chat_completions(request: AnyRequest, services: Services) -> Response[Any]:
    return await _relay(request, services, "chat_completions")


@post("/v1/responses", status_code=200)
async def responses(request: AnyRequest, services: Services) -> Response[Any]:
    return await _relay(request, services, "responses")


@post("/v1/embeddings", status_code=200)
async def embeddings(request: AnyRequest, services: Services) -> Response[Any]:
    return await _relay(request, services, "embeddings")


@websocket("/v1/responses")
async def responses_websocket(socket: WebSocket[Any, Any, Any]) -> None:
    """poolgate relays Responses over HTTP only: 426 tells Codex to fall back to HTTP at once."""
    await socket.receive()  # websocket.connect
    if "websocket.http.response" not in (socket.scope.get("extensions") or {}):
        await socket.close(code=1003, reason="WebSocket transport not supported; use HTTP POST /v1/responses")
        return
    body = error_body(
        "poolgate does not serve Responses over WebSocket; send POST /v1/responses over HTTP.",
        "invalid_request_error", "websocket_not_supported", None,
    )
    start: WebSocketResponseStartEvent = {
        "type": "websocket.http.response.start",
        "status": 426,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
    }
    await socket.send(start)
    end: WebSocketResponseBodyEvent = {"type": "websocket.http.response.body", "body": body, "more_body": False}
    await socket.send(end)
