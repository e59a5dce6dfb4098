"""The admin API under /admin/api/: who may use it, keys, upstreams, usage, health, the audit log, the
OpenAPI document, and who may read /metrics.

In-process: the app on the test's loop, its real upstream client talking to fake upstreams on 127.0.0.1,
and the CLI run in this process against the same database.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import pytest

from app.admin import AdminStore, cli_actor
from app.fake_upstream import server_error
from app.server import Clock
from keys import Policy
from tests.support import CliResult, dump, poolgate, query

API = "/admin/api"
CHAT = [{"role": "user", "content": "hello there"}]
FAKE_KEY = "sk-acct-1-0123456789abcdef"
"""The credential the fake upstream acct-1 accepts (tests/support/gateway.py)."""
OTHER_KEY = "sk-live-7d6c5b4a39281706f5e4"
HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


# -- helpers ----------------------------------------------------------------------------------------------


async def admin_token(gateway: Any, name: str = "root", role: str = "admin") -> str:
    _, token = await AdminStore(gateway.state.engine).create(name, role)
    await gateway.sync()
    return token


async def send(client: httpx2.AsyncClient, method: str, path: str, token: str | None = None, body: Any = None,
               **params: str) -> httpx2.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return await client.request(method, API + path, headers=headers, json=body, params=params or None)


async def call(gateway: Any, method: str, path: str, token: str | None = None, body: Any = None,
               **params: str) -> httpx2.Response:
    return await send(gateway.client, method, path, token, body, **params)


def ok(response: httpx2.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    return response.json()


def refused(response: httpx2.Response, status: int, code: str) -> dict[str, Any]:
    """The OpenAI error envelope, with this status and code."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    assert body["error"]["code"] == code and body["error"]["message"], body
    error: dict[str, Any] = body["error"]
    return error


def admin_routes(app: Any) -> dict[str, set[str]]:
    """What the app serves under /admin/api/: path (``{ref}`` style, without the prefix) -> methods."""
    routes: dict[str, set[str]] = {}
    for route in app.routes:
        if route.path.startswith(API + "/"):
            path = re.sub(r"\{(\w+):[^}]+\}", r"{\1}", route.path.removeprefix(API))
            routes[path] = {m.lower() for m in getattr(route, "methods", ())} - {"options", "head"}
    return routes


def concrete(path: str, key: str = "alice", upstream: str = "acct-1") -> str:
    return path.replace("{ref}", key if path.startswith("/keys") else upstream)


@contextlib.asynccontextmanager
async def from_address(gateway: Any, host: str) -> AsyncIterator[httpx2.AsyncClient]:
    """A client of the same app whose requests come from another address."""
    transport = httpx2.ASGITransport(app=gateway.app, client=(host, 40000))
    async with httpx2.AsyncClient(transport=transport, base_url="http://poolgate", timeout=30) as client:
        yield client


async def cli(gateway: Any, *args: str, env: dict[str, str] | None = None) -> CliResult:
    """``poolgate ...`` on the gateway's database (on a thread, so the app keeps serving meanwhile)."""
    result = await asyncio.to_thread(poolgate, gateway.settings, *args, env=env)
    assert result.code == 0, result.stdout + result.stderr
    return result


def without(data: dict[str, Any], *fields: str) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k not in fields}


async def models_status(gateway: Any, key: str) -> int:
    return int((await gateway.client.get("/v1/models", headers={"Authorization": f"Bearer {key}"})).status_code)


# -- who may call it --------------------------------------------------------------------------------------


WRITE_BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("post", "/keys"): {"name": "mallory", "allowed_models": ["*"]},
    ("patch", "/keys/{ref}"): {"disabled": True},
    ("post", "/upstreams"): {"name": "acct-9", "base_url": "http://127.0.0.1:9/v1", "models": ["*"]},
    ("patch", "/upstreams/{ref}"): {"enabled": False},
}


async def test_a_viewer_reads_everything_and_changes_nothing(make_gateway: Any) -> None:
    gateway = await make_gateway(upstreams={"acct-1": {}})
    viewer = await admin_token(gateway, "watcher", "viewer")
    routes = admin_routes(gateway.app)
    reads = sorted(path for path, methods in routes.items() if "get" in methods)
    writes = sorted((method, path) for path, methods in routes.items() for method in methods if method != "get")
    assert {"/keys", "/keys/{ref}", "/upstreams", "/usage", "/health", "/audit"} <= set(reads)
    assert len(writes) >= 8, writes  # create, change, revoke and rotate keys; add, change, remove and test upstreams

    for path in reads:
        assert (await call(gateway, "GET", concrete(path), viewer)).status_code == 200, path
    keys_before = ok(await call(gateway, "GET", "/keys", viewer))
    upstreams_before = ok(await call(gateway, "GET", "/upstreams", viewer))

    for method, path in writes:  # bodies an admin's request would succeed with: the role alone refuses them
        answer = await call(gateway, method.upper(), concrete(path), viewer, WRITE_BODIES.get((method, path)))
        error = refused(answer, 403, "admin_role_required")
        assert error["type"] == "permission_error" and "viewer" in error["message"], (method, path)

    assert ok(await call(gateway, "GET", "/keys", viewer)) == keys_before
    assert ok(await call(gateway, "GET", "/upstreams", viewer)) == upstreams_before
    assert ok(await call(gateway, "GET", "/audit", viewer))["entries"] == []
    assert await models_status(gateway, gateway.keys["alice"]) == 200
    assert gateway.fakes["acct-1"].requests == []  # not even the upstream test probe went out
    me = ok(await call(gateway, "GET", "/me", viewer))
    assert (me["name"], me["role"]) == ("watcher", "viewer")


