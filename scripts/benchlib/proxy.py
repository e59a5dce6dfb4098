"""``scripts/bench proxy``: what poolgate adds on top of an upstream, measured in one run.

Three targets answer the same requests: the fake upstream directly, nginx as a plain
pass-through to it, and poolgate (one uvicorn worker) in front of it. Reported: added
latency at one connection, throughput at p99 <= 50 ms, CPU per request and RSS of the
poolgate process, added time to first chunk for streams, and many concurrent streams.
The choice of upstream HTTP client (aiohttp vs httpx) is measured here too.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from app._db import upgrade
from app.settings import Settings
from keys import Policy
from scripts.benchlib.common import ROOT, percentile, write_section, wrk
from scripts.benchlib.common import start_nginx as common_start_nginx
from tests.support import ServerProcess, add_upstreams, create_key, free_port

CHAT = {"model": "gpt-5", "messages": [{"role": "user", "content": "Say hello to the benchmark."}]}


def start_fake(port: int, chunks: int, interval: float) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.fake_upstream", "--port", str(port), "--no-record", "--chunks", str(chunks),
         "--interval", str(interval), "--name", "bench"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    if "listening" not in proc.stdout.readline():
        raise SystemExit("the fake upstream did not start")
    return proc


def start_nginx(tmp: Path, port: int, upstream_port: int) -> subprocess.Popen[bytes] | None:
    proc = common_start_nginx(tmp, {port: [upstream_port]}, keepalive=256)
    if proc is None:
        print("nginx not found (Debian: apt-get install nginx-light); skipping the nginx column")
    return proc


def _wrk_post(url: str, token: str | None, *, connections: int, seconds: int, tmp: Path) -> Any:
    script = tmp / "post.lua"
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    script.write_text(
        'wrk.method = "POST"\n' + f"wrk.body = {json.dumps(json.dumps(CHAT))}\n"
        + "".join(f'wrk.headers["{k}"] = "{v}"\n' for k, v in headers.items())
    )
    return wrk(url, connections=connections, seconds=seconds, script=str(script))


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def _ttfc(url: str, token: str | None, count: int) -> list[float]:
    """Time to the first body chunk of a streamed chat completion, one request at a time (ms)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    body = {**CHAT, "stream": True}
    samples = []
    async with aiohttp.ClientSession() as session:
        for _ in range(count):
            started = time.perf_counter()
            async with session.post(url, json=body, headers=headers) as response:
                await response.content.readany()
                samples.append((time.perf_counter() - started) * 1000)
                response.close()  # only the first chunk matters here
    return samples[10:]  # the first few warm connections and caches


async def _concurrent_streams(url: str, token: str, streams: int) -> dict[str, float]:
    """Many streams at once: all must finish, and no gap between chunks may stretch far past the pacing."""
    headers = {"Authorization": f"Bearer {token}"}
    body = {**CHAT, "stream": True}
    gaps: list[float] = []
    completed = 0
    connector = aiohttp.TCPConnector(limit=0)

    async def one(session: aiohttp.ClientSession) -> None:
        nonlocal completed
        async with session.post(url, json=body, headers=headers) as response:
            last = time.perf_counter()
            async for _chunk in response.content.iter_any():
                now = time.perf_counter()
                gaps.append((now - last) * 1000)
                last = now
        completed += 1

    started = time.perf_counter()
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as session:
        await asyncio.gather(*(one(session) for _ in range(streams)))
    return {"completed": completed, "seconds": time.perf_counter() - started,
            "gap_p99_ms": percentile(gaps, 99), "gap_max_ms": max(gaps)}


async def _client_choice(url: str, requests: int, concurrency: int) -> dict[str, float]:
    """The same requests through aiohttp's and httpx's pooled clients; requests per second each."""
    import httpx

    body = json.dumps(CHAT).encode()
    headers = {"content-type": "application/json"}
    results = {}

    async def drive(send: Any) -> float:
        queue = iter(range(requests))

        async def worker() -> None:
            for _ in queue:
                await send()

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return requests / (time.perf_counter() - started)

    async with aiohttp.ClientSession() as session:
        async def aio() -> None:
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
        await drive(aio)
        results["aiohttp"] = await drive(aio)
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=concurrency)) as client:
        async def hx() -> None:
            await client.post(url, content=body, headers=headers)
        await drive(hx)
        results["httpx"] = await drive(hx)
    return results


