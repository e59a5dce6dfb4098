"""Relaying one upstream stream to the client, event by event, and cleaning up exactly once however it ends.

Chunks are passed on up to their last complete event; a partial event waits for its end, so an
error frame can never be glued onto half an event. A stream that ends without its final event
(``[DONE]``, ``response.completed``) was cut: it ends with an error event rather than looking
complete. After the first byte nothing can be retried: an upstream failure becomes that error event.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from app.errors import GatewayError, UpstreamError, UpstreamTimeoutError, sse_error_frame
from app.pool import Lease
from app.proxy._exchange import Exchange
from app.proxy._sse import EventSplitter, EventTooLarge, StreamScanner
from app.proxy._transport import ReadFailed, UpstreamResponse, UpstreamTimedOut

__all__ = ["StreamRelay"]


class StreamRelay:
    def __init__(self, response: UpstreamResponse, lease: Lease, endpoint: str, exchange: Exchange, *,
                 drop_usage_chunk: bool, idle_timeout: float, max_event: int) -> None:
        self.response = response
        self.lease = lease
        self.endpoint = endpoint
        self.exchange = exchange
        self.idle_timeout = idle_timeout
        self.splitter = EventSplitter(max_event)
        self.scanner = StreamScanner(endpoint, drop_usage_chunk=drop_usage_chunk)
        self.scrub = lease.state.redactor.scrub
        self.complete = False

    async def events(self, first: bytes) -> AsyncIterator[bytes]:
        """Whole events as they arrive (each chunk one or more), then the error frame when it failed."""
        data, failure = first, None
        try:
            while True:
                if data:
                    out, failure = self._ingest(data, failure)
                    if out:
                        yield out
                if failure is not None:
                    yield self._error(failure)
                    return
                data, failure = await self._read()
                if failure is None and not data:  # the end of the upstream's body
                    out, failure = self._end()
                    if out:
                        yield out
                    if failure is not None:
                        yield self._error(failure)
                    return
        finally:
            self._close()

    def _ingest(self, data: bytes, failure: GatewayError | None) -> tuple[bytes, GatewayError | None]:
        try:
            ready = self.splitter.feed(data)
        except EventTooLarge as exc:
            self.lease.failed("sent an oversized event")
            return b"", UpstreamError(f"The upstream stream could not be relayed: {exc}.")
        return self._pass(ready), failure

    def _pass(self, ready: bytes) -> bytes:
        if not ready:
            return b""
        scanner, exchange = self.scanner, self.exchange
        out = scanner.scan(ready)
        exchange.events = scanner.events
        if scanner.response_id is not None:
            exchange.response_id = scanner.response_id
        return self.scrub(out) if out else b""

    async def _read(self) -> tuple[bytes, GatewayError | None]:
        try:
            async with asyncio.timeout(self.idle_timeout):
                return await self.response.chunk(), None
        except (TimeoutError, UpstreamTimedOut):
            self.lease.failed("stopped sending")
            return b"", UpstreamTimeoutError("The upstream stopped sending.")
        except ReadFailed as exc:
            self.lease.failed("broke mid-stream")
            # Events that arrived before the connection broke are still the client's.
            return exc.received, UpstreamError("The upstream connection failed mid-stream.")

    def _end(self) -> tuple[bytes, GatewayError | None]:
        self.complete = True
        rest = self.splitter.leftover()
        out = self._pass(rest + b"\n\n") if rest.strip() else b""  # a last event without its blank line
        if self.scanner.failed:
            self.exchange.error = "upstream_error"  # the upstream said so itself, in its own error event
            return out, None
        if not self.scanner.final:
            return out, UpstreamError("The upstream ended the stream before it was complete.")
        return out, None

    def _error(self, failure: GatewayError) -> bytes:
        self.exchange.error = failure.code
        return sse_error_frame(failure, self.endpoint)

    def _close(self) -> None:
        self.lease.release()
        if self.complete:
            self.response.release()  # the connection goes back to the pool
        else:
            self.response.close()  # cut short (the client left, or a failure): the upstream stops at once
        exchange, scanner = self.exchange, self.scanner
        exchange.usage = scanner.usage
        exchange.response_id = scanner.response_id or exchange.response_id
        exchange.ended = time.monotonic()
        if not scanner.final and exchange.error is None:
            exchange.error = "client_closed"  # the client left before the stream's end
