"""Token usage as upstreams report it, read from a JSON body (streams: see ``_sse``)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import msgspec

__all__ = ["Usage", "read_answer", "usage_from_body"]


MAX_TOKENS = 2**31 - 1


class _Answer(msgspec.Struct):
    """The two fields read from a complete answer; everything else is skipped, never built."""

    id: Any = None
    usage: Any = None


_answer = msgspec.json.Decoder(_Answer).decode


@dataclass(slots=True)
class Usage:
    """Tokens of one answer; ``cached`` is part of ``input``, ``reasoning`` part of ``output``."""

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
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                return 0
            return min(max(int(value), 0), MAX_TOKENS)  # an upstream reporting nonsense stays in range

        if "input_tokens" in usage or "output_tokens" in usage:  # Responses API
            return cls(num("input_tokens"), num("output_tokens"),
                       num("input_tokens_details", "cached_tokens"), num("output_tokens_details", "reasoning_tokens"))
        return cls(num("prompt_tokens"), num("completion_tokens"),  # chat completions, embeddings
                   num("prompt_tokens_details", "cached_tokens"), num("completion_tokens_details", "reasoning_tokens"))


def read_answer(body: bytes) -> tuple[Usage | None, str | None]:
    """The usage a complete JSON answer reports, and its id (a Responses answer's, for its owner)."""
    if b'"usage"' not in body and b'"id"' not in body:
        return None, None
    try:
        answer = _answer(body)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return None, None
    return Usage.from_payload(answer.usage), answer.id if isinstance(answer.id, str) else None


def usage_from_body(body: bytes) -> Usage | None:
    return read_answer(body)[0]
