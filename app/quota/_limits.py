"""Quota windows in a ``limits`` storage, for the Redis Sentinel and Cluster URLs that poolgate's own Redis
client does not speak. Imported only when such a URL is configured: ``limits`` and its Redis client
weigh about 40 MB that a process on ``memory://`` or plain Redis does not need."""

from __future__ import annotations

import asyncio
import time
from functools import lru_cache

from coredis.exceptions import ConnectionError as RedisConnectionError
from coredis.exceptions import TimeoutError as RedisTimeoutError
from limits import RateLimitItem, RateLimitItemPerDay, RateLimitItemPerMinute
from limits.aio.storage import Storage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.errors import ConfigurationError
from limits.storage import storage_from_string

from app.quota._windows import STORE_TIMEOUT, QuotaStoreUnavailable, Window, _take_in_turn
from app.settings import SettingsError

__all__ = ["LimitsWindows", "limits_storage"]


def limits_storage(url: str) -> Storage:
    """The async ``limits`` storage for ``url``; a URL it cannot use stops the start in one line."""
    try:
        storage = storage_from_string(url if url.startswith("async+") else f"async+{url}")
    except ConfigurationError as exc:
        raise SettingsError(f"POOLGATE_LIMITS_URL: {exc}") from None
    if not isinstance(storage, Storage):
        raise SettingsError("POOLGATE_LIMITS_URL: not an async limits storage")
    return storage


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
        try:
            async with asyncio.timeout(STORE_TIMEOUT):
                return await self._take(name, limit, period, cost, test=test, force=force)
        except (TimeoutError, OSError, RedisConnectionError, RedisTimeoutError) as exc:
            raise QuotaStoreUnavailable(f"{exc.__class__.__name__}: {exc}") from exc

    async def take_all(self, name: str, windows: list[tuple[int, int]], cost: int,
                       force: bool = False) -> list[Window]:
        """Every window is tested first, then taken; one filled by another replica in between
        gives back what the earlier windows took."""
        if not force:
            tests = [await self.take(name, limit, period, cost, test=True) for limit, period in windows]
            if not all(window.allowed for window in tests):
                return tests
        return await _take_in_turn(self.take, name, windows, cost, force)

    async def _take(self, name: str, limit: int, period: int, cost: int, *, test: bool, force: bool) -> Window:
        namespace, _, ident = name.partition(":")
        item = _item(limit, period, namespace)
        limiter = self._limiter
        if test:
            fits = await limiter.test(item, ident, cost=cost)
        else:
            fits = await limiter.hit(item, ident, cost=cost)
            if not fits and force:  # settling an overrun: the window is full (limits counts no further)
                left = (await limiter.get_window_stats(item, ident)).remaining
                if left > 0:
                    await limiter.hit(item, ident, cost=left)
        stats = await limiter.get_window_stats(item, ident)
        reset = max(0.0, stats.reset_time - time.time())
        return Window(fits, limit, stats.remaining, reset, reset)

    async def close(self) -> None:
        return None
