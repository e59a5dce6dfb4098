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
from collections.abc import Awaitable, Callable
from typing import NamedTuple, Protocol

from app._redis import RedisLink, RedisUnavailable, Script

__all__ = ["MemoryWindows", "QuotaStoreUnavailable", "RedisWindows", "Window", "Windows"]

STORE_TIMEOUT = 1.0  # seconds for one quota step in Redis before the store counts as away


class QuotaStoreUnavailable(Exception):
    """The shared quota store (Redis) did not answer in time, or refused the connection."""

SWEEP_EVERY = 30.0
SLICE = 1000


class Window(NamedTuple):
    allowed: bool
    limit: int
    remaining: int
    reset_in: float
    """Seconds until a hit of the same cost would fit (0 when it fits now): a refusal's Retry-After."""
    whole_in: float = 0.0
    """Seconds until the window is whole again (nothing counted): ``x-ratelimit-reset-*``, as OpenAI means it."""


class Windows(Protocol):
    """Where a key's sliding windows live: this process, or Redis for every replica."""

    async def take_all(self, name: str, windows: list[tuple[int, int]], cost: int,
                       force: bool = False) -> list[Window]:
        """Take ``cost`` from every ``(limit, period)`` window, or from none (``force`` takes regardless)."""
        ...

    async def close(self) -> None: ...


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

    async def take(self, name: str, limit: int, period: int, cost: int = 1, *, force: bool = False) -> Window:
        """Count ``cost`` if it fits (or always, with ``force``, for settling)."""
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
        if fits or force:
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
        return Window(fits, limit, remaining, _wait(limit, cost, period, into, current, previous),
                      _until_whole(period, into, current, previous))

    async def take_all(self, name: str, windows: list[tuple[int, int]], cost: int,
                       force: bool = False) -> list[Window]:
        """Take ``cost`` from every window, or from none: nothing else runs in between on this
        loop, so taking in turn and giving back on a refusal is one indivisible step."""
        return await _take_in_turn(self.take, name, windows, cost, force)

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


async def _take_in_turn(take: Callable[..., Awaitable[Window]], name: str, windows: list[tuple[int, int]],
                        cost: int, force: bool) -> list[Window]:
    """Take from each window in turn; a refusal gives back what the earlier ones took."""
    taken: list[Window] = []
    for position, (limit, period) in enumerate(windows):
        window = await take(name, limit, period, cost, force=force)
        taken.append(window)
        if not window.allowed and not force:
            for earlier_limit, earlier_period in windows[:position]:
                await take(name, earlier_limit, earlier_period, -cost, force=True)
            return taken
    return taken


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


def _until_whole(period: int, into: float, current: int, previous: int) -> float:
    """Seconds until nothing counts in the window any more (the weighted count drops below one)."""
    if current >= 1:  # only once this window is the previous one, and its weight has faded enough
        return (period - into) + period * (1 - 1 / current)
    if previous >= 1:
        return max(0.0, period * (1 - 1 / previous) - into)
    return 0.0


_TAKE = Script("""
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local cost, force = tonumber(ARGV[1]), ARGV[2] == '1'
local fits, rows = true, {}
for i = 1, #KEYS do
  local limit, period = tonumber(ARGV[1 + 2 * i]), tonumber(ARGV[2 + 2 * i])
  local index = math.floor(now / period)
  local into = now - index * period
  local current = tonumber(redis.call('GET', KEYS[i] .. ':' .. index) or '0')
  local previous = tonumber(redis.call('GET', KEYS[i] .. ':' .. (index - 1)) or '0')
  if math.floor(previous * (period - into) / period + current) + cost > limit then fits = false end
  rows[i] = {index, into, current, previous, period}
end
local out = {fits and 1 or 0}
for i = 1, #KEYS do
  local row = rows[i]
  if fits or force then
    row[3] = math.max(0, row[3] + cost)
    redis.call('SET', KEYS[i] .. ':' .. row[1], row[3], 'EX', 2 * row[5] + 1)
  end
  out[#out + 1] = row[3]
  out[#out + 1] = row[4]
  out[#out + 1] = math.floor(row[2] * 1000000)
end
return out
""")


class RedisWindows:
    """The same sliding window counters in Redis, shared by every replica: all of a request's
    windows are tested and taken by one Lua script, so one round trip, and all or nothing."""

    def __init__(self, url: str) -> None:
        self.link = RedisLink(url, timeout=STORE_TIMEOUT)

    async def take_all(self, name: str, windows: list[tuple[int, int]], cost: int,
                       force: bool = False) -> list[Window]:
        args: list[str | int] = [cost, 1 if force else 0]
        for limit, period in windows:
            args += [limit, period]
        keys = [f"poolgate:q:{name}:{period}" for _, period in windows]
        try:
            reply = await self.link.run(_TAKE, keys, args)
        except RedisUnavailable as exc:
            raise QuotaStoreUnavailable(str(exc)) from exc
        assert isinstance(reply, list)
        fits = reply[0] == 1
        out = []
        for i, (limit, period) in enumerate(windows):
            current, previous, into_us = reply[1 + 3 * i : 4 + 3 * i]
            into = into_us / 1_000_000
            weighted = previous * (period - into) / period + current
            # Taken (or forced): each window fitted. Refused: nothing was taken; say which did not fit.
            allowed = fits or force or math.floor(weighted) + cost <= limit
            remaining = max(0, limit - math.floor(weighted))
            reset = _wait(limit, cost, period, into, current, previous)
            out.append(Window(allowed, limit, remaining, reset, _until_whole(period, into, current, previous)))
        return out

    async def close(self) -> None:
        await self.link.close()
