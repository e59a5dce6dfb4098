"""The dashboard and the member page, in-process: sessions, CSRF, roles, and what each page shows.
(The browser tests in tests/e2e/test_dashboard_browser.py click through the same pages.)"""

from __future__ import annotations

import re
from typing import Any

import pytest

from app.admin import AdminStore
from keys import KeyStore, Policy, Quotas


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found is not None, "the page has no form"
    return found.group(1)


async def signed_in(gateway: Any, role: str = "admin", name: str = "root") -> tuple[Any, str]:
    """A browser-like client of the app, signed in to the dashboard; and the admin's token."""
    _, token = await AdminStore(gateway.state.engine).create(name, role)
    await gateway.sync()
    client = gateway.client
    client.cookies.clear()
    form = await client.get("/admin/signin")
    answer = await client.post("/admin/signin", data={"csrf": csrf_of(form.text), "token": token, "next": "/admin/"})
    assert answer.status_code == 303 and answer.headers["location"] == "/admin/"
    return client, token


async def test_pages_need_a_session_and_the_session_cookie_is_locked_down(make_gateway: Any) -> None:
    gateway = await make_gateway(upstreams={"acct-1": {}})
    for path in ("/admin/", "/admin/keys", "/admin/upstreams", "/admin/usage", "/admin/audit", "/admin/usage.csv"):
        answer = await gateway.client.get(path)
        assert answer.status_code == 303 and answer.headers["location"].startswith("/admin/signin?next=")
    _, token = await AdminStore(gateway.state.engine).create("root", "admin")
    await gateway.sync()
    form = await gateway.client.get("/admin/signin")
    answer = await gateway.client.post("/admin/signin", data={"csrf": csrf_of(form.text), "token": token})
    cookie = next(c for c in answer.headers.get_list("set-cookie") if c.startswith("poolgate_admin="))
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/admin/" in cookie
    assert token not in cookie  # the session names the admin; it does not carry the token
    page = await gateway.client.get("/admin/")
    assert page.status_code == 200 and "Overview" in page.text
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert page.headers["cache-control"] == "no-store"


async def test_sign_in_refuses_bad_tokens_keys_and_forged_forms(make_gateway: Any) -> None:
    gateway = await make_gateway(upstreams={"acct-1": {}})
    client = gateway.client
    form = await client.get("/admin/signin")
    bad = await client.post("/admin/signin", data={"csrf": csrf_of(form.text), "token": "pga_nope"})
    assert bad.status_code == 401 and "valid admin token" in bad.text
    key = await client.post("/admin/signin", data={"csrf": csrf_of(bad.text), "token": gateway.keys["alice"]})
    assert key.status_code == 403 and "poolgate_admin" not in key.headers.get("set-cookie", "")
    client.cookies.clear()  # a form posted from elsewhere carries no sign-in cookie of ours
    forged = await client.post("/admin/signin", data={"csrf": "made-up", "token": "pga_nope"})
    assert forged.status_code == 400 and "expired" in forged.text
    for _ in range(12):  # guessing: the address is slowed down, as on the admin API
        form = await client.get("/admin/signin")
        last = await client.post("/admin/signin", data={"csrf": csrf_of(form.text), "token": "pga_guess"})
    assert last.status_code == 429


async def test_a_sign_in_leads_only_to_a_dashboard_page(make_gateway: Any) -> None:
    gateway = await make_gateway(upstreams={"acct-1": {}})
    _, token = await AdminStore(gateway.state.engine).create("root", "admin")
    await gateway.sync()
    for target, expected in (("/admin/usage?since=1d", "/admin/usage?since=1d"), ("https://evil.example/", "/admin/"),
                             ("//evil.example/admin/", "/admin/"), ("/admin/\\evil", "/admin/")):
        form = await gateway.client.get("/admin/signin")
        answer = await gateway.client.post("/admin/signin", data={
            "csrf": csrf_of(form.text), "token": token, "next": target})
        assert answer.headers["location"] == expected


async def test_every_change_needs_the_csrf_token_of_the_session(make_gateway: Any) -> None:
    gateway = await make_gateway(upstreams={"acct-1": {}})
    client, _ = await signed_in(gateway)
    alice = gateway.keys["alice"].split("_")[1]
    for path, data in (("/admin/keys", {"name": "mallory", "allowed_models": "*"}),
                       (f"/admin/keys/{alice}/revoke", {}), ("/admin/upstreams/acct-1/remove", {})):
        for csrf in (None, "forged"):
            answer = await client.post(path, data={**data, **({"csrf": csrf} if csrf else {})})
            assert answer.status_code == 303 and answer.headers["location"].startswith("/admin/signin")
    assert (await client.get("/v1/models", headers=gateway.auth())).status_code == 200  # alice still works
    assert "mallory" not in (await client.get("/admin/keys")).text


