"""The relayed OpenAI endpoints, as plain ASGI routes (see ``_asgi``): authenticate, count the request,
read the body, hand it to the proxy service, write what it answers."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from litestar import asgi
from litestar.datastructures import State
from litestar.enums import ScopeType
from litestar.handlers import ASGIRouteHandler
from litestar.types import Receive, Scope, Send

from app.access import authenticate, codex_fatal, is_codex
from app.errors import GatewayError, InvalidRequestError, NotFoundError
from app.proxy import Reply
from app.routes._asgi import (
    ClientGone,
    DisconnectWatch,
    client_path,
    read_body,
    request_headers,
    send_error,
    send_reply,
)
from app.routes._responses import response_endpoint, websocket_or_426

__all__ = ["HOT_PATHS", "RELAY_ROUTES"]

log = logging.getLogger("poolgate.routes")


def _method_not_allowed(scope: Scope, allowed: str) -> GatewayError:
    error = InvalidRequestError(f"{scope.get('method', 'This method')} is not allowed on {client_path(scope)}; "
                                f"use {allowed}.", code="method_not_allowed")
    error.status_code = 405
    error.headers["allow"] = allowed
    return error


async def relay(scope: Scope, receive: Receive, send: Send, endpoint: str) -> None:
    """One relayed request, from the first byte in to the last byte out."""
    state: State = scope["app"].state
    headers = request_headers(scope)
    key_headers: dict[str, str] = {}
    if scope.get("method") != "POST":
        await send_error(send, _method_not_allowed(scope, "POST"))
        return
    try:
        key = await authenticate(headers, state.key_cache)
        key_headers = await state.quota.take_request(key)
        raw = await read_body(receive, headers, state.settings.max_body_bytes)
    except ClientGone:
        return
    except GatewayError as exc:
        await send_error(send, codex_fatal(exc) if is_codex(headers) else exc, key_headers)
        return
    watch = DisconnectWatch(receive)
    reply: Reply | None = None
    try:
        reply = await state.proxy.handle(key, endpoint, raw, headers, key_headers)
        del raw
        await send_reply(send, reply, watch)
    except GatewayError as exc:
        if not watch.gone():
            await send_error(send, codex_fatal(exc) if is_codex(headers) else exc, key_headers)
    except asyncio.CancelledError:
        if not watch.gone():
            raise  # the server is stopping, not the client leaving
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
    finally:
        await watch.close()
        if reply is not None and reply.stream is not None:
            await reply.stream.aclose()  # type: ignore[attr-defined]


def _endpoint(path: str, name: str, endpoint: str) -> ASGIRouteHandler:
    async def handler(scope: Scope, receive: Receive, send: Send) -> None:
        await relay(scope, receive, send, endpoint)

    handler.__name__ = name
    handler.__qualname__ = name
    return asgi(path, copy_scope=False, name=name)(handler)


chat_completions = _endpoint("/v1/chat/completions", "chat_completions", "chat_completions")
embeddings = _endpoint("/v1/embeddings", "embeddings", "embeddings")

_PER_RESPONSE = {"": ("GET", "DELETE"), "/cancel": ("POST",), "/input_items": ("GET",)}


@asgi("/v1/responses", is_mount=True, copy_scope=False, name="responses")
async def responses(scope: Scope, receive: Receive, send: Send) -> None:
    """Everything under ``/v1/responses``: a new response over HTTP or over a WebSocket as Codex speaks it
    (``websocket_or_426``), ``/compact``, and one response's own endpoints at the account that made it.

    One mounted route that reads the rest of the path itself: the framework's ASGI routes do not carry
    path parameters (a parameter in an ASGI route's path is looked up under the request's method and missed).
    """
    rest = scope["path"].rstrip("/")
    if not rest:
        if scope["type"] == ScopeType.WEBSOCKET:
            await websocket_or_426(scope, receive, send)
            return
        await relay(scope, receive, send, "responses")
        return
    if rest == "/compact":
        await relay(scope, receive, send, "responses_compact")
        return
    response_id, _, action = rest[1:].partition("/")
    suffix = f"/{action}" if action else ""
    methods = _PER_RESPONSE.get(suffix)
    if methods is None or not response_id:
        await send_error(send, NotFoundError(f"Unknown request URL: /v1/responses{rest}.", code="unknown_url"))
        return
    await response_endpoint(scope, receive, send, methods, response_id, suffix)


RELAY_ROUTES: list[Any] = [chat_completions, embeddings, responses]


async def _post_responses(scope: Scope, receive: Receive, send: Send) -> None:
    await relay(scope, receive, send, "responses")


async def _post_chat(scope: Scope, receive: Receive, send: Send) -> None:
    await relay(scope, receive, send, "chat_completions")


async def _post_embeddings(scope: Scope, receive: Receive, send: Send) -> None:
    await relay(scope, receive, send, "embeddings")


HOT_PATHS = {"/v1/chat/completions": _post_chat, "/v1/responses": _post_responses,
             "/v1/embeddings": _post_embeddings}
"""The relayed POSTs, which carry almost all of the traffic, as plain ASGI callables: the server hands them
their requests before the framework's middleware and router (see ``server.serving``)."""
