"""Changes made with the CLI reach every serving process within 2 seconds."""

from __future__ import annotations

import time
from collections.abc import Callable

from app.settings import Settings
from keys import Policy
from tests.support import ServerProcess, create_key, poolgate, wait_for_each


def test_revocation_and_policy_changes_reach_two_servers_within_two_seconds(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(sync_interval=0.5)  # the shipped default
    _, token = create_key(settings, "shared", Policy(allowed_models=("gpt-5*",)))
    servers = [ServerProcess(settings).start(), ServerProcess(settings).start()]
    try:
        for server in servers:
            assert server.http.get("/v1/models/gpt-5", token).status == 200

        # Both servers are asked at once, so the time one takes to answer is not taken from the other's 2 s.
        result = poolgate(settings, "keys", "update", "shared", "--models", "o3")
        assert result.code == 0, result.stderr
        wait_for_each(servers, lambda s: s.http.get("/v1/models/gpt-5", token).status == 403,
                      deadline=time.monotonic() + 2.0, what=lambda s: f"the policy change on port {s.port}")

        result = poolgate(settings, "keys", "revoke", "shared")
        assert result.code == 0, result.stderr
        wait_for_each(servers, lambda s: s.http.get("/v1/models", token).status == 401,
                      deadline=time.monotonic() + 2.0, what=lambda s: f"the revocation on port {s.port}")
    finally:
        for server in servers:
            server.stop()
