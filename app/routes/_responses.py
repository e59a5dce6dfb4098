"""The Responses API beyond one POST: the per-response endpoints, relayed to the account that made the
response, and the WebSocket transport (or 426 when it is switched off)."""

from __future__ import annotations

from typing import cast

from litestar.datastructures import State
from litestar.enums import ScopeType
from litestar.types import Message, Receive, Scope, Send

from app.access import authenticate, codex_fatal, is_codex
from app.errors import GatewayError, InvalidRequestError, NotFoundError, error_body
from app.proxy import new_request_id
from app.proxy._relay import forward_headers
from app.routes._asgi import ClientGone, client_path, read_body, request_headers, send_error, send_reply

__all__ = ["response_endpoint", "websocket_or_426"]


async def response_endpoint(scope: Scope, receive: Receive, send: Send, methods: tuple[str, ...],
                            response_id: str, suffix: str) -> None:
    """``GET|DELETE /v1/responses/{id}``, ``POST .../cancel``, ``GET .../input_items``: only the key that
    made the response may touch it, and only at the account that made it."""
    state: State = scope["app"].state
    headers = request_headers(scope)
    key_headers: dict[str, str] = {}
    request_id = new_request_id()
    method = scope.get("method", "")
    if scope["type"] != ScopeType.HTTP or method not in methods:
        error = InvalidRequestError(f"{scope.get('method')} is not allowed on {client_path(scope)}; use "
                                    f"{' or '.join(methods)}.", code="method_not_allowed")
        error.status_code = 405
        error.headers["allow"] = ", ".join(methods)
        await send_error(send, error, request_id=request_id)
        return
    try:
        key = await authenticate(headers, state.key_cache)
        key_headers = await state.quota.take_request(key)
        body = await read_body(receive, headers, state.settings.max_body_bytes)
        owner = await state.continuity.resolve(response_id, key)
        if owner is None:
            raise NotFoundError(
                f"No response with id '{response_id}' was made through this gateway for this key (or it is "
                "older than poolgate remembers).", code="response_not_found", param="response_id")
        path = f"/responses/{response_id}{suffix}"
        query = scope.get("query_string", b"")
        if query:
            path += "?" + query.decode("latin-1")
        forward = forward_headers(headers, stream=False)
        reply = await state.proxy.relay.to_owner(owner, method, path, forward, body, key_headers, request_id)
    except ClientGone:
        return
    except GatewayError as exc:
        await send_error(send, codex_fatal(exc) if is_codex(headers) else exc, key_headers, request_id)
        return
    await send_reply(send, reply)


async def websocket_or_426(scope: Scope, receive: Receive, send: Send) -> None:
    """Responses over WebSocket when served; else 426, which tells Codex to use HTTP at once."""
    state: State = scope["app"].state
    if state.settings.websocket:
        from app.routes._websocket import serve_websocket

        await serve_websocket(scope, receive, send)
        return
    await receive()  # websocket.connect
    await deny(send, 426, error_body(
        "poolgate does not serve Responses over WebSocket here; send POST /v1/responses over HTTP.",
        "invalid_request_error", "websocket_not_supported", None))


async def deny(send: Send, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
    """Refuse a WebSocket handshake with a plain HTTP answer (status, JSON body) instead of upgrading."""
    encoded = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    encoded += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
    if "x-request-id" not in (headers or {}):
        encoded.append((b"x-request-id", new_request_id().encode()))
    await send(cast("Message", {"type": "websocket.http.response.start", "status": status, "headers": encoded}))
    await send(cast("Message", {"type": "websocket.http.response.body", "body": body, "more_body": False}))
