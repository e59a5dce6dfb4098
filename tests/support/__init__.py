"""Test support: real processes on 127.0.0.1, free ports, and waiting with a deadline."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import inspect, text
from sqlalchemy.engine import make_url

from app._db import create_engine, upgrade
from app.settings import Settings
from keys import KeyRecord, KeyStore, Policy

__all__ = [
    "ROOT",
    "TEST_DATABASE_ENV",
    "CliResult",
    "Databases",
    "FakeUpstreamThread",
    "GiveUp",
    "Http",
    "ServerProcess",
    "add_upstreams",
    "create_key",
    "dump",
    "env_for",
    "free_port",
    "fresh_minute",
    "poolgate",
    "query",
    "table_names",
    "wait_for",
    "wait_for_each",
    "within_one_minute",
]

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]
TEST_DATABASE_ENV = "POOLGATE_TEST_DATABASE_URL"
METRICS_TOKEN = "metrics-token-for-the-tests"
"""Every test's settings carry it, so a test reads /metrics as a Prometheus scraper with its token would."""
"""A PostgreSQL server URL; when set, every test gets a fresh database of its own there."""


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


def wait_for_each(items: Sequence[T], check: Callable[[T], object], *, deadline: float,
                  what: Callable[[T], str], interval: float = 0.02) -> list[float]:
    """Poll ``check`` on every item at once, each on a thread of its own, until it holds for each or the
    ``deadline`` (a ``time.monotonic()`` moment) passes; returns the moment it held, per item.

    Polling in turn would let one slow answer use up the time another item has to show the change.
    """

    def watch(item: T) -> float:
        wait_for(lambda: check(item), timeout=max(0.1, deadline - time.monotonic()), interval=interval,
                 what=what(item))
        return time.monotonic()

    with ThreadPoolExecutor(max(1, len(items))) as pool:
        return list(pool.map(watch, items))