async def test_without_a_valid_admin_token_every_route_answers_401(make_gateway: Any) -> None:
    gateway = await make_gateway(upstreams={"acct-1": {}})
    root = await admin_token(gateway)
    store = AdminStore(gateway.state.engine)
    _, gone = await store.create("gone", "admin")
    await store.revoke("gone")
    await gateway.sync()
    public_id, secret = root.rsplit("_", 1)
    bad_tokens = {
        "no token": None,
        "not a token": "let-me-in",
        "wrong secret": f"{public_id}_{secret[::-1]}",
        "revoked admin": gone,
    }
    routes = admin_routes(gateway.app)
    n = 0
    for what, token in bad_tokens.items():
        for path, methods in sorted(routes.items()):
            for method in sorted(methods):
                if path == "/openapi.json":
                    continue
                n += 1  # each from an address of its own, so that the throttle does not answer instead
                async with from_address(gateway, f"10.0.{n // 250}.{n % 250 + 1}") as client:
                    answer = await send(client, method.upper(), concrete(path), token,
                                        WRITE_BODIES.get((method, path)))
                error = refused(answer, 401, "invalid_admin_token")
                assert error["type"] == "authentication_error", (what, method, path)
                if token:
                    assert token not in answer.text
    assert (await call(gateway, "GET", "/me", root)).status_code == 200
    assert len(ok(await call(gateway, "GET", "/keys", root))) == 1  # nothing was made along the way


async def test_a_client_key_is_refused_and_an_admin_token_is_no_client_key(make_gateway: Any) -> None:
    gateway = await make_gateway(upstreams={"acct-1": {}})
    root = await admin_token(gateway)
    key = gateway.keys["alice"]
    refused(await call(gateway, "GET", "/keys", key), 403, "admin_token_required")
    refused(await call(gateway, "POST", "/keys", key, {"name": "mallory", "allowed_models": ["*"]}), 403,
            "admin_token_required")
    refused(await call(gateway, "DELETE", "/keys/alice", key), 403, "admin_token_required")
    assert await models_status(gateway, key) == 200  # the key was not revoked by itself
    assert await models_status(gateway, root) == 401  # and an admin is never a key holder


async def test_repeated_bad_tokens_from_one_address_are_throttled(make_gateway: Any) -> None:
    shift = [0.0]
    gateway = await make_gateway(upstreams={"acct-1": {}},
                                 clock=Clock(lambda: time.monotonic() + shift[0], time.time))
    root = await admin_token(gateway)
    for _ in range(10):
        refused(await call(gateway, "GET", "/keys", "pga_guess_guessguessguess"), 401, "invalid_admin_token")
    answer = await call(gateway, "GET", "/keys", "pga_guess_guessguessguess")
    error = refused(answer, 429, "rate_limit_exceeded")
    assert error["type"] == "rate_limit_error"
    assert 1 <= int(answer.headers["retry-after"]) <= 60
    # The address is refused even with a good token until its failures leave the minute...
    refused(await call(gateway, "GET", "/keys", root), 429, "rate_limit_exceeded")
    refused(await gateway.client.get("/metrics", headers=gateway.auth(root)), 429, "rate_limit_exceeded")
    # ...while another address is not.
    async with from_address(gateway, "192.0.2.7") as elsewhere:
        assert (await send(elsewhere, "GET", "/keys", root)).status_code == 200
    assert await models_status(gateway, gateway.keys["alice"]) == 200  # the client API is not throttled by it

    shift[0] += 61
    assert (await call(gateway, "GET", "/keys", root)).status_code == 200


# -- keys -------------------------------------------------------------------------------------------------


