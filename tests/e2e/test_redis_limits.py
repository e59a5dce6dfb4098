"""Request quotas on Redis: the same key, limited across two servers sharing one Redis."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from app.settings import Settings
from keys import Policy, Quotas
from tests.support import ServerProcess, create_key, within_one_minute
from tests.support.redis import machine_redis_up

pytestmark = pytest.mark.skipif(not machine_redis_up(), reason="no Redis on 127.0.0.1:6379")


def test_a_keys_request_quota_holds_across_two_servers_on_redis(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(limits_url="redis://127.0.0.1:6379/0", sync_interval=0.1)
    _, token = create_key(settings, "shared", Policy(allowed_models=("*",), quotas=Quotas(rpm=4)))
    servers = [ServerProcess(settings).start(), ServerProcess(settings).start()]
    try:
        with within_one_minute():  # rpm counts the clock's minute: across its end a fifth request would fit
            statuses = [servers[i % 2].http.get("/v1/models", token).status for i in range(6)]
        assert statuses == [200, 200, 200, 200, 429, 429]
    finally:
        for server in servers:
            server.stop()
