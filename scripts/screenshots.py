"""Screenshots of the dashboard and the member page for the README, with generated usage behind them.

    .venv/bin/python -m scripts.screenshots [OUT_DIR]     (default: docs/img)

Needs Debian's chromium (apt-get install chromium) and Playwright for Python (a dev dependency).
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

from app._db import create_engine, upgrade
from app.admin import AdminStore
from app.crypto import Vault
from app.pool import UpstreamStore, parse_routes
from app.server import create_app
from app.settings import Settings
from scripts.benchlib.sample import fill
from tests.support import FakeUpstreamThread
from tests.support.gateway import LiveServer

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
PAGES = (("overview", "/admin/?range=7d"), ("keys", "/admin/keys"), ("usage", "/admin/usage?since=7d&group_by=model"))


async def prepare(settings: Settings, fakes: list[FakeUpstreamThread]) -> tuple[str, str]:
    sample = await fill(settings, keys=18, rows=60_000, days=30)
    engine = create_engine(settings)
    store = UpstreamStore(engine, Vault.from_settings(settings))
    for number, fake in enumerate(fakes, 1):
        await store.add(f"acct-{number}", fake.base_url, parse_routes("gpt-5*,o3,text-embedding-3-small"),
                        credential=f"sk-acct-{number}-0123456789abcdef", weight=2.0 if number == 1 else 1.0,
                        tier=0 if number < 3 else 1)
    _, token = await AdminStore(engine).create("ops", "admin")
    await engine.dispose()
    return token, sample.keys[0][2]


def main() -> int:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "img"
    out.mkdir(parents=True, exist_ok=True)
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as scratch:
        settings = Settings(data_dir=Path(scratch) / "data", sync_interval=0.2)
        upgrade(settings)
        fakes = [FakeUpstreamThread(name=f"acct-{n}", api_key=f"sk-acct-{n}-0123456789abcdef",
                                    models=("gpt-5", "gpt-5.1-codex", "gpt-5-mini", "o3", "text-embedding-3-small"))
                 for n in (1, 2, 3)]
        admin_token, member_key = asyncio.run(prepare(settings, fakes))
        server = LiveServer(create_app(settings), settings).start()
        try:
            with sync_playwright() as driver:
                browser = driver.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
                context = browser.new_context(base_url=server.base_url, viewport={"width": 1280, "height": 900},
                                              device_scale_factor=1, color_scheme="light")
                page = context.new_page()
                page.goto("/admin/")
                page.get_by_label("Admin token").fill(admin_token)
                page.get_by_role("button", name="Sign in").click()
                page.get_by_role("heading", name="Overview").wait_for()
                for name, path in PAGES:
                    page.goto(path)
                    page.screenshot(path=str(out / f"{name}.png"), full_page=True)
                member = browser.new_context(base_url=server.base_url, viewport={"width": 1280, "height": 900},
                                             color_scheme="light").new_page()
                member.goto("/me/")
                member.get_by_label("API key").fill(member_key)
                member.get_by_role("button", name="Sign in").click()
                member.get_by_role("heading", name="Your models").wait_for()
                member.screenshot(path=str(out / "member.png"), full_page=True)
                browser.close()
        finally:
            server.stop()
            for fake in fakes:
                fake.stop()
    print(f"screenshots written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
