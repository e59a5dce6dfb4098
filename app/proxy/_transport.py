"""What the relay asks of an upstream client: the ``Transport`` protocol, the answer it gives, and its errors.

Everything above the client sees :class:`UpstreamResponse` and three exceptions
(:class:`ConnectFailed`, :class:`ReadFailed`, :class:`UpstreamTimedOut`). The client in service is
``app.proxy._h1.H1Transport``; :class:`MockTransport` answers from a function instead, so the relay's
retry logic can be tested without sockets (as httpx's ``MockTransport`` does).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from app._types import Body

__all__ = [
    "ConnectFailed",
    "MockResponse",
    "MockTransport",
    "ReadFailed",
    "Sent",
    "Transport",
    "TransportError",
    "UpstreamResponse",
    "UpstreamTimedOut",
]


class TransportError(Exception):
    """The upstream could not be reached or stopped answering; the message never quotes a secret."""


class ConnectFailed(TransportError):
    """No answer at all: refused, reset, DNS, TLS, or the connection dropped before the headers."""


class UpstreamTimedOut(TransportError):
    """The upstream was silent for longer than a timeout allows."""


class ReadFailed(TransportError):
    """The connection broke mid-body; ``received`` is what had arrived before it broke."""

    def __init__(self, message: str, received: bytes = b"") -> None:
        super().__init__(message)
        self.received = received


class UpstreamResponse(Protocol):
    """An upstream's answer: status and headers now, the body read in chunks or whole."""

    status: int
    headers: Mapping[str, str]

    async def read(self) -> bytes: ...

    async def chunk(self) -> bytes:
        """The next bytes of the body as they arrive; ``b""`` at its end."""
        ...

    def release(self) -> None:
        """The body was read to its end: the connection goes back to the pool."""
        ...

    def close(self) -> None:
        """Abandon the answer: the connection closes, so the upstream stops at once."""
        ...


class Transport(Protocol):
    async def send(self, upstream_id: str, revision: int, url: str, headers: Mapping[str, str], body: Body,
                   *, method: str = "POST", max_connections: int | None = None) -> UpstreamResponse: ...

    async def prune(self, live: Iterable[str]) -> None: ...

    async def close(self) -> None: ...


# -- a transport for tests ------------------------------------------------------------------------

@dataclass
class MockResponse:
    """A scripted answer: a status, headers, and the body as chunks (or an exception among them)."""

    status: int = 200
    headers: Mapping[str, str] = field(default_factory=lambda: {"content-type": "application/json"})
    chunks: list[bytes | BaseException] = field(default_factory=list)
    released: bool = False
    closed: bool = False

    async def read(self) -> bytes:
        parts = []
        while part := await self.chunk():
            parts.append(part)
        return b"".join(parts)

    async def chunk(self) -> bytes:
        if not self.chunks:
            return b""
        part = self.chunks.pop(0)
        if isinstance(part, BaseException):
            raise part
        return part

    def release(self) -> None:
        self.released = True

    def close(self) -> None:
        self.closed = True


@dataclass
class Sent:
    upstream_id: str
    url: str
    headers: dict[str, str]
    body: Body
    method: str = "POST"


class MockTransport:
    """Answers every request from ``handler(sent) -> MockResponse``; an exception it raises is raised
    by :meth:`send` as it is (raise :class:`ConnectFailed` to play a dead upstream)."""

    def __init__(self, handler: Callable[[Sent], MockResponse | Awaitable[MockResponse]]) -> None:
        self.handler = handler
        self.sent: list[Sent] = []

    async def send(self, upstream_id: str, revision: int, url: str, headers: Mapping[str, str], body: Body,
                   *, method: str = "POST", max_connections: int | None = None) -> UpstreamResponse:
        sent = Sent(upstream_id, url, dict(headers), body, method)
        self.sent.append(sent)
        answer = self.handler(sent)
        if not isinstance(answer, MockResponse):
            answer = await answer
        return answer

    async def prune(self, live: Iterable[str]) -> None:
        return None

    async def close(self) -> None:
        return None

