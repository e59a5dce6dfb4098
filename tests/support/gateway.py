"""poolgate in the test's own process: the app on the test's event loop (no socket), or uvicorn listening on
127.0.0.1 in a thread of the test process (real HTTP, without the start-up cost of a process).

In-process: requests go through ``httpx2``'s ASGI transport (the transport the ``openai`` SDK itself is
built on), so the real SDK can be the client. The fake upstreams run on the same loop, on real ports, so
the app's real upstream client is exercised too; a test may pass a :class:`app.proxy.MockTransport`
instead.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx2
import openai
from litestar import Litestar

from app.fake_upstream import FakeUpstream
from app.pool import UpstreamStore, parse_routes
from app.proxy import Transport
from app.server import Clock, create_app, serving
from app.settings import Settings
from keys import KeyRecord, KeyStore, Policy
from tests.support import free_port, wait_for

__all__ = ["MODELS", "InProcess", "LiveServer", "fake_upstreams", "in_process", "live_server"]

MODELS = ("gpt-5", "gpt-5-mini", "o3", "text-embedding-3-small", "gpt-5.1-codex", "o3-2025-04-16", "gpt-image-1")


@dataclass
class InProcess:
    """The app, its state, a client for it, and the fake upstreams behind it."""

    app: Litestar
    settings: Settings
    fakes: dict[str, FakeUpstream]
    keys: dict[str, str] = field(default_factory=dict)
    client: httpx2.AsyncClient = field(init=False)
    _sdk: list[openai.AsyncOpenAI] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.client = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=serving(self.app)),
                                         base_url="http://poolgate", timeout=30)

    @property
    def state(self) -> Any:
        return self.app.state

    def auth(self, key: str = "alice", **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys.get(key, key)}", **extra}

    def sdk(self, key: str = "alice", **options: Any) -> openai.AsyncOpenAI:
        """The real ``openai`` SDK as a client of this app (no retries unless asked)."""
        options.setdefault("max_retries", 0)
        client = openai.AsyncOpenAI(base_url="http://poolgate/v1", api_key=self.keys.get(key, key),
                                    http_client=httpx2.AsyncClient(transport=httpx2.ASGITransport(app=serving(self.app))),
                                    **options)
        self._sdk.append(client)
        return client

    async def add_key(self, name: str, policy: Policy, **kwargs: Any) -> tuple[KeyRecord, str]:
        record, token = await KeyStore(self.state.engine).create(name, policy, **kwargs)
        self.keys[name] = token
        return record, token

    async def sync(self) -> None:
        """Apply what the database says now (what the sync loop does every interval)."""
        await self.state.syncer.once()

    async def flush(self) -> None:
        await self.state.recorder.flush()

    def served_by(self) -> dict[str, int]:
        return {name: len(fake.requests) for name, fake in self.fakes.items()}

    def log_lines(self, caplog: Any) -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == "poolgate.access"]

    async def close(self) -> None:
        for client in self._sdk:
            await client.close()
        await self.client.aclose()


async def fake_upstreams(names: Mapping[str, Mapping[str, Any]], options: Mapping[str, Any] | None = None
                         ) -> dict[str, FakeUpstream]:
    fakes = {}
    for name in names:
        fake = FakeUpstream(name=name, api_key=f"sk-{name}-0123456789abcdef", models=MODELS, **(options or {}))
        await fake.start()
        fakes[name] = fake
    return fakes


async def register(settings: Settings, engine: Any, vault: Any, fakes: Mapping[str, FakeUpstream],
                   upstreams: Mapping[str, Mapping[str, Any]]) -> None:
    store = UpstreamStore(engine, vault)
    for name, given in upstreams.items():
        spec = {"base_url": fakes[name].base_url if name in fakes else "http://127.0.0.1:9/v1",
                "models": "gpt-5*,o3,text-embedding-3-small,gpt-image-1",
                "credential": f"sk-{name}-0123456789abcdef", **given}
        await store.add(name, spec.pop("base_url"), parse_routes(spec.pop("models")), **spec)


@contextlib.asynccontextmanager
async def in_process(
    settings: Settings, *, upstreams: Mapping[str, Mapping[str, Any]] | None = None,
    keys: Mapping[str, Policy] | None = None, transport: Transport | None = None, clock: Clock | None = None,
    fake_options: Mapping[str, Any] | None = None,
) -> AsyncIterator[InProcess]:
    """The app on this loop, its fakes started, upstreams and keys registered, lifespan entered."""
    upstreams = {"acct-1": {}, "acct-2": {}} if upstreams is None else upstreams
    fakes = await fake_upstreams(upstreams, fake_options) if transport is None else {}
    app = create_app(settings, transport=transport, clock=clock)
    try:
        async with app.lifespan():
            state = app.state
            await register(settings, state.engine, state.vault, fakes, upstreams)
            gateway = InProcess(app, settings, fakes)
            for name, policy in (keys if keys is not None else {"alice": Policy(allowed_models=("*",))}).items():
                await gateway.add_key(name, policy)
            await gateway.sync()
            try:
                yield gateway
            finally:
                await gateway.close()
    finally:
        for fake in fakes.values():
            await fake.stop()


@dataclass
class LiveServer:
    """uvicorn serving the app on a free port of 127.0.0.1, in a thread of this process."""

    app: Litestar
    settings: Settings
    port: int = field(default_factory=free_port)
    _server: Any = None
    _thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LiveServer:
        import uvicorn

        from app._http import protocol_for

        config = uvicorn.Config(serving(self.app), host="127.0.0.1", port=self.port, loop="asyncio",
                                log_level="warning",
                                access_log=False, lifespan="on", timeout_keep_alive=self.settings.keepalive_timeout,
                                ws_max_size=self.settings.max_body_bytes,
                                http=protocol_for(self.settings.head_timeout, self.settings.max_connections))
        self._server = uvicorn.Server(config)
        self._server.install_signal_handlers = lambda: None  # not the main thread
        self._thread = threading.Thread(target=self._server.run, name=f"live-{self.port}", daemon=True)
        self._thread.start()
        wait_for(lambda: self._server.started, timeout=30, what="the in-process server to listen")
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=30)


@contextlib.contextmanager
def live_server(settings: Settings, **options: Any) -> Iterator[LiveServer]:
    server = LiveServer(create_app(settings, **options), settings)
    server.start()
    try:
        yield server
    finally:
        server.stop()
