"""``scripts/bench proxy``: what poolgate adds on top of an upstream, with every feature on, measured in one run.

The upstream is a mock that costs next to nothing: nginx answering every request with a fixed chat
completion (``return 200``), so what is measured is the proxy. The same requests go to the mock directly,
through nginx as a plain pass-through, through poolgate as a team runs it (one uvicorn worker; a key with
request and token quotas; usage rows on SQLite; metrics; the access log at info), and through LiteLLM
(one worker, installed from PyPI into ``.cache/``; skipped, saying why, when it cannot be installed).

Reported: added latency at one connection (the difference of wrk's percentiles), requests per second at
32 connections, poolgate's CPU per request (from /proc), added time to the first chunk of a stream (the
project's fake upstream streams), RSS at start and over a soak. ``--quick`` shortens every step.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp

from app._db import upgrade
from app.settings import Settings
from keys import Policy, Quotas
from scripts.benchlib.common import ROOT, WrkResult, nginx_conf, percentile, port_open, write_section, wrk
from tests.support import ServerProcess, add_upstreams, create_key, free_port, wait_for

CHAT = {"model": "gpt-5", "messages": [{"role": "user", "content": "Say hello to the benchmark."}]}
ANSWER = json.dumps({
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 1700000000, "model": "gpt-5",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello, benchmark."},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 4, "total_tokens": 16}})
BEFORE = {"added_p50": 0.80, "cpu_us": 727, "rps": 1421, "rss_start": 129, "rss_after": 172}
"""The same measures on the code before this round of work (issue filed from main at f02b289)."""
GOALS = {"cpu_us": 350, "rps": 2800, "added_p50": 0.4, "added_p99": 1.5, "ttfc_p99": 2.0, "rss_start": 100}
LITELLM = ROOT / ".cache" / "litellm"
METRICS_TOKEN = "bench-metrics-token"
LITELLM_KEY = "sk-bench-" + "0123456789abcdef" * 2
CONNECTIONS = 32


def start_fake(port: int, chunks: int, interval: float) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.fake_upstream", "--port", str(port), "--no-record", "--chunks", str(chunks),
         "--interval", str(interval), "--name", "bench"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    if "listening" not in proc.stdout.readline():
        raise SystemExit("the fake upstream did not start")
    return proc


def start_mock(tmp: Path, mock_port: int, pass_port: int) -> subprocess.Popen[bytes]:
    """nginx: a mock upstream answering a fixed completion, and a plain pass-through in front of it."""
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(binary).exists():
        raise SystemExit("nginx is needed for the mock upstream: apt-get install nginx-light")
    body = ANSWER.replace("\\", "\\\\").replace("'", "\\'")
    (tmp / "nginx.conf").write_text(nginx_conf(tmp, f"""  keepalive_requests 1000000;
  server {{ listen 127.0.0.1:{mock_port};
    location / {{ default_type application/json; client_body_buffer_size 64k; return 200 '{body}'; }} }}
  upstream mock {{ server 127.0.0.1:{mock_port}; keepalive 256; }}
  server {{ listen 127.0.0.1:{pass_port};
    location / {{ proxy_pass http://mock; proxy_http_version 1.1; proxy_set_header Connection "";
                 proxy_buffering off; }} }}
