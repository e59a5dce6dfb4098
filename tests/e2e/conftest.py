from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
import pytest

from app.settings import Settings
from keys import Policy
from tests.support import FakeUpstreamThread, ServerProcess, add_upstreams, create_key

MODELS = ("gpt-5", "gpt-5-mini", "o3", "text-embedding-3-small", "gpt-5.1-codex", "o3-2025-04-16")


@dataclass
class Gateway:
    """poolgate serving on a free port, in front of fake upstream accounts."""

    settings: Settings
    server: ServerProcess
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


@pytest.fixture
def make_gateway(tmp_path: Path, make_settings: Callable[..., Settings]) -> Iterator[Any]:
    """Build a gateway: ``make_gateway(upstreams={"acct-1": {...}}, keys={"alice": Policy(...)}, env={...})``."""
    started: list[Gateway] = []

    def build(
        upstreams: dict[str, dict[str, Any]] | None = None,
        keys: dict[str, Policy] | None = None,
        env: dict[str, str] | None = None,
        fake_options: dict[str, Any] | None = None,
    ) -> Gateway:
        settings = make_settings(tmp_path / f"gw{len(started)}" / "data", sync_interval=0.1)
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
        server = ServerProcess(settings, env=env or {}).start()
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
