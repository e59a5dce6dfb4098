"""Test support: real processes on 127.0.0.1, free ports, and waiting with a deadline."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from app.db import create_engine, upgrade
from app.settings import Settings
from keys import KeyRecord, KeyStore, Policy

__all__ = [
    "ROOT",
    "CliResult",
    "FakeUpstreamThread",
    "GiveUp",
    "Http",
    "ServerProcess",
    "add_upstreams",
    "create_key",
    "env_for",
    "free_port",
    "poolgate",
    "wait_for",
]

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class GiveUp(Exception):
    """Raised by a check passed to :func:`wait_for` when waiting longer cannot help."""


def wait_for(check: Callable[[], T], *, timeout: float = 10.0, interval: float = 0.02, what: str = "condition") -> T:
    """Poll ``check`` until it returns something truthy, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
        except GiveUp:
            raise
        except Exception as exc:
            last_error = exc
        else:
            if result:
                return result
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}" + (f": {last_error}" if last_error else ""))


def env_for(settings: Settings, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POOLGATE_")}
    env.update({
        "POOLGATE_DATA_DIR": str(settings.data_dir),
        "POOLGATE_DATABASE_URL": settings.database_url,
        "POOLGATE_LIMITS_URL": settings.limits_url,
        "POOLGATE_SYNC_INTERVAL": str(settings.sync_interval),
    })
    if settings.catalog_file is not None:
        env["POOLGATE_CATALOG_FILE"] = str(settings.catalog_file)
    env.update(extra or {})
    return env


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


def poolgate(settings: Settings, *args: str, env: Mapping[str, str] | None = None, stdin: str = "") -> CliResult:
    """Run the real ``poolgate`` command in a subprocess."""
    proc = subprocess.run(
        [sys.executable, "-m", "app", *args],
        cwd=ROOT, env={"COLUMNS": "200", **env_for(settings, env)}, input=stdin, capture_output=True, text=True,
        timeout=60,
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def add_upstreams(settings: Settings, specs: list[dict[str, Any]]) -> None:
    """Register upstream accounts through the store the CLI uses: ``{"name", "base_url", "models", ...}``."""
    from app.crypto import Vault
    from app.pool import UpstreamStore, parse_routes

    async def go() -> None:
        engine = create_engine(settings)
        store = UpstreamStore(engine, Vault.from_settings(settings))
        for given in specs:
            spec = dict(given)
            await store.add(spec.pop("name"), spec.pop("base_url"), parse_routes(spec.pop("models")), **spec)
        await engine.dispose()

    upgrade(settings)
    asyncio.run(go())


def create_key(settings: Settings, name: str, policy: Policy, **kwargs: Any) -> tuple[KeyRecord, str]:
    """Issue a key through the store, the same service the CLI uses."""
    upgrade(settings)

    async def go() -> tuple[KeyRecord, str]:
        engine = create_engine(settings)
        try:
            return await KeyStore(engine).create(name, policy, **kwargs)
        finally:
            await engine.dispose()

    return asyncio.run(go())


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Http:
    """A tiny raw HTTP client, for what the SDK hides (headers, 304, exact bodies)."""

    base_url: str

    def get(self, path: str, key: str | None = None, headers: Mapping[str, str] | None = None) -> Response:
        request = urllib.request.Request(self.base_url + path, headers=dict(headers or {}))
        if key is not None:
            request.add_header("Authorization", f"Bearer {key}")
        try:
            with urllib.request.urlopen(request, timeout=10) as resp:
                return Response(resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read())
        except urllib.error.HTTPError as err:
            return Response(err.code, {k.lower(): v for k, v in err.headers.items()}, err.read())


@dataclass
class ServerProcess:
    """``poolgate serve`` in its own process, listening on a free port."""

    settings: Settings
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def http(self) -> Http:
        return Http(self.base_url)

    def start(self) -> ServerProcess:
        self.log_path = self.settings.data_dir.parent / f"server-{self.port}.log"
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "app", "serve", "--port", str(self.port)],
                cwd=ROOT, env=env_for(self.settings, self.env), stdout=log, stderr=subprocess.STDOUT,
            )
        wait_for(self._healthy, timeout=30, what=f"server on port {self.port}")
        return self

    def _healthy(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise GiveUp(f"server exited with {self.process.returncode}: {self.log()}")
        try:
            return self.http.get("/healthz").status == 200
        except OSError:
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class FakeUpstreamThread:
    """The project's fake upstream, serving from its own event loop thread, for synchronous tests."""

    def __init__(self, **options: Any) -> None:
        import threading

        from app.fake_upstream import FakeUpstream

        self.fake = FakeUpstream(**options)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.base_url = self._call(self.fake.start())

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=30)

    def do(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run a method of the fake on its own loop (its state is not shared across threads)."""

        async def call() -> Any:
            return func(*args, **kwargs)

        return self._call(call())

    @property
    def requests(self) -> list[Any]:
        return list(self.do(lambda: list(self.fake.requests)))

    def stop(self) -> None:
        self._call(self.fake.stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
