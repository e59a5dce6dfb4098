"""Server-sent events from an upstream: cut into whole events, with a bound, and read for what matters.

:class:`EventSplitter` turns the bytes of a stream into whole events, however they were
split on the wire (``\\r\\n`` and ``\\r`` line ends become ``\\n``), and refuses to hold
an unfinished event past a size bound. :class:`StreamScanner` reads the whole events for
what the gateway needs: whether the stream really ended (an event whose data is
``[DONE]``, or whose type is ``response.completed``, and not merely text that says so),
the usage it reported, and the response id. Only events that may hold one of those are
parsed; the rest pass through as bytes.
"""

from __future__ import annotations

import msgspec

from app.proxy._usage import Usage

__all__ = ["EventSplitter", "EventTooLarge", "StreamScanner", "parse_event"]

_FINAL_RESPONSES = frozenset({"response.completed", "response.failed", "response.incomplete", "error"})
_RESPONSE_MARKS = (b"response.completed", b"response.failed", b"response.incomplete", b"error")


class EventTooLarge(Exception):
    """An upstream sent more than the bound without ending an event."""


class EventSplitter:
    __slots__ = ("_buf", "_cr", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._buf = bytearray()
        self._cr = False

    def feed(self, data: bytes) -> bytes:
        """The whole events completed by ``data`` (``b""`` when none); raises :class:`EventTooLarge`."""
        if self._cr:  # the previous chunk ended in "\r", already turned into "\n"
            self._cr = False
            if data[:1] == b"\n":
                data = data[1:]
        if b"\r" in data:
            self._cr = data.endswith(b"\r")
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        buf = self._buf
        if not buf and data.endswith(b"\n\n"):
            return data  # the common case: the chunk holds whole events and nothing else
        start = max(0, len(buf) - 1)
        buf += data
        cut = buf.rfind(b"\n\n", start)
        if cut < 0:
            if len(buf) > self.limit:
                raise EventTooLarge(f"an upstream event grew past {self.limit} bytes without ending")
            return b""
        cut += 2
        ready = bytes(buf[:cut])
        del buf[:cut]
        if len(buf) > self.limit:
            raise EventTooLarge(f"an upstream event grew past {self.limit} bytes without ending")
        return ready

    def leftover(self) -> bytes:
        """An unfinished last event (the stream ended without its blank line)."""
        rest = bytes(self._buf)
        self._buf.clear()
        return rest


def parse_event(event: bytes) -> tuple[str | None, bytes]:
    """The ``event:`` name (None when absent) and the data (its lines joined), per the SSE format."""
    name: str | None = None
    data: list[bytes] = []
    for line in event.split(b"\n"):
        if line.startswith(b"data:"):
            value = line[5:]
            data.append(value[1:] if value[:1] == b" " else value)
        elif line.startswith(b"event:"):
            value = line[6:]
            name = (value[1:] if value[:1] == b" " else value).decode("utf-8", "replace")
    return name, b"\n".join(data)


class _Typed(msgspec.Struct):
    type: str = ""


class _ResponseRef(msgspec.Struct):
    id: str = ""


class _Envelope(msgspec.Struct):
    type: str = ""
    response: _ResponseRef | None = None


_typed = msgspec.json.Decoder(_Typed).decode
_envelope = msgspec.json.Decoder(_Envelope).decode
_decode = msgspec.json.Decoder().decode


class StreamScanner:
    """Reads one stream's whole events as they pass; see the module docstring."""

    __slots__ = ("drop_usage_chunk", "endpoint", "events", "failed", "final", "response_id", "usage")

    def __init__(self, endpoint: str, *, drop_usage_chunk: bool = False) -> None:
        self.endpoint = endpoint
        self.drop_usage_chunk = drop_usage_chunk
        self.usage: Usage | None = None
        self.final = False
        self.failed = False
        """The upstream ended the stream with an error event of its own."""
        self.events = 0
        self.response_id: str | None = None

    def scan(self, ready: bytes) -> bytes:
        """Read whole events; returns what to pass on (an injected usage-only chunk left out)."""
        self.events += ready.count(b"\n\n")
        if self.endpoint == "responses":
            self._responses(ready)
        elif self.endpoint == "chat_completions":
            self._chat(ready)
        if b'"usage"' in ready:
            self._usage(ready)
        if self.drop_usage_chunk and b'"usage":{' in ready and b'"choices":[]' in ready:
            kept = [e for e in ready.split(b"\n\n") if not (b'"usage":{' in e and b'"choices":[]' in e)]
            ready = b"\n\n".join(kept)
        return ready

    def _chat(self, ready: bytes) -> None:
        if b"[DONE]" in ready:
            for event in ready.split(b"\n\n"):
                if b"[DONE]" in event and parse_event(event)[1].strip() == b"[DONE]":
                    self.final = True
        if b'"error"' in ready and not self.final:
            for event in ready.split(b"\n\n"):
                if b'"error"' in event and _is_error_envelope(parse_event(event)[1]):
                    self.failed = self.final = True

    def _responses(self, ready: bytes) -> None:
        wants_id = self.response_id is None and b'"response"' in ready
        if not wants_id and not any(mark in ready for mark in _RESPONSE_MARKS):
            return
        for event in ready.split(b"\n\n"):
            if not event:
                continue
            name, data = parse_event(event)
            kind = name
            if wants_id and b'"response"' in data:
                try:
                    envelope = _envelope(data)
                except (msgspec.DecodeError, RecursionError):
                    envelope = None
                if envelope is not None:
                    kind = kind or envelope.type
                    if envelope.response is not None and envelope.response.id:
                        self.response_id = envelope.response.id
                        wants_id = False
            if kind is None and any(mark in data for mark in _RESPONSE_MARKS):
                try:
                    kind = _typed(data).type
                except (msgspec.DecodeError, RecursionError):
                    kind = None
            if kind in _FINAL_RESPONSES:
                self.final = True
                if kind in ("response.failed", "error"):
                    self.failed = True

    def _usage(self, ready: bytes) -> None:
        if b'"usage":{' not in ready and b'"usage": {' not in ready:
            return
        for event in ready.split(b"\n\n"):
            if b'"usage"' not in event:
                continue
            data = parse_event(event)[1]
            try:
                payload = _decode(data)
            except (msgspec.DecodeError, RecursionError):
                continue
            if not isinstance(payload, dict):
                continue
            usage = payload.get("usage")
            response = payload.get("response")
            if usage is None and isinstance(response, dict):
                usage = response.get("usage")
            found = Usage.from_payload(usage)
            if found is not None:
                self.usage = found


def _is_error_envelope(data: bytes) -> bool:
    try:
        payload = _decode(data)
    except (msgspec.DecodeError, RecursionError):
        return False
    return isinstance(payload, dict) and isinstance(payload.get("error"), dict)