async def test_keys_round_trip_in_the_shapes_the_cli_prints(make_gateway: Any) -> None:
    gateway = await make_gateway(upstreams={"acct-1": {}})
    root = await admin_token(gateway)
    spec = {"name": "bob", "allowed_models": ["gpt-5*", "o3"], "allowed_reasoning_efforts": ["low", "medium"],
            "tier": 1, "quotas": {"rpm": 60, "tpd": 100_000, "budget_usd": 5, "budget_period": "month"}}
    made = ok(await call(gateway, "POST", "/keys", root, spec), 201)
    secret = made.pop("key")
    assert secret.startswith(f"pg_{made['id']}_")

    shown = (await cli(gateway, "keys", "show", "bob", "--json")).json()
    assert made == shown  # the same fields, the same values, as `poolgate keys show --json`
    assert (made["status"], made["allowed_models"], made["tier"]) == ("active", ["gpt-5*", "o3"], 1)
    assert made["quotas"] == {"rpm": 60, "rpd": None, "tpm": None, "tpd": 100_000, "max_concurrency": None,
                              "budget_usd": 5.0, "budget_period": "month"}
    by_name = await call(gateway, "GET", "/keys/bob", root)
    by_id = await call(gateway, "GET", f"/keys/{made['id']}", root)
    listing = await call(gateway, "GET", "/keys", root)
    assert ok(by_name) == ok(by_id) == shown
    assert [k["name"] for k in ok(listing)] == ["alice", "bob"]
    for answer in (by_name, by_id, listing):  # the secret is answered once, at creation
        assert secret.rsplit("_", 1)[1] not in answer.text and '"key"' not in answer.text

    patched = ok(await call(gateway, "PATCH", "/keys/bob", root, {"quotas": {"rpm": 30}}))
    assert without(patched, "updated_at") == without({**shown, "quotas": {**shown["quotas"], "rpm": 30}},
                                                     "updated_at")
    renamed = ok(await call(gateway, "PATCH", f"/keys/{made['id']}", root, {"name": "robert", "disabled": True}))
    assert (renamed["name"], renamed["disabled"], renamed["status"]) == ("robert", True, "disabled")
    assert without(renamed, "name", "disabled", "status", "updated_at") == without(patched, "name", "disabled",
                                                                                    "status", "updated_at")
    refused(await call(gateway, "GET", "/keys/bob", root), 404, "not_found")
    assert ok(await call(gateway, "GET", "/keys/robert", root))["id"] == made["id"]

    revoked = ok(await call(gateway, "DELETE", "/keys/robert", root))
    assert revoked["status"] == "revoked" and revoked["revoked_at"] is not None
    assert [k["name"] for k in ok(await call(gateway, "GET", "/keys", root))] == ["alice"]
    every = ok(await call(gateway, "GET", "/keys", root, include_revoked="true"))
    assert [(k["name"], k["status"]) for k in every] == [("alice", "active"), ("robert", "revoked")]
    refused(await call(gateway, "DELETE", "/keys/robert", root), 409, "conflict")
    refused(await call(gateway, "PATCH", "/keys/robert", root, {"disabled": False}), 409, "conflict")


async def test_a_key_changed_through_the_api_works_or_stops_at_once(make_gateway: Any) -> None:
    # The background sync is slowed to once a minute: only the API's own refresh can make "at once" true.
    gateway = await make_gateway(upstreams={"acct-1": {}}, sync_interval=60)
    root = await admin_token(gateway)
    made = ok(await call(gateway, "POST", "/keys", root, {"name": "carol", "allowed_models": ["gpt-5*"]}), 201)
    first = made["key"]
    models = await gateway.client.get("/v1/models", headers=gateway.auth(first))
    assert models.status_code == 200
    assert {m["id"] for m in models.json()["data"]} and all(m["id"].startswith("gpt-5") for m in models.json()["data"])
    chat = await gateway.client.post("/v1/chat/completions", json={"model": "gpt-5", "messages": CHAT},
                                     headers=gateway.auth(first))
    assert chat.status_code == 200

    ok(await call(gateway, "PATCH", "/keys/carol", root, {"allowed_models": ["o3"]}))
    assert (await gateway.client.get("/v1/models/gpt-5", headers=gateway.auth(first))).status_code == 403
    assert (await gateway.client.get("/v1/models/o3", headers=gateway.auth(first))).status_code == 200

    rotated = ok(await call(gateway, "POST", "/keys/carol/rotate", root))
    second = rotated["key"]
    assert second != first and rotated["id"] == made["id"] and rotated["previous_secret_valid_until"] is None
    assert await models_status(gateway, first) == 401
    assert await models_status(gateway, second) == 200

    graced = ok(await call(gateway, "POST", "/keys/carol/rotate", root, {"grace_seconds": 3600}))
    third = graced["key"]
    assert graced["previous_secret_valid_until"] is not None
    assert (await models_status(gateway, second), await models_status(gateway, third)) == (200, 200)

    ok(await call(gateway, "DELETE", "/keys/carol", root))
    assert (await models_status(gateway, second), await models_status(gateway, third)) == (401, 401)

    ok(await call(gateway, "PATCH", "/keys/alice", root, {"disabled": True}))
    refused(await gateway.client.get("/v1/models", headers=gateway.auth()), 403, "api_key_disabled")
    ok(await call(gateway, "PATCH", "/keys/alice", root, {"disabled": False}))
    assert await models_status(gateway, gateway.keys["alice"]) == 200


