"""The stream relay when the connection breaks: what had arrived is passed on whole, then one error event.
(The upstream client hands what it received before the break along with ``ReadFailed``; its own tests show
it does.)"""
from __future__ import annotations

import asyncio
from types import SimpleNamespace
from unittest import mock

from app._redact import Redactor
from app.proxy import Exchange, MockResponse, ReadFailed
from app.proxy._stream import StreamRelay


def event(n: int) -> bytes:
    return b'data: {"id":"chatcmpl-1","choices":[{"index":0,"delta":{"content":"t%d"}}]}\n\n' % n


async def relay_through(fed: bytes) -> tuple[list[bytes], Exchange, mock.Mock]:
    """After the first event, the connection breaks with `fed` received but not yet read."""
    response = MockResponse(200, {"content-type": "text/event-stream"}, chunks=[ReadFailed("cut", fed)])
    lease = mock.Mock(state=SimpleNamespace(redactor=Redactor(None)))
    exchange = Exchange(key_id="k", model="gpt-5", endpoint="chat_completions", stream=True)
    relay = StreamRelay(response, lease, "chat_completions", exchange, drop_usage_chunk=False, idle_timeout=5,
                        max_event=2**20)
    out = [chunk async for chunk in relay.events(event(1))]
    return out, exchange, lease


def test_events_that_arrived_before_the_connection_broke_still_reach_the_client() -> None:
    out, exchange, lease = asyncio.run(relay_through(event(2) + event(3)))
    events = [e for e in b"".join(out).split(b"\n\n") if e.strip()]
    assert events[:3] == [event(n).strip() for n in (1, 2, 3)]
    assert len(events) == 4 and b'"code":"upstream_error"' in events[3]
    assert exchange.error == "upstream_error" and exchange.events == 3
    lease.failed.assert_called_once()
    lease.release.assert_called_once()


def test_half_an_event_buffered_at_the_failure_is_dropped_so_the_error_frame_stands_alone() -> None:
    half = b'data: {"id":"chatcmpl-1","choi'
    out, _, _ = asyncio.run(relay_through(event(2) + half))
    events = [e for e in b"".join(out).split(b"\n\n") if e.strip()]
    assert events[:2] == [event(1).strip(), event(2).strip()]
    assert len(events) == 3 and events[2].startswith(b"data: {\"error\"")
    assert b"[DONE]" not in b"".join(out)
