"""Sliding window counters: where a key's counts live, behind one small interface.

``MemoryWindows`` keeps them in this process: plain dict updates with no lock and no
await, which is safe because one event loop runs them, and O(1) per hit. ``LimitsWindows``
keeps them wherever the ``limits`` library can (Redis), with the same algorithm, so
every replica sees the same counts.

The algorithm (as in ``limits``): the previous fixed window's count, weighted by how much
of it still lies inside the last ``period`` seconds, plus the current window's count. A
hit of ``cost`` fits when ``floor(weighted) + cost <= limit``.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from functools import lru_cache
from typing import NamedTuple

from limits import RateLimitItem, RateLimitItemPerDay, RateLimitItemPerMinute
from limits.aio.storage import Storage
from limits.aio.strategies import SlidingWindowCounterRateLimiter

__all__ = ["LimitsWindows", "MemoryWindows", "Window"]

SWEEP_EVERY = 30.0
SLICE = 1000


class Window(NamedTuple):
    allowed: bool
    limit: int
    remaining: int
    reset_in: float
    """Seconds until a hit of the same cost would fit (0 when it fits now)."""


class MemoryWindows:
    def __init__(self, clock: Callable[[], float] = time.time, sweep_every: float = SWEEP_EVERY) -> None:
        self.clock = clock
        self.sweep_every = sweep_every
        self._counts: dict[tuple[str, int], list[int]] = {}  # (name, period) -> [window index, current, previous]
        # Which counters were written in which window, so a sweep visits only the stale ones.
        # (A list, not a set: each counter is added once per window, and a list grows without rehashing.)
        self._written: dict[tuple[int, int], list[tuple[str, int]]] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self.atomic = True
        """Test and take happen in one step here: nothing can run in between."""

    def __len__(self) -> int:
        return len(self._counts)

    async def take(self, name: str, limit: int, period: int, cost: int = 1, *, test: bool = False,
                   force: bool = False) -> Window:
        """Count ``cost`` if it fits (or always, with ``force``, for settling); ``test`` only looks."""
        now = self.clock()
        index, into = divmod(now, period)
        index = int(index)
        counter = (name, period)
        slot = self._counts.get(counter)
        if slot is None or slot[0] < index - 1:
            current = previous = 0
        elif slot[0] == index - 1:
            current, previous = 0, slot[1]
        else:
            current, previous = slot[1], slot[2]
        weighted = previous * (period - into) / period + current
        fits = math.floor(weighted) + cost <= limit
        if (fits or force) and not test:
            current = max(0, current + cost)
            weighted = previous * (period - into) / period + current
            if slot is not None and slot[0] == index:
                slot[1] = current  # the common case allocates nothing: less work for the collector
            else:
                self._counts[counter] = [index, current, previous]
                written = self._written.get((period, index))
                if written is None:
                    written = self._written[(period, index)] = []
                    self._sweep_later()
                written.append(counter)  # once per counter and window
        remaining = max(0, limit - math.floor(weighted))
        return Window(fits, limit, remaining, 0.0 if fits and test else _wait(limit, cost, period, into,
                                                                                  current, previous))

    def _sweep_later(self) -> None:
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    async def _sweep(self) -> None:
        """Forget counters whose windows have both passed, a slice at a time, twice a minute at most."""
        await asyncio.sleep(self.sweep_every)
        now = self.clock()
        for period, index in [pi for pi in self._written if pi[1] < int(now // pi[0]) - 1]:
            stale_before = int(now // period) - 1
            bucket = self._written.pop((period, index))
            while bucket:  # a slice at a time, freed as it goes: even releasing 100k entries at once stalls
                chunk = bucket[-SLICE:]
                del bucket[-SLICE:]
                for name in chunk:
                    slot = self._counts.get(name)
                    if slot is not None and slot[0] < stale_before:
                        del self._counts[name]
                del chunk
                await asyncio.sleep(0)
        if self._written:
            self._sweep_later()

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()


def _wait(limit: int, cost: int, period: int, into: float, current: int, previous: int) -> float:
    """Seconds until ``floor(weighted) + cost <= limit``, exactly, as the windows slide."""
    room = limit - cost + 1  # the weighted count must drop below this
    if room <= 0:
        return float(period)  # can never fit: the caller refuses outright
    if current < room and previous:
        # Within this window the previous one's weight shrinks: find when it is small enough.
        needed_fraction = (room - current) / previous
        moment = period * (1 - needed_fraction)
        if moment <= period:
            return max(0.0, moment - into) + 0.001
    if current < room:
        return max(0.0, period - into) + 0.001
    # Only the next window helps: this window's count becomes the weighted "previous" one.
    moment = period * (1 - room / current)
    return (period - into) + max(0.0, moment) + 0.001


@lru_cache(maxsize=4096)
def _item(amount: int, period: int, namespace: str) -> RateLimitItem:
    cls = RateLimitItemPerMinute if period == 60 else RateLimitItemPerDay
    return cls(amount, namespace=namespace)


class LimitsWindows:
    """The same counters in a ``limits`` storage (Redis): shared by every replica."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self._limiter = SlidingWindowCounterRateLimiter(storage)
        self.atomic = False

    async def take(self, name: str, limit: int, period: int, cost: int = 1, *, test: bool = False,
                   force: bool = False) -> Window:
        namespace, _, ident = name.partition(":")
        item = _item(limit, period, namespace)
        limiter = self._limiter
        if test:
            fits = await limiter.test(item, ident, cost=cost)
        else:
            fits = await limiter.hit(item, ident, cost=cost)
            if not fits and force:  # settling an overrun: record what was used even past the limit
                await limiter.hit(item, ident, cost=min(cost, limit))
        stats = await limiter.get_window_stats(item, ident)
        return Window(fits, limit, stats.remaining, max(0.0, stats.reset_time - time.time()))

    async def close(self) -> None:
        return None
