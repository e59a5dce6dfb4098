"""The HTTP server's defences against slow and too many clients, on uvicorn's httptools protocol.

uvicorn bounds neither the time a client takes to send a request head nor the number of open
connections: 3,000 sockets holding half a head each held 3,000 file descriptors. Here a connection
must send a whole head within ``head_timeout`` seconds of connecting (or of starting its next
request), or it gets a 408 and is closed; past ``max_connections`` open connections a new one gets a
503 envelope and is closed at once; an idle keep-alive connection closes after ``keepalive_timeout``
(uvicorn's own timer).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from app.errors import error_body
from app.proxy import new_request_id

__all__ = ["GatewayProtocol", "protocol_for"]

_BUSY = error_body("This gateway has too many open connections right now; try again shortly.", "server_error",
                   "too_many_connections")
_REFUSAL = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n"
            b"connection: close\r\ncontent-length: " + str(len(_BUSY)).encode() + b"\r\nx-request-id: ")
_TIMEOUT = error_body("The request head did not arrive in time.", "invalid_request_error", "request_timeout")
_TIMED_OUT = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
              b"content-length: " + str(len(_TIMEOUT)).encode() + b"\r\nx-request-id: ")


def _refusal(head: bytes, body: bytes) -> bytes:
    """The whole answer, with an id of its own like every answer poolgate makes."""
    return head + new_request_id().encode() + b"\r\n\r\n" + body


def _env_float(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


class GatewayProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a head timeout and a connection cap (the class attributes; a
    worker process reads them from the same environment as the settings)."""

    head_timeout: float = _env_float("POOLGATE_HEAD_TIMEOUT", 10.0)
    max_connections: int = int(_env_float("POOLGATE_MAX_CONNECTIONS", 4096))

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None
        self._awaiting_head = True

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            transport.write(_refusal(_REFUSAL, _BUSY))
            transport.close()
            return
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._awaiting_head and self._head_timer is None:
            self._arm()  # the first byte of the next request head on a kept-alive connection
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self._awaiting_head = False
        self._cancel()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        self._awaiting_head = True
        super().on_response_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._cancel()
        self._head_timer = self.loop.call_later(self.head_timeout, self._expire)

    def _cancel(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _expire(self) -> None:
        self._head_timer = None
        if self._awaiting_head and not self.transport.is_closing():
            self.transport.write(_refusal(_TIMED_OUT, _TIMEOUT))
            self.transport.close()


def protocol_for(head_timeout: float, max_connections: int) -> type[GatewayProtocol]:
    """The protocol with these limits (for a server in this process; workers use the class as it is)."""
    return type("GatewayProtocol", (GatewayProtocol,), {"head_timeout": head_timeout,
                                                        "max_connections": max_connections})