def main(*, quick: bool, write: bool) -> int:
    seconds = 3 if quick else 8
    with tempfile.TemporaryDirectory(prefix="poolgate-bench-proxy-") as tmp_name:
        tmp = Path(tmp_name)
        fake_port, nginx_port = free_port(), free_port()
        fake = start_fake(fake_port, chunks=1, interval=0.0)
        nginx = start_nginx(tmp, nginx_port, fake_port)
        settings = Settings(data_dir=tmp / "data", sync_interval=0.5)
        upgrade(settings)
        _, token = create_key(settings, "bench", Policy(allowed_models=("*",)))

        add_upstreams(settings, [{"name": "bench", "base_url": f"http://127.0.0.1:{fake_port}/v1", "models": "*"}])
        server = ServerProcess(settings, env={"POOLGATE_LOG_LEVEL": "warning"}).start()
        targets = {"direct": f"http://127.0.0.1:{fake_port}/v1/chat/completions",
                   "poolgate": f"{server.base_url}/v1/chat/completions"}
        if nginx is not None:
            targets["nginx"] = f"http://127.0.0.1:{nginx_port}/v1/chat/completions"
        tokens = {"direct": None, "nginx": None, "poolgate": token}
        results: dict[str, Any] = {"latency": {}, "throughput": {}, "ttfc": {}}
        try:
            print("latency at 1 connection ...", flush=True)
            for name, url in targets.items():
                _wrk_post(url, tokens[name], connections=1, seconds=1, tmp=tmp)  # warm up
                results["latency"][name] = _wrk_post(url, tokens[name], connections=1, seconds=seconds, tmp=tmp)
            print("throughput ...", flush=True)
            assert server.process is not None
            pid = server.process.pid
            for name, url in targets.items():
                best = None
                for connections in (4, 8, 16, 32, 64):
                    cpu_before = _cpu_seconds(pid)
                    run = _wrk_post(url, tokens[name], connections=connections, seconds=seconds, tmp=tmp)
                    cpu = _cpu_seconds(pid) - cpu_before
                    print(f"  {name:9} {connections:3} connections: {run.requests_per_second:8,.0f} req/s, "
                          f"p50 {run.p50_ms:6.2f} ms, p99 {run.p99_ms:6.2f} ms, errors {run.errors}", flush=True)
                    if run.p99_ms <= 50 and (best is None or run.requests_per_second > best[0].requests_per_second):
                        best = (run, connections, cpu)
                results["throughput"][name] = best
            results["rss_mb"] = _rss_mb(pid)
            print("streams: time to first chunk ...", flush=True)
            fake.terminate()
            fake.wait()
            fake = start_fake(fake_port, chunks=64, interval=0.02)
            count = 60 if quick else 250
            for name in ("direct", "poolgate"):
                samples = asyncio.run(_ttfc(targets[name], tokens[name], count))
                results["ttfc"][name] = (percentile(samples, 50), percentile(samples, 99))
            print("streams: concurrent ...", flush=True)
            streams = 64 if quick else 256
            results["concurrent"] = asyncio.run(_concurrent_streams(targets["poolgate"], token, streams))
            results["concurrent"]["streams"] = streams
            print("upstream client choice ...", flush=True)
            fake.terminate()
            fake.wait()
            fake = start_fake(fake_port, chunks=1, interval=0.0)
            results["clients"] = asyncio.run(_client_choice(targets["direct"], 2000 if quick else 6000, 32))
        finally:
            server.stop()
            fake.terminate()
            if nginx is not None:
                nginx.terminate()
                nginx.wait()
    table = _report(results, seconds)
    print(table)
    if write and not quick:
        write_section("proxy", table)
        print("written to docs/BENCHMARKS.md")
    return 0


def _report(r: dict[str, Any], seconds: int) -> str:
    lat = r["latency"]
    direct, gate = lat["direct"], lat["poolgate"]
    nginx = lat.get("nginx")
    thr = r["throughput"]

    def tput(name: str) -> str:
        best = thr.get(name)
        if best is None:
            return "p99 above 50 ms at every level tried"
        run, connections, _ = best
        return f"{run.requests_per_second:,.0f} req/s ({connections} connections, p99 {run.p99_ms:.1f} ms)"

    gate_best = thr.get("poolgate")
    cpu_us = (gate_best[2] / (gate_best[0].requests_per_second * seconds) * 1e6) if gate_best else float("nan")
    ttfc = r["ttfc"]
    conc = r["concurrent"]
    clients = r["clients"]
    nginx_row = (f"| added by nginx (plain pass-through), p50 / p99 | {nginx.p50_ms - direct.p50_ms:.2f} / "
                 f"{nginx.p99_ms - direct.p99_ms:.2f} ms | |\n") if nginx else ""
    return f"""## Relay overhead (`scripts/bench proxy`)

Non-streamed chat completions through one uvicorn worker, compared in one run with the same requests sent
straight to the fake upstream and through nginx as a plain pass-through. wrk drives the load ({seconds} s a
step); added latency is the difference of the percentiles at one connection.

| measure | result | target |
|---|---|---|
| direct to upstream, 1 connection, p50 / p99 | {direct.p50_ms:.2f} / {direct.p99_ms:.2f} ms | |
| added by poolgate, p50 / p99 | {gate.p50_ms - direct.p50_ms:.2f} / {gate.p99_ms - direct.p99_ms:.2f} ms | p50 <= 0.6 ms, p99 <= 2 ms |
{nginx_row}| throughput at p99 <= 50 ms: direct | {tput("direct")} | |
| throughput at p99 <= 50 ms: nginx | {tput("nginx")} | |
| throughput at p99 <= 50 ms: poolgate | {tput("poolgate")} | >= 1,500 req/s |
| poolgate CPU per request (user + system, at that load) | {cpu_us:.0f} us | <= 400 us |
| poolgate RSS after the load | {r["rss_mb"]:.0f} MB | |
| streams, time to first chunk, direct p50 / p99 | {ttfc["direct"][0]:.2f} / {ttfc["direct"][1]:.2f} ms | |
| streams, time to first chunk, poolgate p50 / p99 | {ttfc["poolgate"][0]:.2f} / {ttfc["poolgate"][1]:.2f} ms | added p99 <= 3 ms |
| {conc["streams"]} concurrent streams of 64 chunks at 20 ms | {conc["completed"]} completed in {conc["seconds"]:.2f} s; gap between chunks p99 {conc["gap_p99_ms"]:.0f} ms, max {conc["gap_max_ms"]:.0f} ms | no stall |
| upstream client: aiohttp vs httpx, 32 concurrent, same requests | {clients["aiohttp"]:,.0f} vs {clients["httpx"]:,.0f} req/s | |

The upstream HTTP client is aiohttp, chosen on the last row: one pooled session per upstream.
"""
