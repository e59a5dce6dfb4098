from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app._db import create_engine
from app.settings import Settings
from tests.support.gateway import InProcess, in_process


@pytest.fixture
async def engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    """A migrated database for the test, closed afterwards."""
    engine = create_engine(settings)
    yield engine
    await engine.dispose()


@pytest.fixture
async def make_gateway(make_settings: Callable[..., Settings], tmp_path: Any) -> AsyncIterator[Any]:
    """``await make_gateway(upstreams={"acct-1": {...}}, keys={"alice": Policy(...)}, **settings)``: poolgate on
    this test's loop in front of fake upstreams (see tests/support/gateway.py).

    Each gateway lives in a task of its own, which enters and leaves its lifespan (the framework's task
    groups must be left by the task that entered them; a fixture's teardown runs in another)."""
    running: list[tuple[asyncio.Event, asyncio.Task[None]]] = []

    async def build(*, upstreams: dict[str, dict[str, Any]] | None = None, keys: Any = None,
                    transport: Any = None, clock: Any = None, fake_options: dict[str, Any] | None = None,
                    **changes: Any) -> InProcess:
        changes.setdefault("sync_interval", 0.1)
        settings = make_settings(tmp_path / f"gw{len(running)}" / "data", **changes)
        ready: asyncio.Future[InProcess] = asyncio.get_running_loop().create_future()
        stop = asyncio.Event()

        async def hold() -> None:
            try:
                async with in_process(settings, upstreams=upstreams, keys=keys, transport=transport, clock=clock,
                                      fake_options=fake_options) as gateway:
                    ready.set_result(gateway)
                    await stop.wait()
            except BaseException as exc:
                if not ready.done():
                    ready.set_exception(exc)
                raise

        task = asyncio.create_task(hold())
        running.append((stop, task))
        return await ready

    yield build
    for stop, task in reversed(running):
        stop.set()
        await task