async def test_bad_key_input_is_a_400_that_names_the_field_and_changes_nothing(make_gateway: Any) -> None:
    gateway = await make_gateway(upstreams={"acct-1": {}})
    root = await admin_token(gateway)
    cases: list[tuple[Any, str | None]] = [
        ({"name": "dan"}, "allowed_models"),
        ({"allowed_models": ["*"]}, "name"),
        ({"name": "dan", "allowed_models": ["*"], "quotas": {"rpm": "lots"}}, "quotas.rpm"),
        ({"name": "dan", "allowed_models": ["*"], "quotas": {"rpn": 5}}, "quotas.rpn"),
        ({"name": "dan", "allowed_models": ["*"], "colour": "red"}, "colour"),
        ({"name": "dan", "allowed_models": ["*"], "expires_at": "2001-01-01"}, "expires_at"),
        ({"name": "dan", "allowed_models": ["*"], "expires_at": 1e20}, "expires_at"),
        ({"name": "dan", "allowed_models": ["*"], "disabled": "no"}, "disabled"),
        ([1, 2], None),
    ]
    for body, field in cases:
        error = refused(await call(gateway, "POST", "/keys", root, body), 400, "invalid_request")
        assert error["param"] == field, (body, error)
    for changes, field in (({"name": None}, "name"), ({"disabled": None}, "disabled"),
                           ({"expires_at": "9999-12-31T23:59:59Z", "colour": "red"}, "colour")):
        error = refused(await call(gateway, "PATCH", "/keys/alice", root, changes), 400, "invalid_request")
        assert error["param"] == field, (changes, error)
    for grace in (-1, "soon", 1e20):
        error = refused(await call(gateway, "POST", "/keys/alice/rotate", root, {"grace_seconds": grace}), 400,
                        "invalid_request")
        assert error["param"] == "grace_seconds"
    assert await models_status(gateway, gateway.keys["alice"]) == 200  # never rotated
    broken = await gateway.client.post(API + "/keys", content=b'{"name": "dan",', headers=gateway.auth(root))
    refused(broken, 400, "invalid_request")
    refused(await call(gateway, "POST", "/keys", root, {"name": "alice", "allowed_models": ["*"]}), 409, "conflict")
    refused(await call(gateway, "PATCH", "/keys/alice", root, {}), 400, "invalid_request")
    for method, path in (("GET", "/keys/nobody"), ("PATCH", "/keys/nobody"), ("DELETE", "/keys/nobody"),
                         ("POST", "/keys/nobody/rotate")):
        refused(await call(gateway, method, path, root, {"disabled": True} if method == "PATCH" else None), 404,
                "not_found")
    assert [k["name"] for k in ok(await call(gateway, "GET", "/keys", root))] == ["alice"]
    assert ok(await call(gateway, "GET", "/audit", root))["entries"] == []


# -- upstreams --------------------------------------------------------------------------------------------


async def test_upstreams_round_trip_and_the_credential_never_comes_back(make_gateway: Any) -> None:
    gateway = await make_gateway(upstreams={"acct-1": {}})
    root = await admin_token(gateway)
    fake = gateway.fakes["acct-1"]
    spec = {"name": "acct-2", "base_url": fake.base_url, "models": ["gpt-5*", "o3=o3-2025-04-16"],
            "api_key": FAKE_KEY, "weight": 2, "tier": 1, "max_concurrency": 4}
    answers = [created := await call(gateway, "POST", "/upstreams", root, spec)]
    made = ok(created, 201)
    assert "api_key" not in made and made["has_credential"] is True
    assert without(made, "id", "created_at", "updated_at") == {
        "name": "acct-2", "kind": "openai", "base_url": fake.base_url, "has_credential": True,
        "models": [{"pattern": "gpt-5*", "upstream_model": None}, {"pattern": "o3", "upstream_model": "o3-2025-04-16"}],
        "weight": 2.0, "tier": 1, "max_concurrency": 4, "enabled": True}
    assert made == (await cli(gateway, "upstreams", "show", "acct-2", "--json")).json()
    answers += [one := await call(gateway, "GET", "/upstreams/acct-2", root),
                listing := await call(gateway, "GET", "/upstreams", root)]
    assert ok(one) == made
    assert [u["name"] for u in ok(listing)] == ["acct-1", "acct-2"]  # by tier, then name
    health = ok(await call(gateway, "GET", "/health", root))
    assert [u["name"] for u in health["replicas"][0]["upstreams"]] == ["acct-1", "acct-2"]  # in the pool at once

    answers.append(weighed := await call(gateway, "PATCH", "/upstreams/acct-2", root, {"weight": 3}))
    assert without(ok(weighed), "updated_at") == without({**made, "weight": 3.0}, "updated_at")
    answers.append(rekeyed := await call(gateway, "PATCH", "/upstreams/acct-2", root, {"api_key": OTHER_KEY}))
    assert without(ok(rekeyed), "updated_at") == without({**made, "weight": 3.0}, "updated_at")
    answers.append(cleared := await call(gateway, "PATCH", "/upstreams/acct-2", root, {"api_key": None}))
    assert ok(cleared)["has_credential"] is False

    # Refusals that carry a credential in their request do not carry it back.
    answers += [
        taken := await call(gateway, "POST", "/upstreams", root, {**spec, "name": "acct-1", "api_key": OTHER_KEY}),
        ftp := await call(gateway, "POST", "/upstreams", root, {**spec, "name": "acct-3", "base_url": "ftp://x/v1",
                                                                 "api_key": OTHER_KEY}),
        inline := await call(gateway, "POST", "/upstreams", root, {
            **spec, "name": "acct-4", "base_url": f"https://user:{OTHER_KEY}@api.example.com/v1"}),
        kind := await call(gateway, "PATCH", "/upstreams/acct-2", root, {"kind": "other", "api_key": OTHER_KEY}),
        blank := await call(gateway, "POST", "/upstreams", root, {**spec, "name": "acct-5", "api_key": " "}),
    ]
    for changes, field in (({"name": None}, "name"), ({"base_url": 5}, "base_url"),
                           ({"models": [{"upstream_model": "o3"}]}, "models"),
                           ({"models": [{"pattern": "o3", "upstream_model": 3}]}, "models"),
                           ({"weight": "heavy"}, "weight"), ({"enabled": "yes"}, "enabled")):
        answers.append(answer := await call(gateway, "PATCH", "/upstreams/acct-2", root,
                                            {**changes, "api_key": OTHER_KEY}))
        assert refused(answer, 400, "invalid_request")["param"] == field, changes
    assert ok(await call(gateway, "GET", "/upstreams/acct-2", root))["name"] == "acct-2"  # not renamed "None"
    refused(taken, 409, "conflict")
    assert refused(ftp, 400, "invalid_request")["message"]
    refused(inline, 400, "invalid_request")
    assert refused(kind, 400, "invalid_request")["param"] == "kind"
    assert refused(blank, 400, "invalid_request")["param"] == "api_key"

    removed = ok(await call(gateway, "DELETE", "/upstreams/acct-2", root))
    assert removed["name"] == "acct-2"
    refused(await call(gateway, "GET", "/upstreams/acct-2", root), 404, "not_found")
    refused(await call(gateway, "DELETE", "/upstreams/acct-2", root), 404, "not_found")
    assert [u["name"] for u in ok(await call(gateway, "GET", "/upstreams", root))] == ["acct-1"]
    health = ok(await call(gateway, "GET", "/health", root))
    assert [u["name"] for u in health["replicas"][0]["upstreams"]] == ["acct-1"]

    answers.append(await call(gateway, "GET", "/audit", root, limit="1000"))
    for answer in answers:
        assert FAKE_KEY not in answer.text and OTHER_KEY not in answer.text, answer.text
    stored = await asyncio.to_thread(dump, gateway.settings)
    assert "acct-2" in stored and OTHER_KEY not in stored  # at rest only encrypted


