"""Token usage as upstreams report it, read from a JSON body or from the last events of a stream.

Streams are scanned without parsing every event: only an event whose bytes contain
``"usage"`` is decoded (the final chat chunk, or ``response.completed``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

__all__ = ["StreamUsage", "Usage", "usage_from_body"]

_decode = msgspec.json.Decoder().decode


@dataclass(slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0

    @classmethod
    def from_payload(cls, usage: Any) -> Usage | None:
        if not isinstance(usage, dict):
            return None

        def num(*path: str) -> int:
            value: Any = usage
            for part in path:
                value = value.get(part) if isinstance(value, dict) else None
            return int(value) if isinstance(value, int | float) else 0

        if "input_tokens" in usage or "output_tokens" in usage:  # Responses API
            return cls(num("input_tokens"), num("output_tokens"),
                       num("input_tokens_details", "cached_tokens"), num("output_tokens_details", "reasoning_tokens"))
        return cls(num("prompt_tokens"), num("completion_tokens"),  # chat completions, embeddings
                   num("prompt_tokens_details", "cached_tokens"), num("completion_tokens_details", "reasoning_tokens"))


def usage_from_body(body: bytes) -> Usage | None:
    if b'"usage"' not in body:
        return None
    try:
        data = _decode(body)
    except msgspec.DecodeError:
        return None
    return Usage.from_payload(data.get("usage")) if isinstance(data, dict) else None


class StreamUsage:
    """Fed the complete events of an SSE stream as they pass; holds the usage once an event reports it.

    The relay only ever passes whole events, however the bytes were split on the wire, so
    an event is never seen in halves. Only events with a ``"usage":{`` are decoded
    (chat chunks carry ``"usage":null`` until the last one).
    """

    __slots__ = ("usage",)

    def __init__(self) -> None:
        self.usage: Usage | None = None

    def feed(self, events: bytes) -> None:
        if b'"usage":{' not in events and b'"usage": {' not in events:
            return
        for event in events.split(b"\n\n"):
            if b'"usage"' in event:
                self._read(event)

    def _read(self, event: bytes) -> None:
        for line in event.split(b"\n"):
            if not line.startswith(b"data:"):
                continue
            try:
                payload = _decode(line[5:].strip())
            except msgspec.DecodeError:
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
