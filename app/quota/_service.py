"""Per-key request quotas on the ``limits`` library (sliding window counter).

A request takes one unit from each of the key's request windows (per minute, per
day). The answer carries OpenAI's ``x-ratelimit-*-requests`` headers for the window
closest to running out; a refusal carries ``Retry-After`` exact to when that window
frees a unit.
"""

from __future__ import annotations

import time
from functools import lru_cache
from typing import NoReturn

from limits import RateLimitItem, RateLimitItemPerDay, RateLimitItemPerMinute, WindowStats
from limits.aio.storage import Storage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.errors import ConfigurationError
from limits.storage import storage_from_string

from app.errors import RateLimitError
from app.quota._headers import format_reset
from app.settings import SettingsError
from keys import KeyRecord

__all__ = ["QuotaService"]


@lru_cache(maxsize=4096)
def _item(amount: int, per: str) -> RateLimitItem:
    return RateLimitItemPerMinute(amount) if per == "minute" else RateLimitItemPerDay(amount)


class QuotaService:
    def __init__(self, url: str) -> None:
        self.storage = self._storage(url)
        self._limiter = SlidingWindowCounterRateLimiter(self.storage)

    @staticmethod
    def _storage(url: str) -> Storage:
        try:
            storage = storage_from_string(url if url.startswith("async+") else f"async+{url}")
        except ConfigurationError as exc:
            raise SettingsError(f"POOLGATE_LIMITS_URL: {exc}") from None
        if not isinstance(storage, Storage):
            raise SettingsError("POOLGATE_LIMITS_URL: not an async limits storage")
        return storage

    @classmethod
    def check_url(cls, url: str) -> None:
        """Fail at start, in one line, when the limits storage cannot be used."""
        cls._storage(url)

    async def take_request(self, key: KeyRecord) -> dict[str, str]:
        """Count one request against the key; its headers, or RateLimitError when over quota."""
        quotas = key.policy.quotas
        windows = []
        if quotas.rpm is not None:
            windows.append(_item(quotas.rpm, "minute"))
        if quotas.rpd is not None:
            windows.append(_item(quotas.rpd, "day"))
        if not windows:
            return {}
        limiter = self._limiter
        # Test every window before taking from any, so a refusal by one leaves the others untouched.
        for window in windows:
            if not await limiter.test(window, key.id):
                _refuse(window, await limiter.get_window_stats(window, key.id))
        binding: tuple[int, RateLimitItem, float] | None = None
        for window in windows:
            allowed = await limiter.hit(window, key.id)
            stats = await limiter.get_window_stats(window, key.id)
            if not allowed:  # another request took the last unit between the test and the hit
                _refuse(window, stats)
            wait = max(0.0, stats.reset_time - time.time())
            if binding is None or stats.remaining < binding[0]:
                binding = (stats.remaining, window, wait)
        assert binding is not None
        remaining, window, wait = binding
        return _headers(window.amount, remaining, wait)

    async def close(self) -> None:
        reset = getattr(self.storage, "reset", None)
        if reset is not None and self.storage.__class__.__name__ == "MemoryStorage":
            await reset()


def _refuse(window: RateLimitItem, stats: WindowStats) -> NoReturn:
    wait = max(0.0, stats.reset_time - time.time())
    period = "minute" if isinstance(window, RateLimitItemPerMinute) else "day"
    raise RateLimitError(
        f"Rate limit reached for requests: {window.amount} per {period} for this key. "
        f"Please try again in {format_reset(wait)}.",
        retry_after=wait,
        headers=_headers(window.amount, 0, wait),
    )


def _headers(limit: int, remaining: int, reset_in: float) -> dict[str, str]:
    return {
        "x-ratelimit-limit-requests": str(limit),
        "x-ratelimit-remaining-requests": str(remaining),
        "x-ratelimit-reset-requests": format_reset(reset_in),
    }