async def test_testing_an_upstream_probes_its_models_with_the_stored_credential(make_gateway: Any) -> None:
    gateway = await make_gateway(upstreams={"acct-1": {}})
    root = await admin_token(gateway)
    fake = gateway.fakes["acct-1"]
    ok(await call(gateway, "POST", "/upstreams", root,
                  {"name": "probe", "base_url": fake.base_url, "models": ["*"], "api_key": FAKE_KEY}), 201)
    probe = await call(gateway, "POST", "/upstreams/probe/test", root)
    result = ok(probe)
    assert (result["name"], result["ok"], result["status"], result["error"]) == ("probe", True, 200, None)
    assert result["models"] == sorted(fake.models) and isinstance(result["latency_ms"], float)
    assert fake.requests[-1].path == "/v1/models"
    assert fake.requests[-1].headers["authorization"] == f"Bearer {FAKE_KEY}"  # the stored credential, decrypted

    ok(await call(gateway, "PATCH", "/upstreams/probe", root, {"api_key": OTHER_KEY}))
    wrong = await call(gateway, "POST", "/upstreams/probe/test", root)
    result = ok(wrong)
    assert (result["ok"], result["status"], result["models"]) == (False, 401, [])
    assert "401" in result["error"] and OTHER_KEY not in wrong.text and FAKE_KEY not in probe.text

    ok(await call(gateway, "POST", "/upstreams", root,
                  {"name": "nowhere", "base_url": "http://127.0.0.1:9/v1", "models": ["*"]}), 201)
    result = ok(await call(gateway, "POST", "/upstreams/nowhere/test", root))
    assert (result["ok"], result["status"], result["models"]) == (False, None, [])
    assert result["error"]
    refused(await call(gateway, "POST", "/upstreams/missing/test", root), 404, "not_found")


# -- usage and health -------------------------------------------------------------------------------------


