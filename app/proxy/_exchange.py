"""What one relayed request did (filled in as it goes), and what to answer it with."""

from __future__ import annotations

import itertools
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from app.proxy._usage import Usage

__all__ = ["Exchange", "Reply", "new_request_id"]


_PROCESS = secrets.token_hex(6)
_NEXT = itertools.count(int.from_bytes(secrets.token_bytes(4), "big"))


def new_request_id() -> str:
    """``req_`` and 24 hex digits: this process's random half, then a counter (unique without a syscall)."""
    return f"req_{_PROCESS}{next(_NEXT) & 0xFFFFFFFFFFFF:012x}"


@dataclass(slots=True)
class Reply:
    """What to answer: a status, headers, and a whole body or a stream of whole events."""

    status: int
    headers: dict[str, str]
    body: bytes = b""
    stream: AsyncIterator[bytes] | None = None
    media_type: str = "application/json"


@dataclass(slots=True)
class Exchange:
    """What one request did, filled in as it goes; read by accounting and the access log."""

    key_id: str
    model: str
    endpoint: str
    stream: bool
    transport: str = "http"
    request_id: str = field(default_factory=new_request_id)
    upstream: str | None = None
    upstream_id: str | None = None
    status: int = 0
    attempts: int = 0
    usage: Usage | None = None
    started: float = field(default_factory=time.monotonic)
    started_wall: float = field(default_factory=time.time)
    first_byte: float | None = None
    ended: float | None = None
    error: str | None = None
    events: int = 0
    """Events relayed so far; estimates the output of a stream cut before it reported usage."""
    answered: bool = False
    """An upstream answered 2xx and it went to the client: only then may an estimate be billed."""
    response_id: str | None = None
    service_tier: str | None = None


