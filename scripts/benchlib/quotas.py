"""``scripts/bench quotas``: what per-key quotas cost, in one run.

In-process: the full per-request quota work (request windows, token reservation and
settlement) at 1, 10,000 and 100,000 active keys, and the longest event-loop stall
while expired windows are swept, with the ``limits`` memory storage as shipped and
with poolgate's sliced sweep. End to end: relay throughput for a key with quotas
(every check runs, none refuses) against a key without, and the speed of the 429 path.
"""

from __future__ import annotations

import asyncio
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from limits.aio.storage import MemoryStorage
from limits.aio.strategies import SlidingWindowCounterRateLimiter

from app._db import upgrade
from app.quota import QuotaService
from app.quota._windows import MemoryWindows
from app.settings import Settings
from keys import KeyRecord, Policy, Quotas
from scripts.benchlib.common import percentile, write_section
from scripts.benchlib.proxy import _wrk_post, start_fake
from tests.support import ServerProcess, add_upstreams, create_key, free_port

QUOTAS = Quotas(rpm=1_000_000, rpd=100_000_000, tpm=1_000_000_000, tpd=1_000_000_000, max_concurrency=10_000)


def _key(index: int) -> KeyRecord:
    return KeyRecord(
        id=f"key{index:06d}", name=f"k{index}", secret_digest=b"", previous_secret_digest=None,
        previous_expires_at=None, policy=Policy(allowed_models=("*",), quotas=QUOTAS), expires_at=None,
        disabled=False, revoked_at=None, created_at=0.0, updated_at=0.0, revision=1,
    )


async def _check_cost(active: int, calls: int) -> tuple[float, float]:
    quota = QuotaService("memory://")
    keys = [_key(i) for i in range(active)]
    for k in keys:  # every key has live windows
        await quota.take_request(k)
    import gc

    gc.collect()
    gc.freeze()  # as the server does after start-up
    samples = []
    clock = time.perf_counter_ns
    for _ in range(calls):
        k = random.choice(keys)
        started = clock()
        await quota.take_request(k)
        reservation, _ = await quota.reserve(k, 1200)
        await quota.settle(reservation, 900)
        samples.append((clock() - started) / 1000)
    gc.unfreeze()
    await quota.close()
    return percentile(samples, 50), percentile(samples, 99)


async def _stall(kind: str, active: int, seconds: float) -> float:
    """Longest gap a 1 ms ticker sees while hits for ``active`` keys keep expiring windows swept."""
    import gc

    if kind == "limits":
        from limits import RateLimitItemPerSecond

        limiter = SlidingWindowCounterRateLimiter(MemoryStorage())
        item = RateLimitItemPerSecond(1_000_000)  # one-second windows: they expire, and get swept, constantly

        async def hit(name: str) -> None:
            await limiter.hit(item, name)
    else:
        windows = MemoryWindows(sweep_every=1.0)

        async def hit(name: str) -> None:
            await windows.take(name, 1_000_000, 1)

    for i in range(active):
        await hit(f"key{i}")
    gc.collect()
    gc.disable()  # one-second windows churn far more objects than real ones: measure the storage, not the collector
    worst = 0.0
    deadline = time.perf_counter() + seconds

    async def ticker() -> None:
        nonlocal worst
        while time.perf_counter() < deadline:
            before = time.perf_counter()
            await asyncio.sleep(0.001)
            worst = max(worst, time.perf_counter() - before - 0.001)

    async def load() -> None:
        i = 0
        while time.perf_counter() < deadline:
            await hit(f"key{i % active}")
            i += 1
            if i % 100 == 0:
                await asyncio.sleep(0)

    await asyncio.gather(ticker(), load())
    gc.enable()
    return worst * 1000