async def test_usage_reports_filter_group_and_export_csv(make_gateway: Any) -> None:
    gateway = await make_gateway(upstreams={"acct-1": {}}, keys={
        "alice": Policy(allowed_models=("*",)), "bob": Policy(allowed_models=("*",))})
    root = await admin_token(gateway)
    for key, model in (("alice", "gpt-5"), ("alice", "gpt-5"), ("alice", "o3"), ("bob", "gpt-5-mini")):
        answer = await gateway.client.post("/v1/chat/completions", json={"model": model, "messages": CHAT},
                                           headers=gateway.auth(key))
        assert answer.status_code == 200, answer.text
    await gateway.flush()

    async def usage(**params: str) -> dict[str, Any]:
        report: dict[str, Any] = ok(await call(gateway, "GET", "/usage", root, **params))
        return report

    report = await usage()
    assert report["group_by"] == ["key", "model"]
    assert {(r["key_name"], r["model"]): r["requests"] for r in report["rows"]} == {
        ("alice", "gpt-5"): 2, ("alice", "o3"): 1, ("bob", "gpt-5-mini"): 1}
    totals = report["totals"]
    assert (totals["requests"], totals["errors"]) == (4, 0)
    assert totals["input_tokens"] > 0 and totals["output_tokens"] > 0 and totals["cost_usd"] > 0
    assert totals["latency_ms"]["p50"] is not None and totals["latency_ms"]["p99"] is not None
    assert sum(r["cost_usd"] for r in report["rows"]) == pytest.approx(totals["cost_usd"])

    bob_id = next(r["key"] for r in report["rows"] if r["key_name"] == "bob")
    for ref in ("bob", bob_id):
        only_bob = await usage(key=ref)
        assert [(r["key_name"], r["model"], r["requests"]) for r in only_bob["rows"]] == [("bob", "gpt-5-mini", 1)]
        assert only_bob["totals"]["requests"] == 1
    assert [(r["key_name"], r["requests"]) for r in (await usage(model="gpt-5"))["rows"]] == [("alice", 2)]
    by_model = await usage(group_by="model")
    assert {r["model"]: r["requests"] for r in by_model["rows"]} == {"gpt-5": 2, "o3": 1, "gpt-5-mini": 1}
    assert all("key" not in r for r in by_model["rows"])
    by_upstream = await usage(group_by="upstream", since="1h")
    assert [(r["upstream"], r["requests"]) for r in by_upstream["rows"]] == [("acct-1", 4)]
    assert (await usage(upstream="elsewhere"))["totals"]["requests"] == 0
    assert (await usage(since="2000-01-01", until="2000-01-02"))["rows"] == []

    assert (await usage(group_by="model,model"))["rows"] == by_model["rows"]
    for params, field in (({"group_by": "colour"}, "group_by"), ({"since": "yesterday"}, "since"),
                          ({"since": "1h", "until": "2h"}, "until"), ({"since": "99999999d"}, "since"),
                          ({"since": "2000-01-01", "group_by": "hour"}, "group_by")):
        error = refused(await call(gateway, "GET", "/usage", root, **params), 400, "invalid_request")
        assert error["param"] == field
    refused(await call(gateway, "GET", "/usage", root, key="nobody"), 404, "not_found")

    exported = await call(gateway, "GET", "/usage", root, format="csv")
    assert exported.status_code == 200
    assert exported.headers["content-type"].startswith("text/csv")
    assert "attachment" in exported.headers["content-disposition"]
    table = list(csv.reader(io.StringIO(exported.text)))
    assert table[0][:4] == ["key", "model", "key_name", "requests"]
    assert {"cost_usd", "latency_p50_ms", "latency_p99_ms"} <= set(table[0])
    rows = [dict(zip(table[0], line, strict=True)) for line in table[1:]]
    assert {(r["key_name"], r["model"], r["requests"]) for r in rows} == {
        ("alice", "gpt-5", "2"), ("alice", "o3", "1"), ("bob", "gpt-5-mini", "1")}
    costs = {(r["key_name"], r["model"]): r["cost_usd"] for r in report["rows"]}
    for row in rows:  # plain decimals a spreadsheet reads (0.0000105, not 1.05e-05), the JSON report's amounts
        assert re.fullmatch(r"\d+(\.\d+)?", row["cost_usd"]), row
        assert float(row["cost_usd"]) == pytest.approx(costs[row["key_name"], row["model"]])
    filtered = await call(gateway, "GET", "/usage", root, format="csv", group_by="model", key="alice")
    header, *lines = csv.reader(io.StringIO(filtered.text))
    assert header[:2] == ["model", "requests"]
    assert sorted(line[:2] for line in lines) == [["gpt-5", "2"], ["o3", "1"]]


async def test_health_shows_each_upstreams_live_state_per_replica(make_gateway: Any) -> None:
    gateway = await make_gateway(upstreams={"acct-1": {}, "acct-2": {"tier": 1}})
    viewer = await admin_token(gateway, "watcher", "viewer")
    gateway.fakes["acct-1"].script(server_error(500))
    answer = await gateway.client.post("/v1/chat/completions", json={"model": "gpt-5", "messages": CHAT},
                                       headers=gateway.auth())
    assert answer.status_code == 200  # acct-1 failed; acct-2 (the next tier) answered
    assert gateway.served_by() == {"acct-1": 1, "acct-2": 1}

    health = ok(await call(gateway, "GET", "/health", viewer))
    (replica,) = health["replicas"]  # one process, no Redis: one replica
    assert replica["instance"] and replica["host"] and isinstance(replica["pid"], int) and replica["at"]
    upstreams = {u["name"]: u for u in replica["upstreams"]}
    assert set(upstreams) == {"acct-1", "acct-2"}
    for state in upstreams.values():
        assert {"inflight", "cooling_down_s", "ejected_s", "latency_ewma_ms", "recent_errors", "usable",
                "enabled", "tier"} <= set(state)
        assert state["inflight"] == 0 and state["usable"] is True
    assert [e["what"] for e in upstreams["acct-1"]["recent_errors"]] == ["An upstream answered with status 500."]
    assert upstreams["acct-2"]["recent_errors"] == [] and upstreams["acct-2"]["latency_ewma_ms"] > 0
    assert (upstreams["acct-1"]["tier"], upstreams["acct-2"]["tier"]) == (0, 1)


# -- the audit log ----------------------------------------------------------------------------------------


