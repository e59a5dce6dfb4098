"""The upstream HTTP client: pooled connections per upstream, and the one place its errors are mapped.

Everything above this module sees :class:`UpstreamResponse` and three exceptions
(:class:`ConnectFailed`, :class:`ReadFailed`, :class:`UpstreamTimedOut`); nothing above it
imports aiohttp. :class:`MockTransport` answers from a function instead, so the relay's retry
logic can be tested without sockets (as httpx's ``MockTransport`` does).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import aiohttp
from aiohttp.http_exceptions import HttpProcessingError

from app._types import Body
from app.settings import Settings

__all__ = [
    "AiohttpTransport",
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


@contextlib.contextmanager
def map_errors(what: str) -> Iterator[None]:
    """aiohttp's exceptions as this module's, in exactly one place (as httpx's map_httpcore_exceptions)."""
    try:
        yield
    except TimeoutError:
        raise UpstreamTimedOut(f"{what}: no answer in time") from None
    except aiohttp.ClientConnectorError as exc:
        raise ConnectFailed(f"{what}: cannot connect ({exc.__class__.__name__})") from None
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
        raise ConnectFailed(f"{what}: connection lost ({exc.__class__.__name__})") from None
    except (aiohttp.ClientError, HttpProcessingError, ValueError) as exc:
        # ValueError: aiohttp refuses some malformed answers (a bad header) with it.
        raise ConnectFailed(f"{what}: unusable answer ({exc.__class__.__name__})") from None


class _AiohttpResponse:
    __slots__ = ("_response", "headers", "status")

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self.status = response.status
        self.headers: Mapping[str, str] = response.headers

    async def read(self) -> bytes:
        try:
            return await self._response.read()
        except (aiohttp.ClientError, HttpProcessingError) as exc:
            raise ReadFailed(f"the connection broke mid-answer ({exc.__class__.__name__})") from None

    async def chunk(self) -> bytes:
        content = self._response.content
        try:
            return await content.readany()
        except (aiohttp.ClientError, HttpProcessingError) as exc:
            raise ReadFailed(f"the connection broke mid-stream ({exc.__class__.__name__})",
                             _buffered(content)) from None

    def release(self) -> None:
        if self._response.content.is_eof():
            self._response.release()
        else:
            self._response.close()

    def close(self) -> None:
        self._response.close()


def _buffered(content: aiohttp.StreamReader) -> bytes:
    """What aiohttp received before a connection failure.

    aiohttp's public readers raise as soon as a failure is recorded, even with whole events still
    buffered (they arrive in the same loop turn as the close), and it offers no public way to read
    them. This is the one read of its private buffer; tests/unit/test_proxy/test_transport.py pins
    the behaviour, so an aiohttp that changes it fails there, not in production.
    """
    return b"".join(getattr(content, "_buffer", ()))


class AiohttpTransport:
    """One pooled aiohttp session per upstream and revision: an edit (say, of its concurrency) gets a
    fresh pool, and requests still on the old one finish first."""

    def __init__(self, settings: Settings) -> None:
        self._sessions: dict[str, tuple[int, aiohttp.ClientSession]] = {}
        # No sock_read: it would also cap the wait for headers. The relay bounds the first byte and
        # each gap of a stream itself.
        self._timeout = aiohttp.ClientTimeout(total=settings.total_timeout, connect=settings.connect_timeout)
        self._pending: set[asyncio.Task[None]] = set()

    def _session(self, upstream_id: str, revision: int, max_connections: int | None) -> aiohttp.ClientSession:
        held = self._sessions.get(upstream_id)
        if held is not None and held[0] == revision and not held[1].closed:
            return held[1]
        if held is not None:
            self._close_later(held[1])
        connector = aiohttp.TCPConnector(limit=max_connections or 0, keepalive_timeout=60, ttl_dns_cache=300)
        session = aiohttp.ClientSession(
            connector=connector, timeout=self._timeout, auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),  # an upstream's cookies must never pass from one user to another
            headers={"accept-encoding": "identity"},  # bodies pass through as they are: never compressed ones
        )
        self._sessions[upstream_id] = (revision, session)
        return session

    def _close_later(self, session: aiohttp.ClientSession) -> None:
        task = asyncio.get_running_loop().create_task(session.close())
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def send(self, upstream_id: str, revision: int, url: str, headers: Mapping[str, str], body: Body,
                   *, method: str = "POST", max_connections: int | None = None) -> UpstreamResponse:
        session = self._session(upstream_id, revision, max_connections)
        with map_errors("upstream"):
            response = await session.request(method, url, data=body or None, headers=headers, allow_redirects=False)
        return _AiohttpResponse(response)

    @staticmethod
    async def get_once(url: str, headers: Mapping[str, str], wait: float) -> tuple[int, bytes]:
        """A one-off GET (``upstreams test``), outside the pools."""
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=wait),
                                         cookie_jar=aiohttp.DummyCookieJar()) as session:
            with map_errors("upstream"):
                async with session.get(url, headers=headers, allow_redirects=False) as response:
                    return response.status, await response.read()

    async def prune(self, live: Iterable[str]) -> None:
        """Close the connections of upstreams that left the pool."""
        keep = set(live)
        for upstream_id in [i for i in self._sessions if i not in keep]:
            await self._sessions.pop(upstream_id)[1].close()

    async def close(self) -> None:
        for _, session in self._sessions.values():
            await session.close()
        self._sessions.clear()
        if self._pending:
            await asyncio.wait(self._pending, timeout=5)


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