def _stall_fresh(kind: str, active: int, seconds: float) -> float:
    """Each storage measured in a fresh process, so one's leftovers cannot slow the other."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return float(pool.apply(_run_stall, (kind, active, seconds)))


def _run_stall(kind: str, active: int, seconds: float) -> float:
    return asyncio.run(_stall(kind, active, seconds))


def _gateway_throughput(seconds: int, tmp: Path) -> dict[str, Any]:
    fake_port = free_port()
    fake = start_fake(fake_port, chunks=1, interval=0.0)
    settings = Settings(data_dir=tmp / "data", sync_interval=0.5)
    upgrade(settings)
    tokens = {
        "none": create_key(settings, "unlimited", Policy(allowed_models=("*",)))[1],
        "all": create_key(settings, "quotas", Policy(allowed_models=("*",), quotas=QUOTAS))[1],
        "refused": create_key(settings, "over", Policy(allowed_models=("*",), quotas=Quotas(rpm=1)))[1],
    }

    add_upstreams(settings, [{"name": "bench", "base_url": f"http://127.0.0.1:{fake_port}/v1", "models": "*"}])
    server = ServerProcess(settings, env={"POOLGATE_LOG_LEVEL": "warning"}).start()
    url = server.base_url + "/v1/chat/completions"
    results: dict[str, Any] = {}
    try:
        for name, token in tokens.items():
            _wrk_post(url, token, connections=32, seconds=1, tmp=tmp)  # warm up (and use up "over")
            results[name] = _wrk_post(url, token, connections=32, seconds=seconds, tmp=tmp)
    finally:
        server.stop()
        fake.terminate()
        fake.wait()
    return results


def main(*, quick: bool, write: bool) -> int:
    random.seed(11)
    calls = 5_000 if quick else 20_000
    sizes = (1, 10_000) if quick else (1, 10_000, 100_000)
    costs = {}
    for active in sizes:
        print(f"quota check cost at {active} active keys ...", flush=True)
        costs[active] = asyncio.run(_check_cost(active, calls))
    stall_keys = 20_000 if quick else 100_000
    print("event-loop stalls ...", flush=True)
    stalls = {
        "limits' MemoryStorage": _stall_fresh("limits", stall_keys, 3.0),
        "poolgate's memory windows": _stall_fresh("poolgate", stall_keys, 3.0),
    }
    print("end to end ...", flush=True)
    with tempfile.TemporaryDirectory(prefix="poolgate-bench-quotas-") as tmp:
        e2e = _gateway_throughput(3 if quick else 8, Path(tmp))
    rows = "\n".join(
        f"| quota work per request at {active:,} active keys, p50 / p99 | {p50:.1f} / {p99:.1f} us | p99 <= 30 us |"
        for active, (p50, p99) in costs.items())
    stall_rows = "\n".join(f"| longest event-loop stall, {name}, {stall_keys:,} keys | {ms:.1f} ms | <= 2 ms |"
                           for name, ms in stalls.items())
    none, quotas, refused = e2e["none"], e2e["all"], e2e["refused"]
    table = f"""## Quotas and usage accounting (`scripts/bench quotas`)

"Quota work per request" is everything a relayed request asks of the quota layer: its request windows
(per minute and per day), a token reservation in two windows, and the settlement to the real count.
Stalls: a 1 ms ticker runs beside a stream of hits on one-second windows for {stall_keys:,} keys, so
expired windows are swept continually; the collector is paused during it, since one-second windows churn
far more objects than minute and day windows do, so the number is the storage's own. End to end: wrk, 32 connections, non-streamed chat completions to
the fake upstream; usage rows are recorded in every run.

| measure | result | target |
|---|---|---|
{rows}
{stall_rows}
| relay throughput, key without quotas | {none.requests_per_second:,.0f} req/s (p99 {none.p99_ms:.1f} ms) | |
| relay throughput, key with every quota (none refusing) | {quotas.requests_per_second:,.0f} req/s (p99 {quotas.p99_ms:.1f} ms) | at most 15% lower |
| quotas on / off | {quotas.requests_per_second / none.requests_per_second:.2f} | >= 0.85 |
| the 429 path (a key over its request quota) | {refused.requests_per_second:,.0f} req/s (p99 {refused.p99_ms:.1f} ms) | at least the success path |
"""
    print(table)
    if write and not quick:
        write_section("quotas", table)
        print("written to docs/BENCHMARKS.md")
    return 0
