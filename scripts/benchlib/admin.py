"""The admin surface at scale: dashboard pages and admin API reads with 10,000 keys and 1,000,000 usage rows.

poolgate serves from a process of its own (``poolgate serve``); one client asks each page in turn, as an
admin browsing would, and the latency of every answer is recorded. The bar is 200 ms at p99.
``BENCH_ADMIN_DATA=DIR`` keeps the generated data in DIR and reuses it on the next run (it takes minutes).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx2

from app._db import create_engine, upgrade
from app.admin import AdminStore
from app.settings import Settings
from scripts.benchlib.common import percentile, write_section
from scripts.benchlib.sample import fill
from tests.support import ServerProcess

BAR_MS = 200.0


async def _admin(settings: Settings) -> str:
    engine = create_engine(settings)
    _, token = await AdminStore(engine).create(f"bench-{int(time.time())}", "admin")
    await engine.dispose()
    return token


def _sign_in(client: httpx2.Client, token: str) -> None:
    form = client.get("/admin/signin")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert csrf is not None
    answer = client.post("/admin/signin", data={"csrf": csrf.group(1), "token": token, "next": "/admin/"})
    assert answer.status_code == 303, answer.text


def _measure(client: httpx2.Client, path: str, runs: int, headers: dict[str, str] | None = None) -> dict[str, Any]:
    samples = []
    size = 0
    for _ in range(runs + 3):
        started = time.perf_counter()
        answer = client.get(path, headers=headers)
        samples.append((time.perf_counter() - started) * 1000)
        if answer.status_code != 200:
            raise SystemExit(f"{path}: {answer.status_code} {answer.text[:200]}")
        size = len(answer.content)
    samples = samples[3:]  # the first answers warm caches
    return {"path": path, "p50": percentile(samples, 50), "p99": percentile(samples, 99), "max": max(samples),
            "bytes": size}


def main(*, quick: bool, write: bool) -> int:
    keys, rows, runs = (1_000, 100_000, 20) if quick else (10_000, 1_000_000, 100)
    kept = os.environ.get("BENCH_ADMIN_DATA")
    with tempfile.TemporaryDirectory() as scratch:
        settings = Settings(data_dir=Path(kept or scratch) / "data")
        saved = settings.data_dir / "bench-sample.json"
        if saved.exists():
            made, fill_s = json.loads(saved.read_text()), float("nan")
        else:
            upgrade(settings)
            started = time.perf_counter()
            made = asyncio.run(fill(settings, keys=keys, rows=rows, days=30)).keys[:1]
            fill_s = time.perf_counter() - started
            if kept:
                saved.write_text(json.dumps(made))
        print(f"{keys:,} keys and {rows:,} usage rows (filled in {fill_s:.0f} s)")
        token = asyncio.run(_admin(settings))
        heavy_name, heavy_id, heavy_token = made[0]
        server = ServerProcess(settings).start()
        try:
            with httpx2.Client(base_url=server.base_url, timeout=60) as client:
                _sign_in(client, token)
                bearer = {"Authorization": f"Bearer {token}"}
                pages = [
                    "/admin/", "/admin/?range=7d", "/admin/?range=30d", "/admin/keys", "/admin/keys?q=user-0999",
                    f"/admin/keys/{heavy_id}", "/admin/upstreams", "/admin/usage", "/admin/usage?since=30d",
                    "/admin/usage?group_by=key,model", "/admin/usage?since=30d&group_by=day", "/admin/audit",
                ]
                api = ["/admin/api/usage?since=30d&group_by=key&limit=100", "/admin/api/usage?since=24h&group_by=model",
                       "/admin/api/usage?since=30d&group_by=day", "/admin/api/usage?since=7d&group_by=key,model&limit=500",
                       f"/admin/api/usage?since=30d&key={heavy_name}&group_by=model", "/admin/api/health",
                       f"/admin/api/keys/{heavy_id}", "/admin/api/usage?since=30d&group_by=key"]
                results = [_measure(client, path, runs) for path in pages]
                results += [_measure(client, path, runs, bearer) for path in api]
                results.append(_measure(client, "/v1/usage", runs, {"Authorization": f"Bearer {heavy_token}"}))
                with httpx2.Client(base_url=server.base_url, timeout=60) as member:
                    form = member.get("/me/")
                    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
                    assert csrf is not None
                    member.post("/me/signin", data={"csrf": csrf.group(1), "key": heavy_token})
                    results.append(_measure(member, "/me/", runs))
        finally:
            server.stop()
    worst = max(r["p99"] for r in results)
    lines = [
        f"## Admin surface at scale: {keys:,} keys, {rows:,} usage rows (30 days)",
        "",
        f"One admin client asks each page {runs} times in turn, over HTTP, of `poolgate serve` on SQLite "
        "(generated usage written as the gateway writes it: rows, and the hourly and daily totals). "
        f"The bar is {BAR_MS:.0f} ms at p99; the slowest page's p99 is **{worst:.0f} ms**.",
        "",
        "| page | p50 ms | p99 ms | max ms | body |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(f"| `{r['path']}` | {r['p50']:.1f} | {r['p99']:.1f} | {r['max']:.1f} | {r['bytes'] / 1024:.0f} KiB |")
    body = "\n".join(lines)
    print(body)
    if write:
        write_section("admin", body)
    return 0 if worst <= BAR_MS else 1
