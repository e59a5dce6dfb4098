"""Redis or PostgreSQL going away mid-run: clear answers, never a hang, and recovery when they return.

Each test runs its own Redis (a real redis-server on a free port) or reaches PostgreSQL through
a TCP relay it can cut, so an outage here touches nothing else on the machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from app._db import upgrade
from app.settings import Settings
from keys import Policy, Quotas
from tests.e2e.test_replicas import PG_SERVER, _pg, _reachable
from tests.support import FakeUpstreamThread, ServerProcess, add_upstreams, create_key, free_port, wait_for
from tests.support.redis import RedisServer, redis_server_fixture  # noqa: F401 (the redis_server fixture)

pytestmark = pytest.mark.slow


class TcpRelay:
    """Forwards 127.0.0.1:port to a target; ``cut()`` drops every connection and refuses new ones."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self.frozen = False
        """While frozen, connections are accepted and bytes read, but nothing is passed on: a host that hangs."""

    def open(self) -> TcpRelay:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            if self.frozen:
                with self._lock:
                    self._conns.append(client)
                threading.Thread(target=self._swallow, args=(client,), daemon=True).start()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _swallow(source: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while source.recv(65536):
                pass

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                if not self.frozen:
                    sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(OSError):  # shutdown wakes the accepting thread; close alone would not
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        with self._lock:
            for conn in self._conns:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
                conn.close()
            self._conns = []


def _chat(base_url: str, token: str) -> tuple[int, dict[str, Any], float]:
    body = json.dumps({"model": "gpt-5", "messages": [{"role": "user", "content": "hi"}]}).encode()
    request = urllib.request.Request(
        base_url + "/v1/chat/completions", data=body, method="POST",
        headers={"authorization": f"Bearer {token}", "content-type": "application/json"},
    )
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, json.loads(resp.read()), time.monotonic() - started
    except urllib.error.HTTPError as err:
        return err.code, {**json.loads(err.read()), "retry-after": err.headers.get("retry-after")}, (
            time.monotonic() - started)


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Any]:
    started: list[Any] = []

    def build(settings: Settings, env: dict[str, str] | None = None) -> tuple[ServerProcess, str]:
        fake = FakeUpstreamThread(name="acct-1", api_key="sk-acct-1-0123456789")
        started.append(fake)
        add_upstreams(settings, [{"name": "acct-1", "base_url": fake.base_url, "models": "gpt-5*",
                                  "credential": "sk-acct-1-0123456789"}])
        token = create_key(settings, "team", Policy(allowed_models=("gpt-5*",), quotas=Quotas(rpm=1000, tpm=10**6)))[1]
        server = ServerProcess(settings, env=env or {}).start()
        started.append(server)
        return server, token

    yield build
    for item in reversed(started):
        item.stop()


def test_quota_store_outage_is_a_quick_503_and_service_resumes_when_redis_returns(
    gateway: Any, redis_server: RedisServer, make_settings: Callable[..., Settings]
) -> None:
    server, token = gateway(make_settings(limits_url=redis_server.url))
    assert _chat(server.base_url, token)[0] == 200

    redis_server.stop()
    for _ in range(3):
        status, body, seconds = _chat(server.base_url, token)
        assert (status, body["error"]["code"]) == (503, "quota_store_unavailable")
        assert body["retry-after"] == "1"
        assert seconds < 3.0  # a clear answer, not a hang

    redis_server.start()
    time.sleep(1.1)  # past the moment of fast failures that follows an outage
    assert _chat(server.base_url, token)[0] == 200  # the first request after Redis is back: no stale connection


def test_a_redis_that_hangs_gives_quick_503s_under_load_and_service_resumes(
    gateway: Any, redis_server: RedisServer, make_settings: Callable[..., Settings]
) -> None:
    relay = TcpRelay(("127.0.0.1", redis_server.port)).open()
    try:
        server, token = gateway(make_settings(limits_url=f"redis://127.0.0.1:{relay.port}/0"))
        assert _chat(server.base_url, token)[0] == 200
        relay.frozen = True  # connections stay open, nothing answers: a partition, a paused host
        with ThreadPoolExecutor(40) as pool:
            results = list(pool.map(lambda _: _chat(server.base_url, token), range(40)))
        assert {status for status, _, _ in results} == {503}
        assert max(seconds for _, _, seconds in results) < 3.0  # each fails within its own deadline, no queue
        relay.frozen = False
        wait_for(lambda: _chat(server.base_url, token)[0] == 200, timeout=10, what="service after Redis answered")
    finally:
        relay.cut()


def test_with_fail_open_chosen_requests_are_served_while_redis_is_away(
    gateway: Any, redis_server: RedisServer, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(limits_url=redis_server.url, quota_fail_open=True)
    server, token = gateway(settings)
    redis_server.stop()
    status, _, seconds = _chat(server.base_url, token)
    assert status == 200
    assert seconds < 5.0
    assert "serving without quotas" in server.log()


def test_postgres_outage_keeps_serving_cached_keys_and_loses_no_usage(gateway: Any, tmp_path: Path) -> None:
    problem = _reachable(lambda: _pg("SELECT 1"))
    if problem is not None:
        pytest.skip(f"needs PostgreSQL ({problem})")
    host_port = PG_SERVER.rsplit("@", 1)[1]
    host, port = host_port.split(":")
    relay = TcpRelay((host, int(port))).open()
    database = f"poolgate_outage_{uuid.uuid4().hex[:12]}"
    asyncio.run(_pg(f'CREATE DATABASE "{database}"'))
    try:
        user = PG_SERVER.split("://", 1)[1].split("@", 1)[0]
        settings = Settings(data_dir=tmp_path / "data", single_instance=True,
                            database_url=f"postgresql+asyncpg://{user}@127.0.0.1:{relay.port}/{database}")
        upgrade(settings)
        server, token = gateway(settings)
        assert _chat(server.base_url, token)[0] == 200

        relay.cut()
        during = [_chat(server.base_url, token) for _ in range(5)]
        assert [status for status, _, _ in during] == [200] * 5  # keys and upstreams are served from memory
        assert max(seconds for _, _, seconds in during) < 5.0
        ready = server.http.get("/readyz")
        assert ready.status == 503
        usage = server.http.get("/v1/usage", token)
        assert usage.status == 503
        assert usage.json()["error"]["code"] == "database_unavailable"
        # The finished rows of the outage meet at least one failed write before the database returns.
        wait_for(lambda: "writing usage failed" in server.log(), timeout=15, what="a usage write failing")

        relay.open()
        wait_for(lambda: server.http.get("/readyz").status == 200, timeout=15, what="ready after the database returned")

        def recorded() -> bool:
            reply = server.http.get("/v1/usage", token)
            return reply.status == 200 and reply.json()["today"]["requests"] == 6

        wait_for(recorded, timeout=15, what="usage of the requests made during the outage")
    finally:
        relay.cut()
        asyncio.run(_pg(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
