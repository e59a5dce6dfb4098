from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import openai
import pytest

from app.server import Clock, create_app
from app.settings import Settings
from keys import Policy
from tests.support import FakeUpstreamThread, Http, ServerProcess, add_upstreams, create_key
from tests.support.gateway import MODELS, LiveServer


class _Captured(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.levelname} {record.name}: {record.getMessage()}")


@dataclass
class Served:
    """A server in this process (uvicorn in a thread): what ``ServerProcess`` offers, without the process."""

    live: LiveServer
    captured: _Captured
    process: None = None

    @property
    def port(self) -> int:
        return self.live.port

    @property
    def base_url(self) -> str:
        return self.live.base_url

    @property
    def http(self) -> Http:
        return Http(self.base_url)

    def log(self) -> str:
        return "\n".join(self.captured.lines)

    def stop(self) -> None:
        self.live.stop()
        logging.getLogger("poolgate").removeHandler(self.captured)


@dataclass
class Gateway:
    """poolgate serving on a free port, in front of fake upstream accounts."""

    settings: Settings
    server: Any
    fakes: dict[str, FakeUpstreamThread]
    keys: dict[str, str] = field(default_factory=dict)
    clients: list[openai.OpenAI] = field(default_factory=list)

    def client(self, key: str = "alice", **options: Any) -> openai.OpenAI:
        """An SDK client for one of the gateway's keys; closed with the gateway."""
        options.setdefault("max_retries", 0)
        client = openai.OpenAI(base_url=self.server.base_url + "/v1", api_key=self.keys[key], **options)
        self.clients.append(client)
        return client

    def served_by(self) -> dict[str, int]:
        return {name: len(fake.requests) for name, fake in self.fakes.items()}

    def all_requests(self) -> list[Any]:
        return [r for fake in self.fakes.values() for r in fake.requests]


def _serve_here(settings: Settings, clock: Clock | None) -> Served:
    captured = _Captured()
    poolgate_log = logging.getLogger("poolgate")
    poolgate_log.addHandler(captured)
    if poolgate_log.level == logging.NOTSET or poolgate_log.level > logging.INFO:
        poolgate_log.setLevel(logging.INFO)
    return Served(LiveServer(create_app(settings, clock=clock), settings).start(), captured)


@pytest.fixture
def make_gateway(tmp_path: Path, make_settings: Callable[..., Settings]) -> Iterator[Any]:
    """Build a gateway: ``make_gateway(upstreams={"acct-1": {...}}, keys={"alice": Policy(...)}, env={...})``.

    It listens on a real port, served by uvicorn in a thread of this process; ``process=True`` serves it
    from ``poolgate serve`` in a process of its own instead (for signals, kills and what a process shows).
    ``env`` (POOLGATE_* variables) and ``settings`` change the settings either way; ``clock`` is the time
    an in-process server reads.
    """
    started: list[Gateway] = []

    def build(
        upstreams: dict[str, dict[str, Any]] | None = None,
        keys: dict[str, Policy] | None = None,
        env: dict[str, str] | None = None,
        fake_options: dict[str, Any] | None = None,
        *, process: bool = False, clock: Clock | None = None, **changes: Any,
    ) -> Gateway:
        base = make_settings(tmp_path / f"gw{len(started)}" / "data", sync_interval=0.1, **changes)
        settings = replace(Settings.from_env({**_env_of(base), **env}), **changes) if env else base
        upstreams = upstreams if upstreams is not None else {"acct-1": {}, "acct-2": {}}
        fakes = {
            name: FakeUpstreamThread(name=name, api_key=f"sk-{name}-0123456789abcdef", models=MODELS,
                                     **(fake_options or {}))
            for name in upstreams
        }
        specs = []
        for name, spec in upstreams.items():
            specs.append({"name": name, "base_url": fakes[name].base_url, "models": "gpt-5*,o3,text-embedding-3-small",
                          "credential": f"sk-{name}-0123456789abcdef", **spec})
        key_tokens = {}
        for key_name, policy in (keys or {"alice": Policy(allowed_models=("*",))}).items():
            key_tokens[key_name] = create_key(settings, key_name, policy)[1]
        add_upstreams(settings, specs)
        server = ServerProcess(settings, env=env or {}).start() if process else _serve_here(settings, clock)
        gateway = Gateway(settings, server, fakes, key_tokens)
        started.append(gateway)
        return gateway

    yield build
    for gateway in started:
        for client in gateway.clients:
            client.close()
        gateway.server.stop()
        for fake in gateway.fakes.values():
            fake.stop()


def _env_of(settings: Settings) -> dict[str, str]:
    from tests.support import env_for

    return {k: v for k, v in env_for(settings).items() if k.startswith("POOLGATE_")}
