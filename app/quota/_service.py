"""Per-key quotas on the ``limits`` library (sliding window counter), plus concurrency and spend.

A request takes one unit from each of the key's request windows (per minute, per day)
before anything else. Before the upstream call it reserves an estimate of its tokens
in the token windows, one place among the key's requests in flight, and is checked
against its spend budget; after the call the reservation settles to the real usage.
Answers carry OpenAI's ``x-ratelimit-*`` headers for the window closest to running
out; a refusal carries ``Retry-After`` exact to when that window frees enough.

Sliding window counter: the previous fixed window's count, weighted by how much of it
still overlaps the last minute (or day), plus the current window's count. O(1) memory
per key and window, atomic on Redis, and within a fraction of a window of a true
sliding log.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import NoReturn

from limits import RateLimitItem, RateLimitItemPerDay, RateLimitItemPerMinute, WindowStats
from limits.aio.storage import Storage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.errors import ConfigurationError
from limits.storage import storage_from_string

from app.errors import RateLimitError
from app.quota._budget import BudgetBook, period_bounds
from app.quota._headers import format_reset
from app.quota._memory import SlicedMemoryStorage
from app.settings import SettingsError
from keys import KeyRecord

__all__ = ["QuotaService", "Reservation"]


@lru_cache(maxsize=4096)
def _item(amount: int, per: str) -> RateLimitItem:
    return RateLimitItemPerMinute(amount) if per == "minute" else RateLimitItemPerDay(amount)


@lru_cache(maxsize=4096)
def _tokens(amount: int, per: str) -> RateLimitItem:
    """Token windows live under their own namespace, apart from the request windows."""
    cls = RateLimitItemPerMinute if per == "minute" else RateLimitItemPerDay
    return cls(amount, namespace="TOKENS")


@dataclass(slots=True)
class Reservation:
    """What one request holds from its key's quotas until it ends."""

    key: KeyRecord
    tokens: int
    holds_slot: bool
    settled: bool = False


