"""Shared benchmark helpers: percentiles, wrk, the results file."""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "docs" / "BENCHMARKS.md"


def percentile(samples: list[float], pct: float) -> float:
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, {platform.system()}"


@dataclass
class WrkResult:
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    errors: int


def wrk(url: str, *, connections: int, seconds: int, headers: dict[str, str] | None = None,
        threads: int = 1, script: str | None = None, timeout: int | None = None) -> WrkResult:
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed for end-to-end load: apt-get install wrk")
    cmd = ["wrk", "--latency", f"-t{threads}", f"-c{connections}", f"-d{seconds}s"]
    for name, value in (headers or {}).items():
        cmd += ["-H", f"{name}: {value}"]
    if script is not None:
        cmd += ["-s", script]
    if timeout is not None:  # wrk counts answers slower than this (default 2 s) as errors
        cmd += ["--timeout", f"{timeout}s"]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    errors = 0
    if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", out)) is not None:
        errors += int(m.group(1))
    if (m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)) is not None:
        errors += sum(int(g) for g in m.groups())
    return WrkResult(rps, _latency(out, "50%"), _latency(out, "99%"), errors)


def _latency(out: str, label: str) -> float:
    m = re.search(rf"^\s+{re.escape(label)}\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
    if m is None:
        return float("nan")
    value, unit = float(m.group(1)), m.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def write_section(name: str, body: str) -> None:
    """Replace (or append) one suite's section of docs/BENCHMARKS.md."""
    begin, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    stamp = datetime.now(UTC).strftime("%Y-%m-%d")
    section = f"{begin}\n{body.rstrip()}\n\n_Measured {stamp} on {machine()}._\n{end}"
    text = RESULTS.read_text() if RESULTS.exists() else (
        "# Benchmarks\n\nEach section is written by `scripts/bench <suite>`; numbers in one section come from one "
        "run on one machine, so compare ratios within a section rather than across machines.\n"
    )
    if begin in text and end in text:
        text = text[: text.index(begin)] + section + text[text.index(end) + len(end):]
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    RESULTS.write_text(text)


def port_open(port: int) -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def nginx_conf(tmp: Path, blocks: str) -> str:
    """A one-worker nginx configuration that keeps every file in ``tmp``, with ``blocks`` in its http block."""
    return f"""worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/nginx-body;
  proxy_temp_path {tmp}/nginx-proxy;
  fastcgi_temp_path {tmp}/nginx-fastcgi;
  uwsgi_temp_path {tmp}/nginx-uwsgi;
  scgi_temp_path {tmp}/nginx-scgi;
{blocks}}}
"""


def start_nginx(tmp: Path, sites: dict[int, list[int]], *, keepalive: int) -> subprocess.Popen[bytes] | None:
    """One nginx worker; each listening port balances over its own backends, with keep-alive.
    None when nginx is not installed."""
    from tests.support import wait_for

    binary = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if binary is None:
        return None
    blocks = "".join(
        f"  upstream site{port} {{ {' '.join(f'server 127.0.0.1:{p};' for p in backends)} keepalive {keepalive}; }}\n"
        f"  server {{ listen 127.0.0.1:{port}; location / {{ proxy_pass http://site{port}; "
        'proxy_http_version 1.1; proxy_set_header Connection ""; proxy_buffering off; } }\n'
        for port, backends in sites.items()
    )
    conf = tmp / "nginx.conf"
    conf.write_text(nginx_conf(tmp, blocks))
    proc = subprocess.Popen([binary, "-c", str(conf), "-e", str(tmp / "nginx-error.log")])
    for port in sites:
        wait_for(lambda port=port: port_open(port), timeout=10, what="nginx")
    return proc
