"""The dashboard and the member page in a real browser: Debian's chromium, driven by Playwright, against
poolgate listening on 127.0.0.1. Elements are found by their accessible names, as a screen reader finds them.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from typing import Any

import pytest

from keys import Policy
from tests.support import Http, poolgate

CHROMIUM = "/usr/bin/chromium"

playwright_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed")
pytestmark = pytest.mark.skipif(shutil.which(CHROMIUM) is None,
                                reason="chromium is not installed (Debian: apt-get install chromium)")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


class Tab:
    """A page in a fresh browser context, recording every console error and uncaught exception."""

    def __init__(self, browser: Any, base_url: str) -> None:
        self.context = browser.new_context(base_url=base_url)
        self.page = self.context.new_page()
        self.problems: list[str] = []
        self.page.on("console", lambda m: self.problems.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.problems.append(str(e)))

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def tabs(browser: Any) -> Iterator[Any]:
    opened: list[Tab] = []

    def open_tab(base_url: str) -> Tab:
        tab = Tab(browser, base_url)
        opened.append(tab)
        return tab

    yield open_tab
    for tab in opened:
        tab.close()
    problems = [p for tab in opened for p in tab.problems]
    assert problems == [], f"the browser reported errors: {problems}"


def admin_token(gateway: Any, name: str, role: str) -> str:
    created = poolgate(gateway.settings, "admins", "create", name, "--role", role, "--json")
    assert created.code == 0, created.stderr
    return str(created.json()["token"])


def sign_in(tab: Tab, token: str) -> None:
    page = tab.page
    page.goto("/admin/")
    page.get_by_label("Admin token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("heading", name="Overview").wait_for()


def test_an_admin_creates_a_key_that_works_then_revokes_it(make_gateway: Any, tabs: Any) -> None:
    gateway = make_gateway(upstreams={"acct-1": {}})
    tab = tabs(gateway.server.base_url)
    sign_in(tab, admin_token(gateway, "root", "admin"))
    page = tab.page
    for section in ("Upstreams", "Usage", "Audit", "Keys"):
        page.get_by_role("link", name=section).click()
        page.get_by_role("heading", name=section).wait_for()

    page.get_by_role("button", name="New key").click()
    page.get_by_label("Name").fill("carol")
    page.get_by_label("Models", exact=True).fill("gpt-5*")
    page.get_by_label("Requests per minute").fill("60")
    page.get_by_role("button", name="Create key").click()
    secret = page.get_by_label("API key").input_value()
    assert secret.startswith("pg_")
    assert page.get_by_role("button", name="Copy").is_visible()

    http = Http(gateway.server.base_url)
    assert http.get("/v1/models", key=secret).status == 200
    page.get_by_role("link", name="Back to the key").click()
    assert secret not in page.content()  # shown once, never again
    assert page.get_by_label("Requests per minute").input_value() == "60"

    page.get_by_role("button", name="Revoke").click()
    page.get_by_role("status").filter(has_text="revoked").wait_for()
    refused_at = time.monotonic() + 2
    while http.get("/v1/models", key=secret).status != 401:
        assert time.monotonic() < refused_at, "the revoked key still works after 2 s"
        time.sleep(0.05)

    page.get_by_role("link", name="Audit").click()
    assert page.get_by_role("cell", name="key.revoke").count() == 1
    assert page.get_by_role("cell", name="key.create").count() == 1


def test_a_viewer_sees_everything_and_may_change_nothing(make_gateway: Any, tabs: Any) -> None:
    gateway = make_gateway(upstreams={"acct-1": {}})
    tab = tabs(gateway.server.base_url)
    sign_in(tab, admin_token(gateway, "watcher", "viewer"))
    page = tab.page
    page.get_by_role("link", name="Keys").click()
    assert page.get_by_role("link", name="alice").is_visible()
    assert page.get_by_role("button", name="New key").count() == 0
    page.get_by_role("link", name="alice").click()
    assert page.get_by_role("button", name="Revoke").count() == 0
    assert page.get_by_label("Models", exact=True).is_disabled()


def test_a_wrong_admin_token_is_refused_on_the_sign_in_page(make_gateway: Any, tabs: Any) -> None:
    gateway = make_gateway(upstreams={"acct-1": {}})
    tab = tabs(gateway.server.base_url)
    page = tab.page
    page.goto("/admin/keys")
    page.get_by_label("Admin token").fill("pga_not_a_real_token")
    page.get_by_role("button", name="Sign in").click()
    assert "valid admin token" in page.get_by_role("alert").inner_text()
    tab.problems.clear()  # the browser logs the 401 it was answered with; that is the point here


def test_a_member_sees_their_own_models_limits_and_usage(make_gateway: Any, tabs: Any) -> None:
    gateway = make_gateway(upstreams={"acct-1": {}}, keys={
        "alice": Policy(allowed_models=("gpt-5", "o3"), priority_rules=("o3",), allowed_reasoning_efforts=("low",)),
        "bob": Policy(allowed_models=("gpt-5-mini",)),
    })
    client = gateway.client("alice")
    client.chat.completions.create(model="o3", messages=[{"role": "user", "content": "hi"}])
    tab = tabs(gateway.server.base_url)
    page = tab.page
    page.goto("/me/")
    page.get_by_label("API key").fill(gateway.keys["alice"])
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("heading", name="Your models").wait_for()
    rows = page.locator("#models tbody tr")
    assert [rows.nth(i).locator("td").first.locator("strong").inner_text() for i in range(rows.count())] == [
        "o3", "gpt-5"]  # the key's own order
    assert rows.nth(1).locator("td").nth(1).inner_text() == "low"  # the efforts, trimmed to the key's
    assert page.get_by_role("img", name="Your requests per day, last 30 days: 1 in all", exact=False).count() == 1
    content = page.content()
    assert "bob" not in content and "gpt-5-mini" not in content and gateway.keys["bob"] not in content
