"""Exhaustion, over real sockets: slow and idle connections, too many of them, and big bodies.

Connections are raw sockets to uvicorn listening on 127.0.0.1 (no HTTP client would send half a head).
Memory is read from /proc for a server in a process of its own.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from keys import Policy

MiB = 1024 * 1024


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=15)


def read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (a timeout fails the test)."""
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


def read_response(sock: socket.socket) -> bytes:
    """One whole response with a Content-Length (head and body), leaving the connection open."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    length = int(head_of(data)["content-length"])
    while len(data.split(b"\r\n\r\n", 1)[1]) < length:
        data += sock.recv(65536)
    return data


def head_of(answer: bytes) -> dict[str, str]:
    lines = answer.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")[1:]
    return {name.strip().lower(): value.strip() for name, value in (line.split(":", 1) for line in lines)}


def test_a_half_sent_request_head_is_answered_408_and_closed(make_gateway: Any) -> None:
    gateway = make_gateway(head_timeout=1.0)
    with connect(gateway.server.port) as slow, connect(gateway.server.port) as trickle:
        _half_heads(slow, trickle)
    assert gateway.server.http.get("/healthz").status == 200  # the server itself is fine


def _half_heads(slow: socket.socket, trickle: socket.socket) -> None:
    slow.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: poolgate\r\n")
    try:
        for byte in b"GET /healthz HTTP/1.1\r\nHost: poolgate\r\n":  # a byte at a time: closed just the same
            trickle.sendall(bytes([byte]))
            time.sleep(0.1)
    except OSError:
        pass  # closed by the server while the head was still coming
    for sock in (slow, trickle):
        answer = read_all(sock)  # returns once the server has closed it
        assert answer.startswith(b"HTTP/1.1 408 ")
        assert head_of(answer)["x-request-id"].startswith("req_")
        assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "request_timeout"


def test_an_idle_keep_alive_connection_is_closed(make_gateway: Any) -> None:
    gateway = make_gateway(keepalive_timeout=1.0, head_timeout=30.0)
    with connect(gateway.server.port) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: poolgate\r\n\r\n")
        assert read_response(sock).startswith(b"HTTP/1.1 200 ")
        assert read_all(sock) == b""  # nothing more, then the server closes: it does not hold the socket for ever


def test_past_the_connection_cap_a_new_connection_gets_a_clear_503(make_gateway: Any) -> None:
    gateway = make_gateway(max_connections=5, head_timeout=30.0)
    with contextlib.ExitStack() as sockets:
        for _ in range(5):
            sockets.enter_context(connect(gateway.server.port))
        time.sleep(0.2)  # (the server has taken them all: accepting is the server's, not the client's, step)
        answer = read_all(sockets.enter_context(connect(gateway.server.port)))
    assert answer.startswith(b"HTTP/1.1 503 ")
    body = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    assert body["error"]["code"] == "too_many_connections"
    assert head_of(answer)["x-request-id"].startswith("req_")
    time.sleep(0.2)
    assert gateway.server.http.get("/healthz").status == 200  # places free again once they close


def _memory(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def _post(url: str, key: str, body: bytes) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method="POST", headers={
        "Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads memory from /proc")
def test_a_big_body_costs_at_most_twice_its_size_and_a_stream_holds_no_copy(make_gateway: Any) -> None:
    gateway = make_gateway(upstreams={"acct-1": {}}, process=True, max_body_bytes=64 * MiB, keys={
        "alice": Policy(allowed_models=("gpt-5",)), "other": Policy(allowed_models=("o3",))})
    pid = gateway.server.process.pid
    url = gateway.server.base_url + "/v1/responses"
    items = b",".join([b"{}"] * (16 * MiB // 3))
    refused = b'{"model":"gpt-5","input":[' + items + b"]}"
    size = len(refused)
    assert _post(url, gateway.keys["alice"], b'{"model":"gpt-5","input":"warm up"}')[0] == 200

    before = _memory(pid, "VmHWM")
    status, _ = _post(url, gateway.keys["other"], refused)  # read, decoded as far as needed, then refused
    assert status == 403
    refused_peak = _memory(pid, "VmHWM") - before
    assert refused_peak <= 2 * size, f"one {size / MiB:.0f} MiB body raised the peak by {refused_peak / MiB:.0f} MiB"

    fake = gateway.fakes["acct-1"]
    fake.do(fake.fake.configure, chunks=100, interval=0.05)  # streams that last about five seconds
    streamed = b'{"model":"gpt-5","stream":true,"input":[' + items + b"]}"
    before = _memory(pid, "VmRSS")
    answering = threading.Barrier(4, timeout=120)
    results: list[bytes] = []

    def stream() -> None:
        request = urllib.request.Request(url, data=streamed, method="POST", headers={
            "Authorization": f"Bearer {gateway.keys['alice']}", "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=120) as response:
            first = response.readline()  # the first event: the body has gone upstream
            answering.wait()
            results.append(first + response.read())

    threads = [threading.Thread(target=stream) for _ in range(3)]
    for thread in threads:
        thread.start()
    answering.wait()  # all three streams are under way
    held = _memory(pid, "VmRSS") - before
    for thread in threads:
        thread.join(timeout=120)
    assert len(results) == 3 and all(b"response.completed" in r for r in results)
    # No copy of a body stays for a stream's life (three held 1.4 GiB once), nor the pages it took.
    assert held <= 8 * MiB, f"three streams under way held {held / MiB:.0f} MiB"