"""))
    proc = subprocess.Popen([binary, "-c", str(tmp / "nginx.conf"), "-e", str(tmp / "nginx-error.log")])
    for port in (mock_port, pass_port):
        wait_for(lambda port=port: port_open(port), timeout=10, what="nginx")
    return proc


def start_litellm(tmp: Path, port: int, mock_port: int) -> tuple[subprocess.Popen[bytes] | None, str]:
    """LiteLLM's proxy, one worker, in front of the same mock; (None, why) when it cannot run here."""
    python = LITELLM / "bin" / "python"
    if not python.exists():
        print("installing LiteLLM from PyPI into .cache/litellm (once) ...", flush=True)
        made = subprocess.run([sys.executable, "-m", "venv", str(LITELLM)], check=False, capture_output=True,
                              text=True)
        if made.returncode != 0:
            return None, f"could not make a venv: {made.stderr.strip()[:200]}"
        done = subprocess.run([str(python), "-m", "pip", "install", "--quiet", "litellm[proxy]"],
                              check=False, capture_output=True, text=True, timeout=1200)
        if done.returncode != 0:
            shutil.rmtree(LITELLM, ignore_errors=True)
            return None, f"pip install litellm[proxy] failed: {done.stderr.strip()[-300:]}"
    config = tmp / "litellm.yaml"
    config.write_text(f"""model_list:
  - model_name: gpt-5
    litellm_params:
      model: openai/gpt-5
      api_base: http://127.0.0.1:{mock_port}/v1
      api_key: sk-bench
litellm_settings:
  telemetry: false
""")
    log = (tmp / "litellm.log").open("wb")
    proc = subprocess.Popen([str(LITELLM / "bin" / "litellm"), "--config", str(config), "--port", str(port),
                             "--host", "127.0.0.1", "--num_workers", "1"], stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "LITELLM_LOG": "ERROR", "LITELLM_MASTER_KEY": LITELLM_KEY})
    try:
        wait_for(lambda: port_open(port) or proc.poll() is not None, timeout=180, what="LiteLLM to listen")
    except AssertionError:
        proc.kill()
        return None, "LiteLLM did not start within 3 minutes"
    if proc.poll() is not None:
        return None, f"LiteLLM exited: {(tmp / 'litellm.log').read_text()[-300:]}"
    return proc, ""


def _wrk_post(url: str, token: str | None, *, connections: int, seconds: int, tmp: Path) -> WrkResult:
    script = tmp / "post.lua"
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    script.write_text(
        'wrk.method = "POST"\n' + f"wrk.body = {json.dumps(json.dumps(CHAT))}\n"
        + "".join(f'wrk.headers["{k}"] = "{v}"\n' for k, v in headers.items())
    )
    return wrk(url, connections=connections, seconds=seconds, script=str(script), timeout=10)