async def test_keys_are_created_edited_rotated_and_revoked_through_the_forms(make_gateway: Any) -> None:
    gateway = await make_gateway(upstreams={"acct-1": {}})
    client, _ = await signed_in(gateway)
    new = await client.get("/admin/keys/new")
    created = await client.post("/admin/keys", data={
        "csrf": csrf_of(new.text), "name": "carol", "allowed_models": "gpt-5*, o3", "rpm": "60",
        "budget_usd": "20", "budget_period": "month", "allowed_reasoning_efforts": "low, medium"})
    assert created.status_code == 201
    [secret] = re.findall(r'value="(pg_[^"]+)"', created.text)
    key_id = secret.split("_")[1]
    record = await KeyStore(gateway.state.engine).get("carol")
    assert record.policy.quotas == Quotas(rpm=60, budget_usd=20.0, budget_period="month")
    assert record.policy.allowed_models == ("gpt-5*", "o3")
    assert record.policy.allowed_reasoning_efforts == ("low", "medium")
    assert (await client.get("/v1/models", headers={"Authorization": f"Bearer {secret}"})).status_code == 200

    page = await client.get(f"/admin/keys/{key_id}")
    assert secret not in page.text and 'value="60"' in page.text
    saved = await client.post(f"/admin/keys/{key_id}", data={
        "csrf": csrf_of(page.text), "allowed_models": "gpt-5*", "rpm": "", "budget_usd": "20",
        "budget_period": "week", "allowed_reasoning_efforts": ""})
    assert saved.status_code == 303
    record = await KeyStore(gateway.state.engine).get("carol")
    assert record.policy.quotas == Quotas(budget_usd=20.0, budget_period="week")
    assert record.policy.allowed_reasoning_efforts is None  # emptied: any effort

    refused = await client.post(f"/admin/keys/{key_id}", data={"csrf": csrf_of(page.text), "rpm": "lots"})
    assert refused.status_code == 400 and "rpm" in refused.text and 'role="alert"' in refused.text

    rotated = await client.post(f"/admin/keys/{key_id}/rotate", data={"csrf": csrf_of(page.text)})
    [fresh] = re.findall(r'value="(pg_[^"]+)"', rotated.text)
    assert fresh != secret
    assert (await client.get("/v1/models", headers={"Authorization": f"Bearer {secret}"})).status_code == 401
    revoked = await client.post(f"/admin/keys/{key_id}/revoke", data={"csrf": csrf_of(page.text)})
    assert revoked.status_code == 303
    assert (await client.get("/v1/models", headers={"Authorization": f"Bearer {fresh}"})).status_code == 401

    audit = (await client.get("/admin/audit")).text
    for action in ("key.create", "key.update", "key.rotate", "key.revoke"):
        assert action in audit
    assert "root (admin" in audit and "dashboard" in audit
    assert secret not in audit and fresh not in audit


async def test_upstreams_are_added_tested_disabled_and_their_credential_never_shown(make_gateway: Any) -> None:
    gateway = await make_gateway(upstreams={"acct-1": {}})
    client, _ = await signed_in(gateway)
    form = await client.get("/admin/upstreams/new")
    fake = gateway.fakes["acct-1"]
    added = await client.post("/admin/upstreams", data={
        "csrf": csrf_of(form.text), "name": "acct-9", "base_url": fake.base_url, "models": "gpt-5*",
        "api_key": "sk-acct-1-0123456789abcdef", "weight": "2", "tier": "1"})
    assert added.status_code == 303 and added.headers["location"] == "/admin/upstreams/acct-9?done=added"
    page = await client.get("/admin/upstreams/acct-9")
    assert "sk-acct-1" not in page.text and "stored (encrypted; never shown)" in page.text
    tested = await client.post("/admin/upstreams/acct-9/test", data={"csrf": csrf_of(page.text)})
    assert "Answered in" in tested.text and "gpt-5" in tested.text
    await client.post("/admin/upstreams/acct-9/enabled", data={"csrf": csrf_of(page.text), "enabled": "false"})
    listing = await client.get("/admin/upstreams")
    assert re.search(r"acct-9</a></td><td><span class=\"pill muted\">disabled", listing.text)
    bad = await client.post("/admin/upstreams", data={
        "csrf": csrf_of(form.text), "name": "x", "base_url": "ftp://nowhere", "models": "o3",
        "api_key": "sk-should-not-come-back"})
    assert bad.status_code == 400 and "sk-should-not-come-back" not in bad.text


