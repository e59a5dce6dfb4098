"""Generated usage that looks like a team's: keys, and requests spread over days with a working-hours rhythm,
a few heavy users, several models and accounts, some errors. Written as the gateway writes it (rows, and the
hourly and daily totals), for the dashboard's screenshots and the admin benchmark.
"""

from __future__ import annotations

import math
import random
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text

from app._db import COUNTERS, create_engine
from app.settings import Settings
from app.usage._recorder import USAGE
from app.usage._rollup import UPSERTS, Rollups
from keys import Policy, Quotas, generate_token, hash_secret
from keys._store import KEYS

__all__ = ["TEAM", "fill"]

TEAM = ("codex-ci", "platform-team", "data-pipeline", "support-bot", "mobile-app", "research", "design-tools",
        "eval-harness", "docs-writer", "oncall")

# (model, share of requests, input price, output price per 1M tokens, typical output tokens)
MODELS = (("gpt-5.1-codex", 0.34, 1.25, 10.0, 900), ("gpt-5", 0.22, 1.25, 10.0, 600),
          ("gpt-5-mini", 0.26, 0.25, 2.0, 300), ("o3", 0.08, 2.0, 8.0, 1200), ("text-embedding-3-small", 0.10, 0.02,
                                                                                   0.0, 0))
UPSTREAMS = (("acct-1", 0.45), ("acct-2", 0.35), ("acct-3", 0.20))


@dataclass
class Sample:
    keys: list[tuple[str, str, str]]
    """(name, id, token) of every key made."""
    rows: int


def _pick(rng: random.Random, weighted: tuple[tuple[Any, ...], ...]) -> tuple[Any, ...]:
    roll, seen = rng.random(), 0.0
    for item in weighted:
        seen += item[1]
        if roll <= seen:
            return item
    return weighted[-1]


def _moment(rng: random.Random, now: float, days: int) -> float:
    """A moment in the last ``days``, more of them in working hours and on weekdays, and more recently."""
    while True:
        ago = rng.random() ** 0.8 * days * 86400
        moment = now - ago
        hour = (moment % 86400) / 3600
        weekday = datetime.fromtimestamp(moment, UTC).weekday()
        weight = 0.15 + math.exp(-((hour - 14.0) ** 2) / 18.0)
        if weekday >= 5:
            weight *= 0.35
        if rng.random() < weight:
            return moment


async def fill(settings: Settings, *, keys: int, rows: int, days: int = 30, seed: int = 7,
               names: tuple[str, ...] = TEAM) -> Sample:
    """Make ``keys`` keys (the first named from ``names``) and ``rows`` finished requests among them."""
    rng = random.Random(seed)
    engine = create_engine(settings)
    now = time.time()
    made: list[tuple[str, str, str]] = []
    policies = [Policy(allowed_models=("*",), quotas=Quotas(rpm=600, budget_usd=200.0, budget_period="month")),
                Policy(allowed_models=("gpt-5*", "o3"), quotas=Quotas(rpm=120, tpm=400_000)),
                Policy(allowed_models=("gpt-5-mini", "text-embedding-3-small"), quotas=Quotas(rpd=20_000))]
    stamp = datetime.fromtimestamp(now - days * 86400, UTC)
    async with engine.begin() as conn:
        batch: list[dict[str, Any]] = []
        for i in range(keys):
            token, parts = generate_token()
            name = names[i] if i < len(names) else f"user-{i:05d}"
            made.append((name, parts.public_id, token))
            batch.append({"id": parts.public_id, "name": name, "secret_hash": hash_secret(parts.secret),
                          "policy": policies[i % len(policies)].to_dict(), "disabled": False,
                          "created_at": stamp, "updated_at": stamp, "revision": i + 1})
            if len(batch) == 5000:
                await conn.execute(KEYS.insert(), batch)
                batch = []
        if batch:
            await conn.execute(KEYS.insert(), batch)
        await conn.execute(COUNTERS.update().where(COUNTERS.c.name == "keys").values(value=COUNTERS.c.value + keys))
    # A few keys do most of the work, as on a real team.
    weights = [1.0 / (rank + 1) ** 1.1 for rank in range(keys)]
    chosen = rng.choices(range(keys), weights=weights, k=rows)
    instance = secrets.token_hex(4)
    written = 0
    while written < rows:
        size = min(20_000, rows - written)
        batch, rollups = [], Rollups()
        for n in range(written, written + size):
            model, _, price_in, price_out, typical = _pick(rng, MODELS)
            upstream = _pick(rng, UPSTREAMS)[0]
            started = _moment(rng, now, days)
            failed = rng.random() < 0.025
            tokens_in = int(rng.lognormvariate(7.2, 1.0))
            tokens_out = 0 if failed or not typical else int(rng.lognormvariate(math.log(typical), 0.7))
            latency = rng.lognormvariate(math.log(250 + tokens_out * 12), 0.5)
            row = {
                "request_id": f"req_sample_{seed}_{n}", "key_id": made[chosen[n]][1], "upstream": upstream,
                "model": model, "endpoint": "embeddings" if not typical else "responses", "stream": bool(typical),
                "status": "error" if failed else "ok", "http_status": 502 if failed else 200,
                "input_tokens": tokens_in, "output_tokens": tokens_out, "cached_tokens": tokens_in // 3,
                "reasoning_tokens": tokens_out // 4, "cost_usd": 0.0 if failed else (
                    tokens_in * price_in + tokens_out * price_out) / 1e6,
                "latency_ms": latency, "ttfb_ms": latency / 5, "error": "upstream_error" if failed else None,
                "instance": instance, "started_at": started, "finished_at": started + latency / 1000,
            }
            rollups.add(row)
            batch.append({**row, "started_at": datetime.fromtimestamp(started, UTC),
                          "finished_at": datetime.fromtimestamp(started + latency / 1000, UTC)})
        async with engine.begin() as conn:
            await conn.execute(USAGE.insert(), batch)
            for table, params in rollups.params().items():
                await conn.execute(text(UPSERTS[table]), params)
        written += size
    await engine.dispose()
    return Sample(made, rows)
