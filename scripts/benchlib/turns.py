"""Codex-style turns: time to the first event of a Responses turn over poolgate's WebSocket, against the same turn
over HTTP (through poolgate, and straight to the upstream), one turn at a time, as one Codex session sends them.

The upstream is the fake in a process of its own (it speaks HTTP only: the WebSocket ends at poolgate, which
bridges each turn over HTTP). Each turn carries a realistic conversation (about 30 KB of input).
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx2
from websockets.sync.client import connect

from app._db import upgrade
from app.settings import Settings
from keys import Policy
from scripts.benchlib.common import percentile, write_section
from scripts.benchlib.proxy import start_fake
from tests.support import ServerProcess, add_upstreams, create_key, free_port

HISTORY = [{"type": "message", "role": "user" if i % 2 else "assistant",
            "content": [{"type": "input_text" if i % 2 else "output_text", "text": "word " * 120}]}
           for i in range(40)]
TURN = {"model": "gpt-5", "stream": True, "store": False, "input": HISTORY, "prompt_cache_key": "bench-thread"}


def _http_turns(url: str, token: str | None, count: int) -> list[float]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    samples = []
    with httpx2.Client(timeout=30) as client:
        for _ in range(count):
            started = time.perf_counter()
            with client.stream("POST", url, json=TURN, headers=headers) as response:
                first = True
                for _ in response.iter_raw():  # read to the end, so the connection is reused
                    if first:
                        samples.append((time.perf_counter() - started) * 1000)
                        first = False
    return samples[5:]


def _ws_turns(url: str, token: str, count: int) -> list[float]:
    samples = []
    with connect(url, additional_headers={"Authorization": f"Bearer {token}"}, max_size=None) as ws:
        for _ in range(count):
            started = time.perf_counter()
            ws.send(json.dumps({"type": "response.create", **TURN}))
            first = True
            while True:
                event = json.loads(ws.recv(timeout=30))
                if first:
                    samples.append((time.perf_counter() - started) * 1000)
                    first = False
                if event["type"] in ("response.completed", "response.failed", "error"):
                    break
    return samples[5:]


def main(*, quick: bool, write: bool) -> int:
    count = 60 if quick else 400
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="poolgate-bench-turns-") as tmp_name:
        tmp = Path(tmp_name)
        fake_port = free_port()
        fake = start_fake(fake_port, chunks=16, interval=0.0)
        settings = Settings(data_dir=tmp / "data")
        upgrade(settings)
        _, token = create_key(settings, "bench", Policy(allowed_models=("*",)))
        add_upstreams(settings, [{"name": "bench", "base_url": f"http://127.0.0.1:{fake_port}/v1", "models": "*"}])
        server = ServerProcess(settings, env={"POOLGATE_LOG_LEVEL": "warning"}).start()
        try:
            for name, run in (
                ("HTTP, straight to the upstream", lambda: _http_turns(
                    f"http://127.0.0.1:{fake_port}/v1/responses", None, count)),
                ("HTTP through poolgate", lambda: _http_turns(f"{server.base_url}/v1/responses", token, count)),
                ("WebSocket through poolgate", lambda: _ws_turns(
                    server.base_url.replace("http://", "ws://") + "/v1/responses", token, count)),
            ):
                run()  # warm up
                samples = run()
                results[name] = (percentile(samples, 50), percentile(samples, 99))
                print(f"{name:32} p50 {results[name][0]:6.2f} ms  p99 {results[name][1]:6.2f} ms", flush=True)
        finally:
            server.stop()
            fake.terminate()
    direct = results["HTTP, straight to the upstream"][0]
    lines = [
        "## Codex turns: time to first event, WebSocket vs HTTP",
        "",
        f"{count - 5} turns one after another, each a streamed Responses request with about 30 KB of conversation "
        "(as a Codex session sends them), timed from sending the turn to its first event. Over HTTP each turn is "
        "a POST on a kept-alive connection; over the WebSocket all turns share one socket and poolgate bridges each "
        "to the upstream over HTTP.",
        "",
        "| path | p50 ms | p99 ms | p50 added to the upstream's own |",
        "|---|---:|---:|---:|",
    ]
    for name, (p50, p99) in results.items():
        lines.append(f"| {name} | {p50:.2f} | {p99:.2f} | {p50 - direct:+.2f} |")
    body = "\n".join(lines)
    print(body)
    if write and not quick:
        write_section("turns", body)
    return 0