async def test_the_audit_log_says_who_changed_what_from_the_api_and_the_cli(make_gateway: Any) -> None:
    gateway = await make_gateway(upstreams={"acct-1": {}})
    root = await admin_token(gateway)
    me = ok(await call(gateway, "GET", "/me", root))
    api_actor = f"root (admin {me['id']})"
    base_url = gateway.fakes["acct-1"].base_url
    tokens = [root]

    dave = ok(await call(gateway, "POST", "/keys", root, {"name": "dave", "allowed_models": ["gpt-5"],
                                                          "quotas": {"rpm": 10}}), 201)
    tokens.append(dave["key"])
    ok(await call(gateway, "PATCH", "/keys/dave", root, {"quotas": {"rpm": 20}}))
    tokens.append(ok(await call(gateway, "POST", "/keys/dave/rotate", root))["key"])
    ok(await call(gateway, "DELETE", "/keys/dave", root))
    acct = ok(await call(gateway, "POST", "/upstreams", root, {"name": "acct-9", "base_url": base_url,
                                                                "models": ["gpt-5*"], "api_key": FAKE_KEY}), 201)
    ok(await call(gateway, "PATCH", "/upstreams/acct-9", root, {"api_key": OTHER_KEY}))
    ok(await call(gateway, "PATCH", "/upstreams/acct-9", root, {"enabled": False}))
    ok(await call(gateway, "DELETE", "/upstreams/acct-9", root))

    erin = (await cli(gateway, "keys", "create", "erin", "--models", "o3", "--json")).json()
    tokens.append(erin["key"])
    await cli(gateway, "keys", "update", "erin", "--rpm", "5")
    await cli(gateway, "upstreams", "add", "acct-8", "--base-url", base_url, "--models", "o3",
              "--api-key-env", "ACCT_KEY", env={"ACCT_KEY": OTHER_KEY})
    ops = (await cli(gateway, "admins", "create", "ops", "--role", "viewer", "--json")).json()
    tokens.append(ops["token"])
    await cli(gateway, "admins", "revoke", "ops")

    answer = await call(gateway, "GET", "/audit", root, limit="1000")
    entries = ok(answer)["entries"]
    assert [e["id"] for e in entries] == sorted((e["id"] for e in entries), reverse=True)  # newest first
    assert [(e["source"], e["actor"], e["action"], e["target"]) for e in reversed(entries)] == [
        ("api", api_actor, "key.create", f"key {dave['id']} (dave)"),
        ("api", api_actor, "key.update", f"key {dave['id']} (dave)"),
        ("api", api_actor, "key.rotate", f"key {dave['id']} (dave)"),
        ("api", api_actor, "key.revoke", f"key {dave['id']} (dave)"),
        ("api", api_actor, "upstream.create", f"upstream {acct['id']} (acct-9)"),
        ("api", api_actor, "upstream.update", f"upstream {acct['id']} (acct-9)"),
        ("api", api_actor, "upstream.update", f"upstream {acct['id']} (acct-9)"),
        ("api", api_actor, "upstream.remove", f"upstream {acct['id']} (acct-9)"),
        ("cli", cli_actor(), "key.create", f"key {erin['id']} (erin)"),
        ("cli", cli_actor(), "key.update", f"key {erin['id']} (erin)"),
        ("cli", cli_actor(), "upstream.create", entries[2]["target"]),
        ("cli", cli_actor(), "admin.create", f"admin {ops['id']} (ops)"),
        ("cli", cli_actor(), "admin.revoke", f"admin {ops['id']} (ops)"),
    ]
    assert entries[2]["target"].endswith(" (acct-8)")
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", e["at"]) for e in entries)
    log = {(e["action"], e["target"]): e for e in reversed(entries)}

    created = log["key.create", f"key {dave['id']} (dave)"]
    assert created["before"] is None and created["after"]["allowed_models"] == ["gpt-5"]
    updated = log["key.update", f"key {dave['id']} (dave)"]
    assert (updated["before"]["quotas"]["rpm"], updated["after"]["quotas"]["rpm"]) == (10, 20)
    assert without(updated["before"], "quotas") == without(updated["after"], "quotas")  # what changed, only
    revoked = log["key.revoke", f"key {dave['id']} (dave)"]
    assert (revoked["before"]["revoked_at"], bool(revoked["after"]["revoked_at"])) == (None, True)

    upstream_updates = [e for e in reversed(entries) if e["action"] == "upstream.update"]
    rekeyed, disabled = upstream_updates
    assert rekeyed["after"]["credential_replaced"] is True  # a new credential shows, though it never does itself
    assert without(rekeyed["before"], "credential_replaced") == without(rekeyed["after"], "credential_replaced")
    assert (disabled["before"]["enabled"], disabled["after"]["enabled"]) == (True, False)
    assert "credential_replaced" not in disabled["after"]

    made_admin = log["admin.create", f"admin {ops['id']} (ops)"]
    assert made_admin["before"] is None
    assert made_admin["after"] == {"id": ops["id"], "name": "ops", "role": "viewer", "revoked_at": None}
    gone = log["admin.revoke", f"admin {ops['id']} (ops)"]
    assert gone["before"]["revoked_at"] is None and gone["after"]["revoked_at"]

    for secret in (*tokens, FAKE_KEY, OTHER_KEY):
        assert secret not in answer.text and secret.rsplit("_", 1)[-1] not in answer.text
    stored = await asyncio.to_thread(dump, gateway.settings)
    for secret in (*tokens, OTHER_KEY):
        assert secret.rsplit("_", 1)[-1] not in stored

    # Filters and paging.
    keys_only = ok(await call(gateway, "GET", "/audit", root, action="key."))["entries"]
    assert {e["action"] for e in keys_only} == {"key.create", "key.update", "key.rotate", "key.revoke"}
    assert {e["source"] for e in ok(await call(gateway, "GET", "/audit", root, actor=api_actor))["entries"]} == {"api"}
    assert len(ok(await call(gateway, "GET", "/audit", root, target="(erin)"))["entries"]) == 2
    page = ok(await call(gateway, "GET", "/audit", root, limit="5"))
    assert [e["id"] for e in page["entries"]] == [e["id"] for e in entries[:5]]
    older = ok(await call(gateway, "GET", "/audit", root, limit="5", before=str(page["next_before"])))
    assert [e["id"] for e in older["entries"]] == [e["id"] for e in entries[5:10]]
    last = ok(await call(gateway, "GET", "/audit", root, limit="5", before=str(entries[9]["id"])))
    assert len(last["entries"]) == 3 and last["next_before"] is None
    for params in ({"limit": "0"}, {"limit": "1001"}, {"limit": "many"}, {"before": "x"},
                   {"before": "99999999999999999999999"}):
        error = refused(await call(gateway, "GET", "/audit", root, **params), 400, "invalid_request")
        assert error["param"] == next(iter(params))