async def test_a_viewer_reads_every_page_and_changes_nothing(make_gateway: Any) -> None:
    gateway = await make_gateway(upstreams={"acct-1": {}})
    client, _ = await signed_in(gateway, "viewer", "watcher")
    for path in ("/admin/", "/admin/keys", "/admin/upstreams", "/admin/usage", "/admin/audit"):
        assert (await client.get(path)).status_code == 200
    page = await client.get("/admin/keys")
    assert "New key" not in page.text
    alice = gateway.keys["alice"].split("_")[1]
    answer = await client.post(f"/admin/keys/{alice}/revoke", data={"csrf": csrf_of(page.text)})
    assert answer.status_code == 403 and "viewer" in answer.text
    assert (await client.get("/v1/models", headers=gateway.auth())).status_code == 200


async def test_revoking_an_admin_ends_their_sessions(make_gateway: Any) -> None:
    gateway = await make_gateway(upstreams={"acct-1": {}})
    client, _ = await signed_in(gateway, name="leaver")
    assert (await client.get("/admin/keys")).status_code == 200
    await AdminStore(gateway.state.engine).revoke("leaver")
    await gateway.sync()
    assert (await client.get("/admin/keys")).status_code == 303


async def test_usage_page_and_csv_show_what_was_relayed(make_gateway: Any) -> None:
    gateway = await make_gateway(upstreams={"acct-1": {}})
    sdk = gateway.sdk()
    for _ in range(3):
        await sdk.chat.completions.create(model="gpt-5", messages=[{"role": "user", "content": "hi"}])
    await gateway.flush()
    client, _ = await signed_in(gateway)
    page = await client.get("/admin/usage", params={"since": "1d", "group_by": "model"})
    assert page.status_code == 200 and re.search(r"<td>gpt-5</td>\s*<td class=\"num\">3</td>", page.text)
    assert 'role="img"' in page.text  # the chart
    csv = await client.get("/admin/usage.csv", params={"since": "1d", "group_by": "key"})
    assert csv.headers["content-type"].startswith("text/csv")
    assert csv.text.splitlines()[0].startswith("key,key_name,requests") and ",alice,3," in csv.text
    bad = await client.get("/admin/usage", params={"since": "yesterday-ish"})
    assert bad.status_code == 400 and 'role="alert"' in bad.text
    overview = await client.get("/admin/?range=24h")
    assert ">alice</a>" in overview.text and "gpt-5" in overview.text


async def test_a_member_sees_only_their_own_key_and_a_rotation_ends_the_session(make_gateway: Any) -> None:
    gateway = await make_gateway(upstreams={"acct-1": {}}, keys={
        "alice": Policy(allowed_models=("gpt-5",), quotas=Quotas(rpm=10, budget_usd=5, budget_period="day")),
        "bob": Policy(allowed_models=("o3",))})
    sdk = gateway.sdk("alice")
    await sdk.chat.completions.create(model="gpt-5", messages=[{"role": "user", "content": "hi"}])
    await gateway.flush()
    client = gateway.client
    form = await client.get("/me/")
    assert "API key" in form.text
    wrong = await client.post("/me/signin", data={"csrf": csrf_of(form.text), "key": gateway.keys["bob"] + "x"})
    assert wrong.status_code == 401
    signed = await client.post("/me/signin", data={"csrf": csrf_of(wrong.text), "key": gateway.keys["alice"]})
    assert signed.status_code == 303
    page = await client.get("/me/")
    assert page.status_code == 200 and "Your models" in page.text and "gpt-5" in page.text
    assert "o3" not in page.text and "bob" not in page.text and gateway.keys["alice"] not in page.text
    assert re.search(r"9 <small>of 10 left", page.text)  # one request of ten this minute
    assert "$5" in page.text  # the day's budget
    assert (await client.get("/admin/")).status_code == 303  # a key is not an admin

    await KeyStore(gateway.state.engine).rotate("alice")
    await gateway.sync()
    assert "API key" in (await client.get("/me/")).text  # signed out: the secret it signed in with is gone


@pytest.mark.parametrize("path", ["/admin/static/poolgate.css", "/admin/static/poolgate.js",
                                  "/admin/static/favicon.svg"])
async def test_assets_are_served_by_poolgate_itself(make_gateway: Any, path: str) -> None:
    gateway = await make_gateway(upstreams={"acct-1": {}})
    answer = await gateway.client.get(path)
    assert answer.status_code == 200 and len(answer.content) > 100
