"""Changes made with the CLI reach every serving process within 2 seconds."""

from __future__ import annotations

from collections.abc import Callable

from app.settings import Settings
from keys import Policy
from tests.support import ServerProcess, create_key, poolgate, wait_for


def test_revocation_and_policy_changes_reach_two_servers_within_two_seconds(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(sync_interval=0.5)  # the shipped default
    _, token = create_key(settings, "shared", Policy(allowed_models=("gpt-5*",)))
    servers = [ServerProcess(settings).start(), ServerProcess(settings).start()]
    try:
        for server in servers:
            assert server.http.get("/v1/models/gpt-5", token).status == 200

        result = poolgate(settings, "keys", "update", "shared", "--models", "o3")
        assert result.code == 0, result.stderr
        wait_for(lambda: all(s.http.get("/v1/models/gpt-5", token).status == 403 for s in servers),
                 timeout=2.0, what="the policy change on both servers")

        result = poolgate(settings, "keys", "revoke", "shared")
        assert result.code == 0, result.stderr
        wait_for(lambda: all(s.http.get("/v1/models", token).status == 401 for s in servers),
                 timeout=2.0, what="the revocation on both servers")
    finally:
        for server in servers:
            server.stop()