def _relayed(base_url: str) -> int:
    """Requests poolgate counted (its metrics), to hold the usage rows written against."""
    request = urllib.request.Request(f"{base_url}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        text = answer.read().decode()
    return sum(int(float(line.rsplit(" ", 1)[1])) for line in text.splitlines()
               if line.startswith("poolgate_requests_total{"))


def _usage_rows(settings: Settings) -> int:
    """Usage rows in the database after the server stopped (a clean stop writes every queued row)."""
    with sqlite3.connect(settings.data_dir / "poolgate.db") as db:
        return int(db.execute("SELECT count(*) FROM usage").fetchone()[0])


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
    body = {**CHAT, "model": "gpt-5-mini", "stream": True}
    samples = []
    async with aiohttp.ClientSession() as session:
        for _ in range(count):
            started = time.perf_counter()
            async with session.post(url, json=body, headers=headers) as response:
                await response.content.readany()
                samples.append((time.perf_counter() - started) * 1000)
                await response.read()
    return samples[10:]  # the first few warm connections and caches


def main(*, quick: bool, write: bool) -> int:
    seconds = 3 if quick else 10
    soak = 20 if quick else 600
    with tempfile.TemporaryDirectory(prefix="poolgate-bench-proxy-") as tmp_name:
        tmp = Path(tmp_name)
        mock_port, pass_port, fake_port, litellm_port = free_port(), free_port(), free_port(), free_port()
        nginx = start_mock(tmp, mock_port, pass_port)
        fake = start_fake(fake_port, chunks=64, interval=0.0)
        settings = Settings(data_dir=tmp / "data", sync_interval=0.5)
        upgrade(settings)
        _, token = create_key(settings, "bench", Policy(
            allowed_models=("*",), quotas=Quotas(rpm=1_000_000_000, tpm=1_000_000_000)))
        add_upstreams(settings, [
            {"name": "mock", "base_url": f"http://127.0.0.1:{mock_port}/v1", "models": "gpt-5"},
            {"name": "streams", "base_url": f"http://127.0.0.1:{fake_port}/v1", "models": "gpt-5-mini"}])
        server = ServerProcess(settings, env={"POOLGATE_LOG_LEVEL": "info",
                                              "POOLGATE_METRICS_TOKEN": METRICS_TOKEN}).start()
        assert server.process is not None
        pid = server.process.pid
        litellm, why_not = start_litellm(tmp, litellm_port, mock_port)
        targets = {"direct": f"http://127.0.0.1:{mock_port}/v1/chat/completions",
                   "nginx": f"http://127.0.0.1:{pass_port}/v1/chat/completions",
                   "poolgate": f"{server.base_url}/v1/chat/completions"}
        if litellm is not None:
            targets["litellm"] = f"http://127.0.0.1:{litellm_port}/v1/chat/completions"
        tokens = {"poolgate": token, "litellm": LITELLM_KEY}
        r: dict[str, Any] = {"latency": {}, "load": {}, "litellm_skipped": why_not}
        try:
            time.sleep(2)  # the start-up's own work settles
            r["rss_start"] = _rss_mb(pid)
            print("latency at 1 connection ...", flush=True)
            for name, url in targets.items():
                _wrk_post(url, tokens.get(name), connections=1, seconds=2, tmp=tmp)  # warm up
                r["latency"][name] = _wrk_post(url, tokens.get(name), connections=1, seconds=seconds, tmp=tmp)
                print(f"  {name:9} p50 {r['latency'][name].p50_ms:.3f} ms p99 {r['latency'][name].p99_ms:.3f} ms",
                      flush=True)
            print(f"load at {CONNECTIONS} connections ...", flush=True)
            for name, url in targets.items():
                cpu_before = _cpu_seconds(pid)
                run = _wrk_post(url, tokens.get(name), connections=CONNECTIONS, seconds=seconds, tmp=tmp)
                cpu = _cpu_seconds(pid) - cpu_before
                r["load"][name] = run
                if name == "poolgate":
                    r["cpu_us"] = cpu / (run.requests_per_second * seconds) * 1e6
                print(f"  {name:9} {run.requests_per_second:9,.0f} req/s p99 {run.p99_ms:.1f} ms "
                      f"errors {run.errors}", flush=True)
            print("streams: time to first chunk ...", flush=True)
            count = 60 if quick else 400
            r["ttfc"] = {
                "direct": asyncio.run(_ttfc(f"http://127.0.0.1:{fake_port}/v1/chat/completions", None, count)),
                "poolgate": asyncio.run(_ttfc(targets["poolgate"], token, count))}
            print(f"soak: {soak} s at {CONNECTIONS} connections ...", flush=True)
            r["rss_after_load"] = _rss_mb(pid)
            samples, requests, started = [], 0, time.monotonic()
            while time.monotonic() - started < soak:
                step = _wrk_post(targets["poolgate"], token, connections=CONNECTIONS, seconds=min(30, soak), tmp=tmp)
                requests += int(step.requests_per_second * min(30, soak))
                samples.append(_rss_mb(pid))
            r["soak"] = {"seconds": soak, "requests": requests, "rss": samples}
            r["relayed"] = _relayed(server.base_url)
        finally:
            server.stop()
            fake.terminate()
            nginx.terminate()
            nginx.wait()
            if litellm is not None:
                litellm.terminate()
                litellm.wait()
        r["rows"] = _usage_rows(settings)  # the server has stopped: every queued row is written
    table = _report(r, seconds)
    print(table)
    if write and not quick:
        write_section("proxy", table)
        print("written to docs/BENCHMARKS.md")
    return 0


def _report(r: dict[str, Any], seconds: int) -> str:
    lat, load = r["latency"], r["load"]
    direct = lat["direct"]

    def added(name: str) -> str:
        if name not in lat:
            return "-"
        return f"{lat[name].p50_ms - direct.p50_ms:.2f} / {lat[name].p99_ms - direct.p99_ms:.2f} ms"

    def rate(name: str) -> str:
        if name not in load:
            return "-"
        return f"{load[name].requests_per_second:,.0f} (p99 {load[name].p99_ms:.1f} ms)"

    ttfc_direct, ttfc_gate = r["ttfc"]["direct"], r["ttfc"]["poolgate"]
    soak = r["soak"]
    rss = soak["rss"]
    drift = (max(rss) - min(rss)) / min(rss) * 100 if rss else float("nan")
    gate_p50 = lat["poolgate"].p50_ms - direct.p50_ms
    gate_p99 = lat["poolgate"].p99_ms - direct.p99_ms
    ttfc_added = percentile(ttfc_gate, 99) - percentile(ttfc_direct, 99)
    skipped = f"\n\nLiteLLM: not measured here ({r['litellm_skipped']})." if r["litellm_skipped"] else ""
    return f"""## Relay overhead with every feature on (`scripts/bench proxy`)

Non-streamed chat completions, one uvicorn worker, a key with request and token quotas, usage rows on SQLite,
metrics and the access log at info: poolgate as a team runs it. The upstream is nginx answering a fixed
completion, so the upstream costs next to nothing and the column "direct" is the floor. wrk drives the load
({seconds} s a step); added latency is the difference of wrk's percentiles at one connection.

| measure | before | now | goal |
|---|---:|---:|---:|
| added p50 / p99 at 1 connection | {BEFORE["added_p50"]:.2f} ms / - | {gate_p50:.2f} / {gate_p99:.2f} ms | {GOALS["added_p50"]} / {GOALS["added_p99"]} ms |
| CPU per relayed request (user + system, at {CONNECTIONS} connections) | {BEFORE["cpu_us"]} us | {r["cpu_us"]:.0f} us | <= {GOALS["cpu_us"]} us |
| requests per second at {CONNECTIONS} connections | {BEFORE["rps"]:,} | {load["poolgate"].requests_per_second:,.0f} (p99 {load["poolgate"].p99_ms:.1f} ms) | >= {GOALS["rps"]:,} at p99 <= 50 ms |
| streams: added time to first chunk, p99 | - | {ttfc_added:.2f} ms (p99 {percentile(ttfc_direct, 99):.2f} direct, {percentile(ttfc_gate, 99):.2f} ms through poolgate; p50 added {percentile(ttfc_gate, 50) - percentile(ttfc_direct, 50):.2f} ms) | <= {GOALS["ttfc_p99"]} ms |
| RSS at start | {BEFORE["rss_start"]} MB | {r["rss_start"]:.0f} MB | <= {GOALS["rss_start"]} MB |
| RSS after load, and over a {soak["seconds"]} s soak ({soak["requests"]:,} requests) | {BEFORE["rss_after"]} MB | {r["rss_after_load"]:.0f} MB; {min(rss):.0f}-{max(rss):.0f} MB ({drift:.1f}% apart) | flat within 10% |
| usage rows written, of the requests poolgate counted | - | {r["rows"]:,} of {r["relayed"]:,} | all |

The same run, side by side:

| target | added p50 / p99 at 1 connection | requests per second at {CONNECTIONS} connections |
|---|---:|---:|
| the mock upstream itself | ({direct.p50_ms:.2f} / {direct.p99_ms:.2f} ms) | {rate("direct")} |
| nginx, plain pass-through | {added("nginx")} | {rate("nginx")} |
| poolgate | {added("poolgate")} | {rate("poolgate")} |
| LiteLLM (one worker) | {added("litellm")} | {rate("litellm")} |{skipped}
"""
