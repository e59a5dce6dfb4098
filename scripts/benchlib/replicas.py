"""``scripts/bench replicas``: what a second replica buys, and what shared (Redis) quotas cost.

Replicas are ``poolgate serve`` processes on one fresh PostgreSQL database (dropped at the
end) with Redis limits, serving a key with request and token quotas. wrk drives the same
non-streamed chat completions straight to the fake upstream, to one replica behind nginx,
and to two replicas behind nginx, each level of connections in turn for all three, so
their ratios come from the same minutes. CPU time of every process involved is read from
``/proc`` during each step, to show where a second replica's gain goes.

The quota part: the per-request quota work timed in this process against ``memory://`` and
against Redis, and one replica's throughput with each (the ``memory://`` one on the same
database, with ``POOLGATE_SINGLE_INSTANCE=true``).

PostgreSQL and Redis are taken from ``POOLGATE_BENCH_PG_SERVER`` (default
``postgresql+asyncpg://postgres@127.0.0.1:5432``) and ``POOLGATE_BENCH_REDIS_URL``
(default ``redis://127.0.0.1:6379/0``).
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet

from app.quota import QuotaService
from app.settings import Settings
from keys import KeyRecord, Policy, Quotas
from scripts.benchlib.common import WrkResult, percentile, start_nginx, write_section, wrk
from scripts.benchlib.proxy import start_fake
from tests.support import ServerProcess, add_upstreams, create_key, free_port

PG_SERVER = os.environ.get("POOLGATE_BENCH_PG_SERVER", "postgresql+asyncpg://postgres@127.0.0.1:5432")
REDIS_URL = os.environ.get("POOLGATE_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
# High enough that nothing is refused, so every request runs every window in Redis.
QUOTAS = Quotas(rpm=100_000_000, rpd=1_000_000_000, tpm=1_000_000_000, tpd=1_000_000_000)
# max_tokens keeps the token estimate small; settling it to the real (smaller) count is a refund.
CHAT = {"model": "gpt-5", "max_tokens": 256, "messages": [{"role": "user", "content": "Say hello to the benchmark."}]}
LEVELS = (16, 32, 64, 128)  # wrk connections; latency is reported at FIXED
FIXED = 32


# -- in-process quota work ---------------------------------------------------------------------


def _key(index: str) -> KeyRecord:
    return KeyRecord(
        id=f"bench{index}", name="bench", secret_digest=b"", previous_secret_digest=None,
        previous_expires_at=None, policy=Policy(allowed_models=("*",), quotas=QUOTAS), expires_at=None,
        disabled=False, revoked_at=None, created_at=0.0, updated_at=0.0, revision=1,
    )


async def _one_request(quota: QuotaService, key: KeyRecord) -> None:
    """What one relayed request asks of the quota layer: request windows, reservation, settlement."""
    await quota.take_request(key)
    reservation, _ = await quota.reserve(key, 1200)
    await quota.settle(reservation, 900)


async def _quota_cost(url: str, calls: int) -> tuple[float, float, float]:
    """p50 and p99 of one request's quota work, and the CPU this process spends on it (us)."""
    quota = QuotaService(url)
    key = _key(uuid.uuid4().hex[:12])  # fresh windows in a Redis others may be using
    clock = time.perf_counter_ns
    samples = []
    try:
        for _ in range(200):  # open connections, load scripts, warm caches
            await _one_request(quota, key)
        cpu = time.process_time()
        for _ in range(calls):
            started = clock()
            await _one_request(quota, key)
            samples.append((clock() - started) / 1000)
        cpu = time.process_time() - cpu
    finally:
        await quota.close()
    return percentile(samples, 50), percentile(samples, 99), cpu / calls * 1e6


async def _round_trips(calls: int) -> float:
    """Redis commands one request's quota work sends, counted at the client (the server's count has others')."""
    from app._redis import RedisLink as Redis

    sent = 0
    original = Redis.call

    async def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
        nonlocal sent
        sent += 1
        return await original(self, *args, **kwargs)

    quota = QuotaService(REDIS_URL)
    key = _key(uuid.uuid4().hex[:12])
    try:
        await _one_request(quota, key)
        Redis.call = counted  # type: ignore[method-assign]
        for _ in range(calls):
            await _one_request(quota, key)
    finally:
        Redis.call = original  # type: ignore[method-assign]
        await quota.close()
    return sent / calls


def _background(seconds: float) -> float:
    """Cores busy on the machine before anything of ours starts (other people's work)."""
    before = _machine()
    time.sleep(seconds)
    after = _machine()
    return (after[0] - before[0]) / max(1, after[1] - before[1]) * (os.cpu_count() or 1)


