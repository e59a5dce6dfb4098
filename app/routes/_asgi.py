"""The plain-ASGI plumbing of the relayed endpoints: headers in, the body (bounded), the answer out, and a
watch for the client leaving, which cancels the request and with it the upstream call.

These endpoints carry almost all of the traffic, so they skip the framework's per-request work
(signature model, dependency injection, response objects): this module does only what they need.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import Any, cast

from litestar.types import Message, Receive, Scope, Send

from app.errors import GatewayError, InvalidRequestError, RequestTooLargeError, error_body
from app.proxy import Reply, new_request_id

__all__ = [
    "ClientGone", "DisconnectWatch", "client_path", "read_body", "request_headers", "send_error", "send_reply",
]

_SMALL_BODY = 64 * 1024
"""Bodies up to this size are read in pieces and joined (most are one piece); larger ones into one buffer."""
_JSON = b"application/json"


class ClientGone(Exception):
    """The client disconnected before its request was read."""


def client_path(scope: Scope) -> str:
    """The path as the client sent it (a mounted route sees only the rest of it in ``path``)."""
    raw = scope.get("raw_path")
    return raw.decode("latin-1").split("?", 1)[0] if raw else str(scope["path"])


def request_headers(scope: Scope) -> dict[str, str]:
    """Header names lower-cased (ASGI servers already send them so), values as latin-1 text; a repeated
    header keeps its first value."""
    headers: dict[str, str] = {}
    for name, value in scope["headers"]:
        key = name.decode("latin-1")
        if key not in headers:
            headers[key] = value.decode("latin-1")
    return headers


async def read_body(receive: Receive, headers: Mapping[str, str], limit: int) -> bytes | bytearray:
    """The whole body, refused with 413 as soon as it is known to be over ``limit``.

    With a declared length the bytes go straight into one buffer of that size, so a body costs its
    own size in memory while it is read, not twice (the pieces, then their join)."""
    declared = headers.get("content-length")
    expected = None
    if declared is not None:
        if not declared.isdigit():
            raise InvalidRequestError("The Content-Length header is not a number.")
        expected = int(declared)
        if expected > limit:
            raise _too_large(limit)
    if expected is not None and expected > _SMALL_BODY:
        return await _read_into(receive, bytearray(expected))
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        body: bytes = message.get("body", b"")  # type: ignore[assignment]
        if body:
            size += len(body)
            if size > limit:
                raise _too_large(limit)
            chunks.append(body)
        if not message.get("more_body", False):
            break
    if len(chunks) == 1:
        return chunks[0]
    return b"".join(chunks)


async def _read_into(receive: Receive, buffer: bytearray) -> bytearray:
    view, filled = memoryview(buffer), 0
    try:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientGone
            body: bytes = message.get("body", b"")  # type: ignore[assignment]
            if body:
                end = filled + len(body)
                if end > len(buffer):  # the server checks lengths; this never passes what was declared
                    raise InvalidRequestError("The body is longer than its Content-Length.")
                view[filled:end] = body
                filled = end
            if not message.get("more_body", False):
                break
    finally:
        view.release()
    if filled != len(buffer):
        raise InvalidRequestError("The body is shorter than its Content-Length.")
    return buffer


def _too_large(limit: int) -> RequestTooLargeError:
    return RequestTooLargeError(f"The request body is larger than this gateway accepts ({limit} bytes).")


def _encode_headers(headers: Mapping[str, str]) -> list[tuple[bytes, bytes]]:
    return [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]


async def send_reply(send: Send, reply: Reply, watch: DisconnectWatch | None = None) -> None:
    """Write a relayed answer: whole, or event by event as the stream yields them. The watch stops just
    before the last message (a server reports the end of a response as a disconnect)."""
    headers = _encode_headers(reply.headers)
    if reply.stream is None:
        media = _JSON if reply.media_type == "application/json" else reply.media_type.encode()
        headers.append((b"content-type", media))
        headers.append((b"content-length", str(len(reply.body)).encode()))
        await send(cast("Message", {"type": "http.response.start", "status": reply.status, "headers": headers}))
        if watch is not None:
            watch.stop()
        await send(cast("Message", {"type": "http.response.body", "body": reply.body}))
        return
    headers.append((b"content-type", b"text/event-stream; charset=utf-8"))
    headers.append((b"x-accel-buffering", b"no"))  # a proxy in front (nginx) must not hold events back
    await send(cast("Message", {"type": "http.response.start", "status": reply.status, "headers": headers}))
    async for chunk in reply.stream:
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    if watch is not None:
        watch.stop()
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def send_error(send: Send, exc: GatewayError, headers: Mapping[str, str] | None = None,
                     request_id: str | None = None) -> None:
    """The OpenAI envelope for an error, with its headers, the key's, and a request id."""
    merged: dict[str, Any] = {**(headers or {}), **exc.headers}
    merged.setdefault("x-request-id", request_id or new_request_id())
    body = error_body(exc.message, exc.type, exc.code, exc.param)
    encoded = _encode_headers(merged)
    encoded.append((b"content-type", _JSON))
    encoded.append((b"content-length", str(len(body)).encode()))
    await send(cast("Message", {"type": "http.response.start", "status": exc.status_code, "headers": encoded}))
    await send(cast("Message", {"type": "http.response.body", "body": body}))


class DisconnectWatch:
    """Cancels the request's task when its client disconnects, until :meth:`stop`.

    One small task per request: without it, a client that leaves mid-answer would leave its
    upstream call (and the account's capacity) running to the end.
    """

    __slots__ = ("_task", "_watcher")

    def __init__(self, receive: Receive) -> None:
        self._task = asyncio.current_task()
        self._watcher = asyncio.get_running_loop().create_task(self._watch(receive))

    async def _watch(self, receive: Receive) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                if self._task is not None:
                    self._task.cancel()
                return

    def stop(self) -> None:
        self._watcher.cancel()

    def gone(self) -> bool:
        """Whether the client has left (the watch fired)."""
        return self._watcher.done() and not self._watcher.cancelled()

    async def close(self) -> None:
        self._watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._watcher
