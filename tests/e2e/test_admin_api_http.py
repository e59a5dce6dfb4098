"""The admin API over real HTTP: an admin made with the CLI issues a key, the key works, the key is revoked."""

from __future__ import annotations

from typing import Any

import httpx2

from tests.support import poolgate


def test_a_key_issued_and_revoked_over_http_works_then_stops(make_gateway: Any) -> None:
    gateway = make_gateway(upstreams={"acct-1": {}})
    made = poolgate(gateway.settings, "admins", "create", "root", "--role", "admin", "--json")
    assert made.code == 0, made.stderr
    admin = {"Authorization": f"Bearer {made.json()['token']}"}

    with httpx2.Client(base_url=gateway.server.base_url, timeout=10) as http:
        created = http.post("/admin/api/keys", headers=admin, json={"name": "bob", "allowed_models": ["gpt-5*"]})
        assert created.status_code == 201, created.text
        key = {"Authorization": f"Bearer {created.json()['key']}"}

        models = http.get("/v1/models", headers=key)
        assert models.status_code == 200
        assert {m["id"] for m in models.json()["data"]} >= {"gpt-5", "gpt-5-mini"}
        assert all(m["id"].startswith("gpt-5") for m in models.json()["data"])

        revoked = http.delete("/admin/api/keys/bob", headers=admin)
        assert revoked.status_code == 200 and revoked.json()["status"] == "revoked"
        refused = http.get("/v1/models", headers=key)
        assert refused.status_code == 401
        assert refused.json()["error"]["type"] == "authentication_error"
