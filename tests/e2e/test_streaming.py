"""What only a real socket shows: events paced as they arrive, clients that leave, bytes that lie."""

from __future__ import annotations

import json
import socket
import time

from app.fake_upstream import hang
from tests.support import wait_for

CHAT = [{"role": "user", "content": "hello there"}]


def test_stream_chunks_reach_the_client_as_they_are_produced(make_gateway) -> None:  # type: ignore[no-untyped-def]
    gateway = make_gateway(upstreams={"acct-1": {}}, fake_options={"chunks": 6, "interval": 0.3})
    arrivals = []
    for chunk in gateway.client().chat.completions.create(model="gpt-5", messages=CHAT, stream=True):
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.monotonic())
    # Paced upstream events arrive paced: nothing was buffered until the end. (They are produced over 1.8 s;
    # relayed as they come they arrive over about as long, buffered to the end within a moment.)
    assert len(arrivals) == 7
    assert arrivals[-1] - arrivals[0] > 0.5


def test_a_client_that_disconnects_mid_stream_stops_the_upstream_within_a_second(make_gateway) -> None:  # type: ignore[no-untyped-def]
    gateway = make_gateway(upstreams={"acct-1": {"max_concurrency": 1}}, fake_options={"chunks": 200, "interval": 0.05})
    fake = gateway.fakes["acct-1"]
    stream = gateway.client().chat.completions.create(model="gpt-5", messages=CHAT, stream=True)
    next(iter(stream))
    assert fake.do(lambda: fake.fake.in_flight) == 1
    stream.close()
    closed = time.monotonic()
    wait_for(lambda: fake.do(lambda: fake.fake.in_flight) == 0, timeout=1.0, what="the upstream request to end")
    assert time.monotonic() - closed < 1.0
    assert fake.do(lambda: fake.fake.cancelled) == 1
    # The account allows one request at a time: it must be free again, not held by the abandoned stream.
    assert gateway.client().chat.completions.create(model="gpt-5", messages=CHAT).choices


def test_a_client_that_leaves_before_the_first_token_stops_the_upstream(make_gateway) -> None:  # type: ignore[no-untyped-def]
    gateway = make_gateway(upstreams={"acct-1": {}})
    fake = gateway.fakes["acct-1"]
    fake.do(fake.fake.script, hang())
    body = json.dumps({"model": "gpt-5", "messages": CHAT, "stream": True}).encode()
    with socket.create_connection(("127.0.0.1", gateway.server.port)) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     + f"Authorization: Bearer {gateway.keys['alice']}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                     + body)
        wait_for(lambda: fake.do(lambda: fake.fake.in_flight) == 1, what="the upstream to receive the request")
    wait_for(lambda: fake.do(lambda: fake.fake.in_flight) == 0, timeout=1.0, what="the upstream request to end")


def _raw(port: int, payload: bytes, *, close_after_send: bool = False) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(payload)
        if close_after_send:
            return b""
        chunks = []
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                chunks.append(data)
                if b"\r\n\r\n" in b"".join(chunks) and b"}" in data:
                    break
        except TimeoutError:
            pass
        return b"".join(chunks)


def test_lying_lengths_and_broken_headers_never_reach_an_upstream(make_gateway) -> None:  # type: ignore[no-untyped-def]
    gateway = make_gateway(upstreams={"acct-1": {}})
    port, token = gateway.server.port, gateway.keys["alice"]
    body = json.dumps({"model": "gpt-5", "messages": CHAT}).encode()
    head = f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
    head += "Content-Type: application/json\r\n"

    short = _raw(port, (head + "Content-Length: 10\r\nConnection: close\r\n\r\n").encode() + body)
    assert short.startswith(b"HTTP/1.1 400") and b"invalid_request_error" in short  # 10 bytes are not JSON

    _raw(port, (head + f"Content-Length: {len(body) + 500}\r\n\r\n").encode() + body, close_after_send=True)

    crlf = _raw(port, (head + "X-Evil: a\rb\r\nContent-Length: 2\r\n\r\n{}").encode())
    assert crlf.startswith(b"HTTP/1.1 400")

    assert gateway.client().chat.completions.create(model="gpt-5", messages=CHAT).choices  # still serving
    assert len(gateway.fakes["acct-1"].requests) == 1