# -- databases, processes, CPU -----------------------------------------------------------------


async def _pg(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_SERVER.replace("postgresql+asyncpg://", "postgresql://") + "/postgres")
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextmanager
def _database() -> Iterator[str]:
    name = f"poolgate_bench_{uuid.uuid4().hex[:12]}"
    asyncio.run(_pg(f'CREATE DATABASE "{name}"'))
    try:
        yield f"{PG_SERVER}/{name}"
    finally:
        asyncio.run(_pg(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _nginx(tmp: Path, sites: dict[int, list[int]]) -> subprocess.Popen[bytes]:
    proc = start_nginx(tmp, sites, keepalive=64)
    if proc is None:
        raise SystemExit("nginx is needed to balance the replicas: apt-get install nginx-light")
    return proc


def _proc_cpu(pid: int) -> float | None:
    """User + system CPU seconds of a process; None once it has gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _used(pids: list[int], before: list[float | None]) -> float:
    """CPU seconds the processes used since ``before``; one that came or went in between counts nothing."""
    total = 0.0
    for pid, earlier in zip(pids, before, strict=True):
        later = _proc_cpu(pid)
        if earlier is not None and later is not None and later >= earlier:
            total += later - earlier
    return total


def _named(prefix: str) -> list[int]:
    """Processes whose command name starts with ``prefix`` (Redis, PostgreSQL's backends)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().startswith(prefix):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _machine() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine: every process, ours or not."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


@dataclass
class Step:
    target: str
    connections: int
    run: WrkResult
    cores: dict[str, float] = field(default_factory=dict)
    """CPU used during the step, in cores (CPU seconds per second), by group, and "machine" for all of it."""


Groups = dict[str, Callable[[], list[int]]]


def _load(target: str, url: str, token: str | None, connections: int, seconds: int, script: Path,
          groups: Groups) -> Step:
    script.write_text(
        'wrk.method = "POST"\n' + f"wrk.body = {json.dumps(json.dumps(CHAT))}\n"
        + 'wrk.headers["Content-Type"] = "application/json"\n'
        + (f'wrk.headers["Authorization"] = "Bearer {token}"\n' if token else "")
    )
    pids = {name: find() for name, find in groups.items()}
    before = {name: [_proc_cpu(pid) for pid in found] for name, found in pids.items()}
    machine_before = _machine()
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    run = wrk(url, connections=connections, seconds=seconds, script=str(script), timeout=10)
    wall = time.monotonic() - started
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    machine_after = _machine()
    cores = {name: _used(found, before[name]) / wall for name, found in pids.items()}
    cores["wrk"] = (children.ru_utime + children.ru_stime - children_before.ru_utime - children_before.ru_stime) / wall
    busy = machine_after[0] - machine_before[0]
    cores["machine"] = busy / max(1, machine_after[1] - machine_before[1]) * (os.cpu_count() or 1)
    print(f"  {target:22} {connections:3} connections: {run.requests_per_second:7,.0f} req/s, "
          f"p50 {run.p50_ms:7.2f} ms, p99 {run.p99_ms:7.2f} ms, errors {run.errors}; cores: "
          + ", ".join(f"{name} {used:.2f}" for name, used in cores.items()), flush=True)
    return Step(target, connections, run, cores)


# -- the run -----------------------------------------------------------------------------------


def _serve(settings: Settings, **env: str) -> ServerProcess:
    return ServerProcess(settings, env={"POOLGATE_LOG_LEVEL": "warning",
                                        "POOLGATE_ENCRYPTION_KEYS": ",".join(settings.encryption_keys), **env})


def _pid(server: ServerProcess) -> int:
    assert server.process is not None
    return server.process.pid


@dataclass
class EndToEnd:
    steps: list[Step]
    limits: dict[str, list[Step]]
    """One replica straight (no nginx), "redis" and "memory" limits, each measured twice."""


def _end_to_end(seconds: int, levels: tuple[int, ...], tmp: Path) -> EndToEnd:
    fake_port = free_port()
    fake = start_fake(fake_port, chunks=1, interval=0.0)
    script = tmp / "post.lua"
    started: list[ServerProcess] = []
    nginx: subprocess.Popen[bytes] | None = None
    try:
        with _database() as database_url:
            settings = Settings(data_dir=tmp / "data", database_url=database_url, limits_url=REDIS_URL,
                                encryption_keys=(Fernet.generate_key().decode(),))
            add_upstreams(settings, [{"name": "bench", "base_url": f"http://127.0.0.1:{fake_port}/v1",
                                      "models": "*"}])
            _, token = create_key(settings, "bench", Policy(allowed_models=("*",), quotas=QUOTAS))
            first, second = _serve(settings), _serve(settings)
            started += [first, second]
            for replica in started:
                replica.start()
            one_port, two_port = free_port(), free_port()
            balancer = nginx = _nginx(tmp, {one_port: [first.port], two_port: [first.port, second.port]})
            targets = {
                "direct": (f"http://127.0.0.1:{fake_port}/v1/chat/completions", None),
                "one replica": (f"http://127.0.0.1:{one_port}/v1/chat/completions", token),
                "two replicas": (f"http://127.0.0.1:{two_port}/v1/chat/completions", token),
            }
            groups: Groups = {
                "poolgate": lambda: [_pid(first), _pid(second)],
                "nginx": lambda: [balancer.pid, *_children(balancer.pid)],
                "fake upstream": lambda: [fake.pid],
                "Redis": lambda: _named("redis-server"),
                "PostgreSQL": lambda: _named("postgres"),
            }
            print("direct, one replica and two behind nginx ...", flush=True)
            for target, (url, key) in targets.items():
                _load(target, url, key, FIXED, 1, script, groups)  # warm up connections and caches
            steps = [_load(target, url, key, connections, seconds, script, groups)
                     for connections in levels for target, (url, key) in targets.items()]
            second.stop()
            print("one replica, Redis vs memory:// limits ...", flush=True)
            local = _serve(settings.with_overrides(limits_url="memory://"), POOLGATE_SINGLE_INSTANCE="true")
            started.append(local)
            local.start()
            replicas = {"redis": first, "memory": local}
            groups = {"poolgate": lambda: [_pid(first), _pid(local)], "Redis": groups["Redis"],
                      "PostgreSQL": groups["PostgreSQL"], "fake upstream": groups["fake upstream"]}
            for replica in replicas.values():
                _load("warm", f"{replica.base_url}/v1/chat/completions", token, FIXED, 1, script, groups)
            limits: dict[str, list[Step]] = {"redis": [], "memory": []}
            for _ in range(2):  # interleaved, so drifting load on the machine hits both alike
                for name, replica in replicas.items():
                    limits[name].append(_load(f"{name} limits, direct", f"{replica.base_url}/v1/chat/completions",
                                              token, FIXED, seconds, script, groups))
            for replica in reversed(started):  # before the database goes
                replica.stop()
    finally:
        for replica in started:
            replica.stop()
        if nginx is not None:
            nginx.terminate()
            nginx.wait()
        fake.terminate()
        fake.wait()
    return EndToEnd(steps, limits)


def main(*, quick: bool, write: bool) -> int:
    seconds = 2 if quick else 6
    print("background load ...", flush=True)
    background, load_average = _background(3.0), os.getloadavg()[0]
    print(f"  {background:.2f} cores busy before the run, load average {load_average:.2f}", flush=True)
    print("quota work in process, memory:// vs Redis ...", flush=True)
    cost = {"memory": asyncio.run(_quota_cost("memory://", 2_000 if quick else 20_000)),
            "redis": asyncio.run(_quota_cost(REDIS_URL, 300 if quick else 2_000))}
    trips = asyncio.run(_round_trips(20))
    with tempfile.TemporaryDirectory(prefix="poolgate-bench-replicas-") as tmp:
        e2e = _end_to_end(seconds, LEVELS[:2] if quick else LEVELS, Path(tmp))
    table = _report(cost, trips, e2e, seconds, background, load_average)
    print(table)
    if write and not quick:
        write_section("replicas", table)
        print("written to docs/BENCHMARKS.md")
    return 0


def _report(cost: dict[str, tuple[float, float, float]], trips: float, e2e: EndToEnd, seconds: int,
            background: float, load_average: float) -> str:
    steps, cpus = e2e.steps, os.cpu_count() or 1

    def at(target: str, connections: int) -> Step:
        return next(s for s in steps if s.target == target and s.connections == connections)

    def best(target: str) -> Step:
        mine = [s for s in steps if s.target == target]
        return max([s for s in mine if s.run.errors == 0] or mine, key=lambda s: s.run.requests_per_second)

    rows = []
    for target in ("direct", "one replica", "two replicas"):
        fixed, top = at(target, FIXED), best(target)
        errors = sum(s.run.errors for s in steps if s.target == target)
        rows.append(
            f"| {target} | {fixed.run.requests_per_second:,.0f} req/s, p50 {fixed.run.p50_ms:.1f} / "
            f"p99 {fixed.run.p99_ms:.1f} ms | {top.run.requests_per_second:,.0f} req/s "
            f"({top.connections} connections, p99 {top.run.p99_ms:.1f} ms) | {errors} |")
    one, two = best("one replica"), best("two replicas")
    names = ("poolgate", "Redis", "PostgreSQL", "nginx", "fake upstream", "wrk")

    def per_request(step: Step) -> float:
        return step.cores["poolgate"] / step.run.requests_per_second * 1e6

    def cpu_row(step: Step) -> str:
        ours = sum(step.cores[name] for name in names)
        return (f"| {step.target} ({step.connections} connections) | "
                + " | ".join(f"{step.cores[name]:.2f}" for name in names)
                + f" | {step.cores['machine'] - ours:.2f} | {step.cores['machine']:.2f} | {per_request(step):,.0f} us |")

    rest = two.cores["machine"] - two.cores["poolgate"]

    def mean(name: str) -> tuple[float, float, float]:
        runs = e2e.limits[name]
        return (sum(s.run.requests_per_second for s in runs) / len(runs), max(s.run.p99_ms for s in runs),
                sum(s.cores["poolgate"] / s.run.requests_per_second for s in runs) / len(runs) * 1e6)

    redis, memory = mean("redis"), mean("memory")
    redis_cores = sum(s.cores["Redis"] for s in e2e.limits["redis"]) / len(e2e.limits["redis"])
    mem, red = cost["memory"], cost["redis"]
    return f"""## Replicas on PostgreSQL and Redis (`scripts/bench replicas`)

Replicas are `poolgate serve` processes (one uvicorn worker each) on one PostgreSQL database with their
quota windows in Redis, serving a key with request and token quotas per minute and per day, high enough
that none refuses, so every request takes all its windows in Redis. nginx (one worker, keep-alive to the
replicas) balances them. wrk sends non-streamed chat completions, {seconds} s a step; each level of
connections runs against all three targets in turn, so the ratios come from the same minutes. The fake
upstream, nginx, wrk, Redis, PostgreSQL and the replicas all share the machine's {cpus} cores.

| target | {FIXED} connections | most req/s over {", ".join(str(c) for c in LEVELS)} connections | errors |
|---|---|---|---|
{chr(10).join(rows)}

**Two replicas / one: {two.run.requests_per_second / one.run.requests_per_second:.2f}.** CPU during those
two steps, in cores (CPU seconds per second, from `/proc`; PostgreSQL counts all its processes, "other" is
everything else on the machine):

| step | poolgate | Redis | PostgreSQL | nginx | fake | wrk | other | machine | poolgate CPU per request |
|---|---|---|---|---|---|---|---|---|---|
{cpu_row(one)}
{cpu_row(two)}

One replica is one Python process with one event loop, so it can use one core at most: here
{one.cores["poolgate"]:.2f}, with the machine {one.cores["machine"]:.2f} of {cpus} cores busy. Two replicas got
{two.cores["poolgate"]:.2f} cores between them, not 2: the load generator, balancer, upstream, Redis and
PostgreSQL run on the same {cpus} cores ({rest:.2f} cores at that step, other work included), and poolgate's
CPU per request went from {per_request(one):,.0f} to {per_request(two):,.0f} us as the replicas competed for them.
On {cpus} cores a second replica can only add what the first one leaves idle.

Quota work per request (what a relayed request asks of the quota layer: its request windows per minute
and per day, a token reservation in two windows, the settlement to the real count), and one replica,
straight (no nginx), with either store:

| measure | memory:// | Redis |
|---|---|---|
| in process, p50 / p99 | {mem[0]:.1f} / {mem[1]:.1f} us | {red[0]:,.0f} / {red[1]:,.0f} us |
| in process, CPU of the calling process per request | {mem[2]:.1f} us | {red[2]:,.0f} us |
| Redis round trips per request | 0 | {trips:.0f} |
| one replica, {FIXED} connections | {memory[0]:,.0f} req/s (p99 {memory[1]:.1f} ms) | {redis[0]:,.0f} req/s (p99 {redis[1]:.1f} ms) |
| poolgate CPU per request | {memory[2]:,.0f} us | {redis[2]:,.0f} us |

Redis / memory:// throughput: **{redis[0] / memory[0]:.2f}**. Each request's quota work makes {trips:.0f} round trips
to Redis (one Lua script takes both request windows, one the token reservation in both token windows,
one the settlement; a key with a concurrency limit adds two more), each costing the replica about {red[2] / trips:.0f} us of CPU,
while Redis itself used {redis_cores:.2f} cores. The memory:// replica runs on the same database with
`POOLGATE_SINGLE_INSTANCE=true`; each store was measured twice, interleaved, and averaged.

Machine conditions: before the run {background:.2f} of {cpus} cores were busy with other work (load average
{load_average:.1f}); "other" in the CPU table is work outside this benchmark during those steps.
"""