def fresh_minute(need: float = 10.0) -> int:
    """The clock minute to run a burst in: this one, or the next (slept until just after it starts) when
    fewer than ``need`` seconds of this one are left.

    Quota windows slide over the clock's minutes: just after a minute ends, the previous minute's count
    weighs a little less than in full and one more request fits, so a burst whose admissions are counted
    exactly must not straddle two. (Days end on a minute's end, so this keeps per-day windows whole too.)
    Use :func:`within_one_minute` around the burst to have that checked.
    """
    left = 60.0 - time.time() % 60.0
    if left < need:
        time.sleep(left + 0.2)
    return int(time.time() // 60)


@contextmanager
def within_one_minute(need: float = 10.0) -> Iterator[int]:
    """Run the block in one clock minute (see :func:`fresh_minute`); if it ran past the minute's end, fail
    saying so (in place of whatever count came out off by one) rather than pass or fail by chance."""
    minute = fresh_minute(need)
    try:
        yield minute
    finally:
        now = time.time()
        if int(now // 60) != minute:
            raise AssertionError(f"the burst ran {now % 60:.1f}s into the next clock minute, so its counts are "
                                 f"not one minute's: it needs more than the {need:g}s it was given")


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
    if settings.single_instance or (not settings.is_sqlite and settings.limits_url.startswith("memory://")):
        env["POOLGATE_SINGLE_INSTANCE"] = "true"  # each test's server is the only one on its database
    if settings.quota_fail_open:
        env["POOLGATE_QUOTA_FAIL_OPEN"] = "true"
    if settings.metrics_token:
        env["POOLGATE_METRICS_TOKEN"] = settings.metrics_token
    env.update(extra or {})
    return env


class Databases:
    """Databases for tests: a SQLite file in the test's data directory, or, when
    ``POOLGATE_TEST_DATABASE_URL`` names a PostgreSQL server, a database of its own there.

    Migrating costs more than most tests, so each run migrates one template once and every test
    that wants a migrated database gets a copy: a file copy on SQLite, ``CREATE DATABASE ...
    TEMPLATE`` on PostgreSQL. Tests that migrate for themselves ask for an empty one (``template0``
    on PostgreSQL, which nobody may connect to, so a copy never fails on "source database is being
    accessed by other users"). Names carry a random part, so concurrent runs (and xdist workers)
    never meet. Each database is dropped ``WITH (FORCE)`` in the background once its test is done,
    and every drop has finished when :meth:`close` returns. Names also carry their creation time, so
    the first run after a killed one drops what that run left behind, once it is older than any run takes.
    """

    PREFIX = "poolgate_test_"
    STALE_AFTER = 6 * 3600.0

    def __init__(self, server_url: str | None, scratch: Path | None = None) -> None:
        self.server = make_url(server_url).set(drivername="postgresql+asyncpg") if server_url else None
        self.prefix = f"{self.PREFIX}{int(time.time())}_{secrets.token_hex(3)}"
        self.scratch = scratch
        self._numbers = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._pool: Any = None
        self._drops: list[Any] = []
        self._template: str | Path | None = None

    @classmethod
    def from_env(cls, scratch: Path | None = None) -> Databases:
        return cls(os.environ.get(TEST_DATABASE_ENV) or None, scratch)

    @property
    def postgres(self) -> bool:
        return self.server is not None

    def _migrated_template(self) -> str | Path:
        """Migrated once per run: a SQLite file, or a PostgreSQL database nobody else connects to."""
        if self._template is not None:
            return self._template
        if self.server is None:
            assert self.scratch is not None
            template = Settings(data_dir=self.scratch / "template")
            upgrade(template)
            path = Path(template.database_url.split(":///", 1)[1])
            self._template = path
            return path
        name = f"{self.prefix}_template"
        self._call(self._execute(f'CREATE DATABASE "{name}" TEMPLATE template0'))
        upgrade(Settings(database_url=self.server.set(database=name).render_as_string(hide_password=False)))
        self._template = name
        return name

    def settings(self, data_dir: Path, *, migrated: bool = True, **changes: Any) -> Settings:
        """Settings for ``data_dir`` and a database no other test has used: migrated, or empty."""
        changes.setdefault("metrics_token", METRICS_TOKEN)
        if self.server is None:
            settings = Settings(data_dir=data_dir, **changes)
            if migrated:
                import shutil

                template = self._migrated_template()
                data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
                target = Path(settings.database_url.split(":///", 1)[1])
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(template, target)
                target.chmod(0o600)
            return settings
        if self._loop is None:
            self._call(self._drop_stale())
        source = self._migrated_template() if migrated else "template0"
        name = f"{self.prefix}_{next(self._numbers)}"
        self._call(self._execute(f'CREATE DATABASE "{name}" TEMPLATE "{source}"'))
        url = self.server.set(database=name).render_as_string(hide_password=False)
        return Settings(data_dir=data_dir, database_url=url, **changes)

    def release(self, settings: Settings) -> None:
        """Drop the database made for ``settings`` (nothing to do for a SQLite file)."""
        if self.server is None or settings.is_sqlite or self._loop is None:
            return
        name = make_url(settings.database_url).database
        drop = self._execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self._drops.append(asyncio.run_coroutine_threadsafe(drop, self._loop))

    def close(self) -> None:
        if self._loop is None or self._thread is None:
            return
        try:
            if isinstance(self._template, str):
                self._drops.append(asyncio.run_coroutine_threadsafe(
                    self._execute(f'DROP DATABASE IF EXISTS "{self._template}" WITH (FORCE)'), self._loop))
            for drop in self._drops:
                drop.result(timeout=120)
        finally:
            if self._pool is not None:
                self._call(self._pool.close())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop.close()
            self._loop = None

    def _call(self, coro: Any) -> Any:
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
            self._thread = threading.Thread(target=self._loop.run_forever, name="test-databases", daemon=True)
            self._thread.start()
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=120)

    async def _admin(self) -> Any:
        if self._pool is None:
            import asyncpg

            assert self.server is not None
            admin = self.server.set(drivername="postgresql").render_as_string(hide_password=False)
            self._pool = await asyncpg.create_pool(admin, min_size=1, max_size=4)
        return self._pool

    async def _execute(self, statement: str) -> None:
        await (await self._admin()).execute(statement)

    async def _drop_stale(self) -> None:
        pattern = self.PREFIX.replace("_", "\\_") + "%"
        names = await (await self._admin()).fetch("SELECT datname FROM pg_database WHERE datname LIKE $1", pattern)
        for (name,) in names:
            created = name.removeprefix(self.PREFIX).split("_", 1)[0]
            if created.isdigit() and int(created) < time.time() - self.STALE_AFTER:
                await self._execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _in_thread(run: Callable[[], Any]) -> Any:
    """``asyncio.run`` on a thread of its own, so that async tests (whose loop is running) can call it too."""
    results: list[Any] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            results.append(asyncio.run(run()))
        except BaseException as exc:  # re-raised in the caller's thread
            errors.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return results[0]


def query(settings: Settings, statement: str, **params: Any) -> list[dict[str, Any]]:
    """The rows of one SQL statement, read through the app's own engine (SQLite or PostgreSQL alike)."""

    async def run() -> list[dict[str, Any]]:
        engine = create_engine(settings, pooled=False)
        try:
            async with engine.connect() as conn:
                return [dict(row._mapping) for row in await conn.execute(text(statement), params)]
        finally:
            await engine.dispose()

    rows: list[dict[str, Any]] = _in_thread(run)
    return rows


def table_names(settings: Settings) -> set[str]:
    async def run() -> set[str]:
        engine = create_engine(settings, pooled=False)
        try:
            async with engine.connect() as conn:
                return set(await conn.run_sync(lambda sync: inspect(sync).get_table_names()))
        finally:
            await engine.dispose()

    names: set[str] = _in_thread(run)
    return names


def dump(settings: Settings) -> str:
    """Everything the database holds, as text: to prove that a secret is not in it."""
    if settings.is_sqlite:
        with sqlite3.connect(settings.database_url.split(":///", 1)[1]) as db:
            return "\n".join(db.iterdump())
    return "\n".join(
        f"{table}: {row!r}" for table in sorted(table_names(settings))
        for row in query(settings, f'SELECT * FROM "{table}"')
    )


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


def poolgate(settings: Settings, *args: str, env: Mapping[str, str] | None = None, stdin: str = "",
             process: bool = False) -> CliResult:
    """Run the ``poolgate`` command: its entry point in this process (quick), or the real command in a
    subprocess (``process=True``, where what matters is the program as a whole)."""
    environment = {**env_for(settings, env), "COLUMNS": (env or {}).get("COLUMNS", "200")}
    if process:
        proc = subprocess.run([sys.executable, "-m", "app", *args], cwd=ROOT, env=environment, input=stdin,
                              capture_output=True, text=True, timeout=60)
        return CliResult(proc.returncode, proc.stdout, proc.stderr)
    return _cli_here(list(args), environment, stdin)


_CLI_LOCK = threading.Lock()


def _cli_here(args: list[str], environment: dict[str, str], stdin: str) -> CliResult:
    """``app.cli.main`` with this environment, arguments and standard streams, on a thread of its own (it runs
    event loops of its own, and a test may be running one)."""
    import contextlib
    import io

    from app.cli import main

    out, err = io.StringIO(), io.StringIO()
    codes: list[int] = []

    def target() -> None:
        try:
            main()
        except SystemExit as exc:
            codes.append(exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1))
        else:
            codes.append(0)

    with _CLI_LOCK:
        saved_env, saved_argv, saved_stdin = dict(os.environ), sys.argv, sys.stdin
        os.environ.clear()
        os.environ.update(environment)
        sys.argv = ["poolgate", *args]
        sys.stdin = io.StringIO(stdin)
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                thread = threading.Thread(target=target, name="poolgate-cli")
                thread.start()
                thread.join(timeout=120)
        finally:
            os.environ.clear()
            os.environ.update(saved_env)
            sys.argv, sys.stdin = saved_argv, saved_stdin
    return CliResult(codes[0] if codes else 1, out.getvalue(), err.getvalue())


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

    _in_thread(go)


def create_key(settings: Settings, name: str, policy: Policy, **kwargs: Any) -> tuple[KeyRecord, str]:
    """Issue a key through the store, the same service the CLI uses."""

    async def go() -> tuple[KeyRecord, str]:
        engine = create_engine(settings)
        try:
            return await KeyStore(engine).create(name, policy, **kwargs)
        finally:
            await engine.dispose()

    created: tuple[KeyRecord, str] = _in_thread(go)
    return created


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

    def metrics(self, token: str = "") -> str:
        """The Prometheus text, read with a metrics token (the test settings' own by default)."""
        return self.get("/metrics", token or METRICS_TOKEN).body.decode()

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


async def eventually(check: Callable[[], Any], *, timeout: float = 10.0, interval: float = 0.02,
                     what: str = "condition") -> Any:
    """:func:`wait_for` for async tests: poll ``check`` (a function, or one returning an awaitable) until it
    gives something truthy, without blocking the loop; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)
