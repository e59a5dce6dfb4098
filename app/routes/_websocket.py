"""Responses over WebSocket (as Codex speaks it), bridged to upstreams over HTTP/SSE."""

from __future__ import annotations

from litestar.types import Receive, Scope, Send

from app.errors import error_body

__all__ = ["serve_websocket"]


async def serve_websocket(scope: Scope, receive: Receive, send: Send) -> None:
    from app.routes._responses import deny

    await receive()
    await deny(send, 426, error_body("WebSocket transport not built yet.", "invalid_request_error",
                                     "websocket_not_supported", None))
