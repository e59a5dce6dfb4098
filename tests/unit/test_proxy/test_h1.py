"""The relay's HTTP/1.1 upstream client against a scripted server on 127.0.0.1: connections kept alive and
reused, a stale one replaced, the upstream's concurrency limit held, cut and overlong answers reported."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest

from app.proxy import H1Transport
from app.proxy._transport import ConnectFailed, ReadFailed, UpstreamResponse
from app.settings import Settings

Answer = Callable[[bytes, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[bool]]  # -> keep it open?


@dataclass
class Upstream:
    url: str
    heads: list[bytes] = field(default_factory=list)
    connections: int = 0
    open_now: int = 0
    most_open: int = 0
    closed_by_client: asyncio.Event = field(default_factory=asyncio.Event)


def ok(body: bytes = b'{"ok":true}') -> Answer:
    async def answer(_: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                     b"content-length: %d\r\n\r\n%s" % (len(body), body))
        return True
    return answer


@asynccontextmanager
async def upstream(answer: Answer) -> AsyncIterator[Upstream]:
    state = Upstream(url="")

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state.connections += 1
        state.open_now += 1
        state.most_open = max(state.most_open, state.open_now)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                await reader.readexactly(length)
                state.heads.append(head)
                keep = await answer(head, reader, writer)
                await writer.drain()
                if not keep:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            state.closed_by_client.set()
        finally:
            state.open_now -= 1
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    state.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1/chat/completions"
    try:
        yield state
    finally:
        server.close()


async def read_into(answer: UpstreamResponse, received: list[bytes]) -> None:
    while data := await answer.chunk():
        received.append(data)


@pytest.fixture
async def transport() -> AsyncIterator[H1Transport]:
    client = H1Transport(Settings(connect_timeout=1.0, total_timeout=0.5))
    yield client
    await client.close()


async def test_answers_are_read_whole_and_one_connection_serves_them_all(transport: H1Transport) -> None:
    async with upstream(ok()) as up:
        for _ in range(5):
            answer = await transport.send("a", 1, up.url, {"authorization": "Bearer sk-up"}, b'{"model":"m"}')
            assert answer.status == 200 and answer.headers["content-type"] == "application/json"
            assert await answer.read() == b'{"ok":true}'
            answer.release()
    assert up.connections == 1
    first = up.heads[0].decode()
    assert first.startswith("POST /v1/chat/completions HTTP/1.1\r\n")
    assert f"host: 127.0.0.1:{up.url.split(':')[2].split('/')[0]}" in first
    assert "authorization: Bearer sk-up" in first and "accept-encoding: identity" in first


async def test_a_header_that_would_break_the_head_is_left_out(transport: H1Transport) -> None:
    async with upstream(ok()) as up:
        answer = await transport.send("a", 1, up.url, {"x-evil": "1\r\nx-injected: yes", "x-fine": "1"}, b"")
        answer.release()
    assert b"x-injected" not in up.heads[0] and b"x-fine: 1" in up.heads[0]


async def test_a_kept_connection_the_upstream_closed_is_replaced_without_an_error(transport: H1Transport) -> None:
    async def once(_: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        await ok()(_, reader, writer)
        return False  # answers with keep-alive, then hangs up: the client learns it only on reuse

    async with upstream(once) as up:
        for _ in range(3):
            answer = await transport.send("a", 1, up.url, {}, b"{}")
            assert await answer.read() == b'{"ok":true}'
            answer.release()
            await asyncio.sleep(0.05)
    assert up.connections == 3


async def test_chunked_streams_arrive_as_they_are_sent(transport: H1Transport) -> None:
    go_on = asyncio.Event()

    async def stream(_: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
                     b"8\r\ndata: 1\n\r\n")
        await writer.drain()
        await go_on.wait()
        writer.write(b"8\r\ndata: 2\n\r\n0\r\n\r\n")
        return True

    async with upstream(stream) as up:
        answer = await transport.send("a", 1, up.url, {}, b"{}")
        assert await answer.chunk() == b"data: 1\n"  # before the rest exists
        go_on.set()
        assert await answer.chunk() == b"data: 2\n"
        assert await answer.chunk() == b""
        answer.release()


async def test_the_upstreams_concurrency_limit_holds_requests_back(transport: H1Transport) -> None:
    async def slow(_: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(0.05)
        return await ok()(_, reader, writer)

    async with upstream(slow) as up:
        async def one() -> bytes:
            answer = await transport.send("a", 1, up.url, {}, b"{}", max_connections=2)
            try:
                return await answer.read()
            finally:
                answer.release()

        assert await asyncio.gather(*(one() for _ in range(6))) == [b'{"ok":true}'] * 6
    assert up.most_open == 2 and len(up.heads) == 6


async def test_an_answer_cut_mid_body_reports_what_arrived(transport: H1Transport) -> None:
    async def cut(_: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await writer.drain()
        await asyncio.sleep(0.05)
        return False

    async with upstream(cut) as up:
        answer = await transport.send("a", 1, up.url, {}, b"{}")
        received: list[bytes] = []
        with pytest.raises(ReadFailed) as failed:
            await read_into(answer, received)
        answer.close()
    assert b"".join(received) + failed.value.received == b"hello"


async def test_an_answer_past_the_total_timeout_is_cut_and_its_connection_closed(transport: H1Transport) -> None:
    up_closed = asyncio.Event()

    async def stall(_: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        await writer.drain()
        if await reader.read() == b"":  # nothing more comes until the client hangs up
            up_closed.set()
        return False

    async with upstream(stall) as up:
        answer = await transport.send("a", 1, up.url, {}, b"{}")
        with pytest.raises(ReadFailed, match="TOTAL_TIMEOUT"):
            await answer.chunk()
        answer.close()
        await asyncio.wait_for(up_closed.wait(), 2)


async def test_an_abandoned_answer_closes_its_connection_so_the_upstream_stops(transport: H1Transport) -> None:
    async def endless(_: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        while True:
            writer.write(b"8\r\ndata: x\n\r\n")
            await writer.drain()
            await asyncio.sleep(0.01)

    async with upstream(endless) as up:
        answer = await transport.send("a", 1, up.url, {}, b"{}")
        assert (await answer.chunk()).startswith(b"data: x")
        answer.close()
        await asyncio.wait_for(up.closed_by_client.wait(), 2)
        answer = await transport.send("a", 1, up.url, {}, b"{}")  # a fresh connection, not the abandoned one
        answer.close()
    assert up.connections == 2


async def test_an_upstream_that_refuses_connections_is_a_connect_failure(transport: H1Transport) -> None:
    async with upstream(ok()) as up:
        url = up.url
    with pytest.raises(ConnectFailed, match="cannot connect"):
        await transport.send("a", 1, url, {}, b"{}")
