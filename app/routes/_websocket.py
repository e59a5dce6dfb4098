"""Responses over WebSocket (as Codex speaks it), bridged to upstreams over HTTP/SSE.

The handshake is authenticated like any request (a bad key gets its 401 or 403 before any upgrade).
Then each text frame ``{"type": "response.create", ...request body...}`` is one turn: the same checks,
quotas, usage row, metrics and access-log line (``transport=ws``) as a ``POST /v1/responses``, relayed
over HTTP to a pool account, its events sent back one per text frame. One socket carries many turns.

What the socket adds to HTTP, as Codex 0.169 uses it:

- A ``generate: false`` frame warms the socket up: it is answered at once (``response.created`` and
  ``response.completed``, no upstream call, nothing billed), and its input is remembered.
- A turn may name the socket's previous response in ``previous_response_id`` and send only the new input.
  Upstreams are called over HTTP with ``store: false``, where that id means nothing, so the bridge rebuilds
  the whole input from what this socket sent and received. An id from elsewhere is passed on (the
  conversation then goes to the account that made it, as over HTTP).
- Errors are frames Codex acts on: ``{"type": "error", "status": N, "error": {...}, "headers": {...}}``
  (without ``status`` Codex ignores an error and waits). A 429 says when to retry in ``headers``, or
  nothing when waiting cannot help soon, and Codex stops.
- ``response.interrupt`` ends the turn under way with ``response.incomplete`` (reason ``interrupted``).
- Closing the socket cancels the turn under way, and with it the upstream call, at once.

The key is looked up again at every turn, so a key revoked or disabled mid-session stops within the
sync interval, as everywhere else.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Any, cast

import msgspec
from litestar.datastructures import State
from litestar.types import Message, Receive, Scope, Send

from app.access import authenticate, codex_fatal, is_codex, rejection_error, resolve_model
from app.errors import AuthenticationError, GatewayError, InvalidRequestError, UpstreamError
from app.proxy import new_request_id
from app.routes._asgi import request_headers
from keys import AuthRejected, KeyRecord, Rejection

__all__ = ["serve_websocket"]

_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode
_TERMINAL = frozenset({"response.completed", "response.failed", "response.incomplete"})
_KEPT_RESPONSES = 4
"""Responses of this socket remembered for ``previous_response_id`` (a turn continues the last one)."""


class _Head(msgspec.Struct):
    type: str = ""


_head = msgspec.json.Decoder(_Head).decode


class _Interrupted(Exception):
    pass


async def serve_websocket(scope: Scope, receive: Receive, send: Send) -> None:
    from app.routes._responses import deny

    state: State = scope["app"].state
    headers = request_headers(scope)
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    try:
        key = await authenticate(headers, state.key_cache)
    except GatewayError as exc:
        body = msgspec.json.encode({"error": {"message": exc.message, "type": exc.type, "param": exc.param,
                                              "code": exc.code}})
        await deny(send, exc.status_code, body, exc.headers)
        return
    await send(cast("Message", {"type": "websocket.accept",
                                "headers": [(b"x-request-id", new_request_id().encode())]}))
    await _Socket(state, key, headers, send).run(receive)


class _Socket:
    def __init__(self, state: State, key: KeyRecord, headers: dict[str, str], send: Send) -> None:
        self.state = state
        self.key = key
        self.headers = headers
        self.codex = is_codex(headers)
        self._send = send
        self.inbox: asyncio.Queue[str | None] = asyncio.Queue()
        self.gone = False
        self.turn: asyncio.Task[None] | None = None
        self.turn_response: str | None = None
        self.interrupted: str | None = None
        self.history: OrderedDict[str, tuple[list[Any], list[Any]]] = OrderedDict()
        """Response id -> (its whole input, its output items), for the turns that continue it."""

    async def run(self, receive: Receive) -> None:
        reader = asyncio.create_task(self._read(receive))
        try:
            while True:
                text = await self.inbox.get()
                if text is None:
                    return
                self.turn = asyncio.create_task(self._frame(text))
                try:
                    await self.turn
                except asyncio.CancelledError:
                    current = asyncio.current_task()
                    if self.gone or (current is not None and current.cancelling()):
                        raise
                    await self._interrupted()
                finally:
                    self.turn = None
        except asyncio.CancelledError:
            if not self.gone:
                raise
        finally:
            reader.cancel()
            if self.turn is not None:
                self.turn.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self.turn
            if not self.gone:
                with contextlib.suppress(Exception):
                    await self._send(cast("Message", {"type": "websocket.close", "code": 1000}))

    async def _read(self, receive: Receive) -> None:
        """Frames in, as they come, even during a turn: a close cancels the turn, an interrupt ends it."""
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                self.gone = True
                if self.turn is not None:
                    self.turn.cancel()  # the upstream call stops now, and the turn is accounted for
                await self.inbox.put(None)
                return
            if message["type"] != "websocket.receive":
                continue
            text = message.get("text")
            if text is None:
                text = (message.get("bytes") or b"").decode("utf-8", "replace")
            if self._is_interrupt(text):
                continue
            await self.inbox.put(text)

    def _is_interrupt(self, text: str) -> bool:
        if '"response.interrupt"' not in text:
            return False
        try:
            frame = _decode(text)
        except (msgspec.DecodeError, RecursionError):
            return False
        if not isinstance(frame, dict) or frame.get("type") != "response.interrupt":
            return False
        if self.turn is not None and not self.turn.done():
            self.interrupted = str(frame.get("response_id") or self.turn_response or "")
            self.turn.cancel()
        return True

    async def _interrupted(self) -> None:
        response_id = self.interrupted or self.turn_response or ""
        self.interrupted = None
        await self._emit({"type": "response.incomplete", "response": {
            "id": response_id, "object": "response", "status": "incomplete",
            "incomplete_details": {"reason": "interrupted"}, "output": [], "end_turn": False}})

    async def _emit(self, event: dict[str, Any] | bytes) -> None:
        if self.gone:
            return
        text = (event if isinstance(event, bytes) else _encode(event)).decode()
        try:
            await self._send(cast("Message", {"type": "websocket.send", "text": text}))
        except Exception:  # the client went away while we wrote: the reader will see the close
            self.gone = True

    async def _error(self, exc: GatewayError) -> None:
        if self.codex:
            exc = codex_fatal(exc)
        await self._emit({"type": "error", "status": exc.status_code,
                          "error": {"type": exc.type, "code": exc.code, "message": exc.message, "param": exc.param},
                          "headers": {k: v for k, v in exc.headers.items() if k.lower() != "x-request-id"}})

    # -- one turn ---------------------------------------------------------------------------------

    async def _frame(self, text: str) -> None:
        try:
            frame = _decode(text)
        except (msgspec.DecodeError, RecursionError):
            await self._error(InvalidRequestError("A WebSocket frame must be a JSON object."))
            return
        if not isinstance(frame, dict):
            await self._error(InvalidRequestError("A WebSocket frame must be a JSON object."))
            return
        if frame.pop("type", None) != "response.create":
            return  # frame types this bridge does not know (response.processed, ...) ask nothing of it
        try:
            key = self._current_key()
            if frame.pop("generate", None) is False:
                await self._warm_up(key, frame)
                return
            await self._turn(key, frame)
        except GatewayError as exc:
            await self._error(exc)

    def _current_key(self) -> KeyRecord:
        record: KeyRecord | None = self.state.key_cache.get(self.key.id)
        if record is None:
            raise AuthenticationError("This API key is no longer valid (revoked or rotated).")
        if record.status(time.time()) != "active":
            raise rejection_error(AuthRejected(
                Rejection.EXPIRED if record.status(time.time()) == "expired" else Rejection.DISABLED, record))
        self.key = record
        return record

    async def _warm_up(self, key: KeyRecord, frame: dict[str, Any]) -> None:
        """``generate: false``: nothing to generate; remember the input so the first turn can build on it."""
        model = frame.get("model")
        if not isinstance(model, str) or not model:
            raise InvalidRequestError("You must provide a model parameter.", param="model")
        resolve_model(self.state.catalog.catalog, key, model)
        response_id = "resp_warmup_" + secrets.token_hex(12)
        shell = {"id": response_id, "object": "response", "created_at": int(time.time()), "model": model,
                 "output": [], "usage": {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}}
        await self._emit({"type": "response.created", "response": {**shell, "status": "in_progress"}})
        await self._emit({"type": "response.completed", "response": {**shell, "status": "completed"}})
        self._keep(response_id, _items(frame.get("input")), [])

    async def _turn(self, key: KeyRecord, frame: dict[str, Any]) -> None:
        state = self.state
        previous = frame.get("previous_response_id")
        new_input = _items(frame.get("input"))
        whole = new_input
        if isinstance(previous, str) and previous in self.history:
            before, output = self.history[previous]
            whole = [*before, *output, *new_input]
            frame["input"] = whole
            del frame["previous_response_id"]
        frame["stream"] = True
        key_headers = await state.quota.take_request(key)
        reply = await state.proxy.handle(key, "responses", _encode(frame), self.headers, key_headers,
                                         transport="ws")
        if reply.stream is None:  # the upstream refused the request (4xx): its envelope, as an error frame
            await self._upstream_refusal(reply.status, reply.body or b"", reply.headers)
            return
        stream = cast("AsyncIterator[bytes]", reply.stream)
        ended = False
        collected: list[Any] = []
        try:
            async for chunk in stream:
                for data in _payloads(chunk):
                    kind = _kind(data)
                    if kind == "response.created" and self.turn_response is None:
                        self.turn_response = _response_id(data)
                    elif kind == "response.output_item.done":
                        collected.append(_decode(data).get("item"))
                    elif kind == "response.completed":
                        self._completed(data, whole, collected)
                    ended = ended or kind in _TERMINAL or kind == "error"
                    await self._emit(_with_status(data) if kind == "error" else data)
        finally:
            self.turn_response = None
            await stream.aclose()  # type: ignore[attr-defined]
        if not ended:
            await self._error(UpstreamError("The upstream ended the stream before the response was complete."))

    def _completed(self, data: bytes, whole: list[Any], collected: list[Any]) -> None:
        event = _decode(data)
        response = event.get("response") if isinstance(event, dict) else None
        if not isinstance(response, dict) or not isinstance(response.get("id"), str):
            return
        output = response.get("output")
        self._keep(response["id"], whole, output if isinstance(output, list) and output else collected)

    def _keep(self, response_id: str, whole: list[Any], output: list[Any]) -> None:
        self.history[response_id] = (whole, [item for item in output if isinstance(item, dict)])
        while len(self.history) > _KEPT_RESPONSES:
            self.history.popitem(last=False)

    async def _upstream_refusal(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        try:
            envelope = _decode(body)
        except (msgspec.DecodeError, RecursionError):
            envelope = None
        error = envelope.get("error") if isinstance(envelope, dict) else None
        if not isinstance(error, dict):
            error = {"type": "invalid_request_error", "code": "upstream_rejected",
                     "message": f"The upstream refused the request (status {status}).", "param": None}
        kept = {k: v for k, v in headers.items() if k.lower().startswith(("retry-after", "x-ratelimit"))}
        await self._emit({"type": "error", "status": status, "error": error, "headers": kept})


def _items(value: object) -> list[Any]:
    """A Responses ``input`` as a list of items (a string is one user message)."""
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    return list(value) if isinstance(value, list) else []


def _payloads(chunk: bytes) -> list[bytes]:
    """The JSON of each server-sent event in a chunk of whole events."""
    out = []
    for event in chunk.replace(b"\r\n", b"\n").split(b"\n\n"):
        lines = [line[5:].lstrip(b" ") for line in event.split(b"\n") if line.startswith(b"data:")]
        if lines:
            data = b"\n".join(lines)
            if data != b"[DONE]":
                out.append(data)
    return out


def _kind(data: bytes) -> str:
    try:
        return _head(data).type
    except (msgspec.DecodeError, msgspec.ValidationError):
        return ""


def _response_id(data: bytes) -> str | None:
    event = _decode(data)
    response = event.get("response") if isinstance(event, dict) else None
    found = response.get("id") if isinstance(response, dict) else None
    return found if isinstance(found, str) else None


def _with_status(data: bytes) -> bytes:
    """An error event as Codex acts on it over a socket: with the status an HTTP answer would have had."""
    event = _decode(data)
    if not isinstance(event, dict) or "status" in event:
        return data
    code = event.get("code") if isinstance(event.get("code"), str) else None
    inner = event.get("error") if isinstance(event.get("error"), dict) else None
    if inner is not None and code is None:
        code = inner.get("code")
    status = 504 if code == "upstream_timeout" else 502
    error = inner or {"type": "server_error", "code": code, "message": event.get("message"),
                      "param": event.get("param")}
    return _encode({"type": "error", "status": status, "error": error, "headers": {}})
