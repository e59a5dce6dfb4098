"""Picking up what other processes changed: one loop over small :class:`Refreshable` parts.

Every sync interval (or at once, when another replica announces a change through Redis) each
part refreshes itself: keys, upstreams, admins, the catalog file, budgets. A part that fails is
logged and tried again next round; nothing may end the loop, or revocations would stop arriving.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from typing import Protocol

__all__ = ["Refreshable", "Syncer"]

log = logging.getLogger("poolgate.sync")


class Refreshable(Protocol):
    name: str

    async def refresh(self) -> object:
        """Apply what changed elsewhere; cheap when nothing did."""
        ...


class Syncer:
    def __init__(self, parts: Sequence[Refreshable], interval: float) -> None:
        self.parts = list(parts)
        self.interval = interval
        self.synced: dict[str, float] = {}
        """When each part last refreshed without an error (monotonic seconds)."""
        self._failing: set[str] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def wake(self, _what: str = "") -> None:
        self._wake.set()

    async def once(self) -> None:
        for part in self.parts:
            try:
                await part.refresh()
            except Exception as exc:  # the next round tries again; requests keep the last good state
                if part.name not in self._failing:
                    self._failing.add(part.name)
                    log.warning("%s sync failed, keeping what this process has: %s", part.name, exc)
            else:
                self.synced[part.name] = time.monotonic()
                if part.name in self._failing:
                    self._failing.discard(part.name)
                    log.warning("%s sync works again", part.name)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="poolgate-sync")

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)
            self._wake.clear()
            await self.once()

    def age(self, name: str) -> float:
        """Seconds since ``name`` last synced (infinite before its first sync)."""
        last = self.synced.get(name)
        return float("inf") if last is None else time.monotonic() - last

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
