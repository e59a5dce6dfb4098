"""Changes made with the CLI reach every serving process within 2 seconds."""

from __future__ import annotations

import time
from collections.abc import Callable

from app.server import create_app
from app.settings import Settings
from keys import Policy
from tests.support import Http, add_upstreams, create_key, poolgate, wait_for_each
from tests.support.gateway import LiveServer


def test_revocation_and_policy_changes_reach_two_servers_within_two_seconds(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(sync_interval=0.5)  # the shipped default
    _, token = create_key(settings, "shared", Policy(allowed_models=("gpt-5*",)))
    add_upstreams(settings, [{"name": "any", "base_url": "http://127.0.0.1:9/v1", "models": "*"}])
    # Two servers, each with its own caches polling the one database, as two processes would.
    servers = [LiveServer(create_app(settings), settings).start(), LiveServer(create_app(settings), settings).start()]
    try:
        for server in servers:
            assert Http(server.base_url).get("/v1/models/gpt-5", token).status == 200

        # Both servers are asked at once, so the time one takes to answer is not taken from the other's 2 s.
        result = poolgate(settings, "keys", "update", "shared", "--models", "o3")
        assert result.code == 0, result.stderr
        wait_for_each(servers, lambda s: Http(s.base_url).get("/v1/models/gpt-5", token).status == 403,
                      deadline=time.monotonic() + 2.0, what=lambda s: f"the policy change on port {s.port}")

        result = poolgate(settings, "keys", "revoke", "shared")
        assert result.code == 0, result.stderr
        wait_for_each(servers, lambda s: Http(s.base_url).get("/v1/models", token).status == 401,
                      deadline=time.monotonic() + 2.0, what=lambda s: f"the revocation on port {s.port}")
    finally:
        for server in servers:
            server.stop()