class QuotaService:
    def __init__(self, url: str) -> None:
        self.storage = self._storage(url)
        self.budgets = BudgetBook()
        self._inflight: dict[str, int] = {}
        self.on_reject: Callable[[str, str], None] | None = None
        self._limiter = SlidingWindowCounterRateLimiter(self.storage)

    @staticmethod
    def _storage(url: str) -> Storage:
        if url.startswith("memory://"):
            return SlicedMemoryStorage()
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
                self.rejected(key, "requests")
                _refuse(window, await limiter.get_window_stats(window, key.id))
        binding: tuple[int, RateLimitItem, float] | None = None
        for window in windows:
            allowed = await limiter.hit(window, key.id)
            stats = await limiter.get_window_stats(window, key.id)
            if not allowed:  # another request took the last unit between the test and the hit
                self.rejected(key, "requests")
                _refuse(window, stats)
            wait = max(0.0, stats.reset_time - time.time())
            if binding is None or stats.remaining < binding[0]:
                binding = (stats.remaining, window, wait)
        assert binding is not None
        remaining, window, wait = binding
        return _headers(window.amount, remaining, wait)

    async def reserve(self, key: KeyRecord, estimate: int) -> tuple[Reservation, dict[str, str]]:
        """Before the upstream call: a place in flight, the token estimate, the spend budget."""
        quotas = key.policy.quotas
        now = time.time()
        if quotas.budget_usd is not None and quotas.budget_period is not None:
            moment = datetime.fromtimestamp(now, UTC)
            if self.budgets.spent(key.id, quotas.budget_period, moment) >= quotas.budget_usd:
                _, end = period_bounds(quotas.budget_period, moment)
                self.rejected(key, "budget")
                raise RateLimitError(
                    f"This API key has used its budget of ${quotas.budget_usd:g} for this {quotas.budget_period}.",
                    retry_after=(end - moment).total_seconds(), code="insufficient_quota",
                )
        holds_slot = False
        if quotas.max_concurrency is not None:
            if self._inflight.get(key.id, 0) >= quotas.max_concurrency:
                self.rejected(key, "concurrency")
                raise RateLimitError(
                    f"This API key already has {quotas.max_concurrency} requests in flight, its limit.", retry_after=1
                )
            self._inflight[key.id] = self._inflight.get(key.id, 0) + 1
            holds_slot = True
        reservation = Reservation(key, 0, holds_slot)
        try:
            headers = await self._take_tokens(key, estimate)
        except RateLimitError:
            await self.settle(reservation, 0)
            raise
        reservation.tokens = estimate if headers else 0
        return reservation, headers

    async def _take_tokens(self, key: KeyRecord, estimate: int) -> dict[str, str]:
        quotas = key.policy.quotas
        windows = [_tokens(amount, per) for amount, per in ((quotas.tpm, "minute"), (quotas.tpd, "day"))
                   if amount is not None]
        if not windows:
            return {}
        limiter = self._limiter
        for window in windows:
            if estimate > window.amount:  # can never fit: refuse at once, as OpenAI does
                self.rejected(key, "tokens")
                period = "minute" if isinstance(window, RateLimitItemPerMinute) else "day"
                raise RateLimitError(
                    f"Request too large for this key: about {estimate} tokens, limit {window.amount} per {period}. "
                    "Send less input or a lower max_tokens.", retry_after=window.get_expiry(),
                    headers=_headers(window.amount, 0, window.get_expiry(), "tokens"),
                )
            if not await limiter.test(window, key.id, cost=estimate):
                self.rejected(key, "tokens")
                stats = await limiter.get_window_stats(window, key.id)
                wait = max(0.001, stats.reset_time - time.time())
                raise RateLimitError(
                    f"Rate limit reached for tokens: {window.amount} per "
                    f"{'minute' if isinstance(window, RateLimitItemPerMinute) else 'day'} for this key. "
                    f"Please try again in {format_reset(wait)}.",
                    retry_after=wait, headers=_headers(window.amount, stats.remaining, wait, "tokens"),
                )
        binding: tuple[int, RateLimitItem, float] | None = None
        for window in windows:
            await limiter.hit(window, key.id, cost=estimate)
            stats = await limiter.get_window_stats(window, key.id)
            wait = max(0.0, stats.reset_time - time.time())
            if binding is None or stats.remaining < binding[0]:
                binding = (stats.remaining, window, wait)
        assert binding is not None
        return _headers(binding[1].amount, binding[0], binding[2], "tokens")

    async def settle(self, reservation: Reservation, actual_tokens: int, cost_usd: float = 0.0) -> None:
        """After the call: the token windows move from the estimate to the real count; the slot frees."""
        if reservation.settled:
            return
        reservation.settled = True
        key = reservation.key
        if reservation.holds_slot:
            self._inflight[key.id] = max(0, self._inflight.get(key.id, 1) - 1)
        quotas = key.policy.quotas
        if cost_usd and quotas.budget_period is not None:
            self.budgets.add(key.id, quotas.budget_period, cost_usd, datetime.now(UTC))
        delta = actual_tokens - reservation.tokens
        if not reservation.tokens or not delta:
            return
        for amount, per in ((quotas.tpm, "minute"), (quotas.tpd, "day")):
            if amount is not None:
                # A refund (negative) always applies; an overrun applies while the window has room.
                await self._limiter.hit(_tokens(amount, per), key.id, cost=delta)

    def rejected(self, key: KeyRecord, kind: str) -> None:
        if self.on_reject is not None:
            self.on_reject(key.id, kind)

    def inflight(self, key_id: str) -> int:
        return self._inflight.get(key_id, 0)

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


def _headers(limit: int, remaining: int, reset_in: float, kind: str = "requests") -> dict[str, str]:
    return {
        f"x-ratelimit-limit-{kind}": str(limit),
        f"x-ratelimit-remaining-{kind}": str(remaining),
        f"x-ratelimit-reset-{kind}": format_reset(reset_in),
    }
