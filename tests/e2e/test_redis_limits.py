"""Request quotas on Redis: the same key, limited across two servers sharing one Redis."""

from __future__ import annotations

import socket
from collections.abc import Callable

import pytest

from app.settings import Settings
from keys import Policy, Quotas
from tests.support import ServerProcess, create_key

REDIS = ("127.0.0.1", 6379)


def _redis_up() -> bool:
    try:
        with socket.create_connection(REDIS, timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


pytestmark = pytest.mark.skipif(not _redis_up(), reason="no Redis on 127.0.0.1:6379")


def test_a_keys_request_quota_holds_across_two_servers_on_redis(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(limits_url="redis://127.0.0.1:6379/0", sync_interval=0.1)
    _, token = create_key(settings, "shared", Policy(allowed_models=("*",), quotas=Quotas(rpm=4)))
    servers = [ServerProcess(settings).start(), ServerProcess(settings).start()]
    try:
        statuses = [servers[i % 2].http.get("/v1/models", token).status for i in range(6)]
        assert statuses == [200, 200, 200, 200, 429, 429]
    finally:
        for server in servers:
            server.stop()