async def test_admins_made_and_revoked_with_the_cli_are_audited_without_their_token(make_gateway: Any) -> None:
    gateway = await make_gateway(upstreams={"acct-1": {}})
    made = (await cli(gateway, "admins", "create", "root", "--role", "admin", "--json")).json()
    assert set(made) == {"name", "role", "token", "id"} and made["token"].startswith("pga_")
    await gateway.sync()
    token = made["token"]
    assert ok(await call(gateway, "GET", "/me", token))["name"] == "root"

    await cli(gateway, "admins", "revoke", "root")
    await gateway.sync()  # what the sync loop does within its interval: another process revoked it
    refused(await call(gateway, "GET", "/me", token), 401, "invalid_admin_token")

    rows = await asyncio.to_thread(query, gateway.settings,
                                   "SELECT actor, source, action, target, before, after FROM audit_log ORDER BY id")
    assert [(r["source"], r["actor"], r["action"], r["target"]) for r in rows] == [
        ("cli", cli_actor(), "admin.create", f"admin {made['id']} (root)"),
        ("cli", cli_actor(), "admin.revoke", f"admin {made['id']} (root)"),
    ]
    assert all(token.rsplit("_", 1)[1] not in repr(row) for row in rows)
    stored = await asyncio.to_thread(dump, gateway.settings)
    assert token.rsplit("_", 1)[1] not in stored  # only its hash is kept


# -- the OpenAPI document ---------------------------------------------------------------------------------


async def test_the_openapi_document_lists_exactly_the_routes_the_app_serves(make_gateway: Any) -> None:
    gateway = await make_gateway(upstreams={})
    answer = await gateway.client.get(API + "/openapi.json")  # no token needed to read the document
    document = ok(answer)
    assert document["openapi"].startswith("3.1") and document["servers"] == [{"url": API}]
    documented = {path: set(item) & HTTP_METHODS for path, item in document["paths"].items()}
    assert documented == admin_routes(gateway.app)

    for path, item in document["paths"].items():
        for method in set(item) & HTTP_METHODS:
            operation = item[method]
            declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
            assert declared == set(re.findall(r"\{(\w+)\}", path)), (method, path)
            assert operation["summary"] and {"200", "201"} & set(operation["responses"]), (method, path)
    schemas = set(document["components"]["schemas"])
    assert set(re.findall(r'"#/components/schemas/(\w+)"', answer.text)) <= schemas


# -- /metrics ---------------------------------------------------------------------------------------------


async def test_metrics_need_the_metrics_token_or_an_admin_token(make_gateway: Any) -> None:
    gateway = await make_gateway(upstreams={"acct-1": {}})
    root = await admin_token(gateway)
    viewer = await admin_token(gateway, "watcher", "viewer")

    async def metrics(token: str | None) -> httpx2.Response:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        response: httpx2.Response = await gateway.client.get("/metrics", headers=headers)
        return response

    refused(await metrics(None), 401, "invalid_admin_token")
    refused(await metrics("not-the-metrics-token"), 401, "invalid_admin_token")
    refused(await metrics(gateway.keys["alice"]), 403, "admin_token_required")
    assert gateway.settings.metrics_token
    for token in (gateway.settings.metrics_token, root, viewer):
        answer = await metrics(token)
        assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
        assert "poolgate_" in answer.text

    await AdminStore(gateway.state.engine).revoke("watcher")
    await gateway.sync()
    refused(await metrics(viewer), 401, "invalid_admin_token")


async def test_metrics_may_be_made_public(make_gateway: Any) -> None:
    gateway = await make_gateway(upstreams={"acct-1": {}}, metrics_public=True)
    answer = await gateway.client.get("/metrics")
    assert answer.status_code == 200 and "poolgate_" in answer.text
    # Public metrics open nothing else.
    refused(await call(gateway, "GET", "/keys"), 401, "invalid_admin_token")
