"""Per-key quotas: request and token windows, requests in flight, and spend.

A request takes one unit from each of the key's request windows (per minute, per day)
before anything else. Before the upstream call it reserves an estimate of its tokens
in the token windows, one place among the key's requests in flight, and is checked
against its spend budget; after the call the reservation settles to the real usage.
Answers carry OpenAI's ``x-ratelimit-*`` headers for the window closest to running
out; a refusal carries ``Retry-After`` exact to when that window frees enough.

The windows are sliding window counters (see ``_windows``): in this process for
``memory://``, in Redis through the ``limits`` library for anything else.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NoReturn

from limits.aio.storage import Storage
from limits.errors import ConfigurationError
from limits.storage import storage_from_string

from app.errors import RateLimitError
from app.quota._budget import BudgetBook, period_bounds
from app.quota._headers import format_reset
from app.quota._windows import LimitsWindows, MemoryWindows, Window
from app.settings import SettingsError
from keys import KeyRecord

__all__ = ["QuotaService", "Reservation"]

MINUTE, DAY = 60, 86_400


@dataclass(slots=True)
class Reservation:
    """What one request holds from its key's quotas until it ends."""

    key: KeyRecord
    tokens: int
    holds_slot: bool
    settled: bool = False


class QuotaService:
    def __init__(self, url: str) -> None:
        self.windows: MemoryWindows | LimitsWindows = (
            MemoryWindows() if url.startswith("memory://") else LimitsWindows(self._storage(url)))
        self.budgets = BudgetBook()
        self._inflight: dict[str, int] = {}
        self.on_reject: Callable[[str, str], None] | None = None

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
        if not url.startswith("memory://"):
            cls._storage(url)

    async def _take(self, name: str, windows: list[tuple[int, int]], cost: int, kind: str,
                    key: KeyRecord) -> dict[str, str]:
        """Take from every window, or from none: a refusal by one leaves the others as they were.

        In process memory a take is one indivisible step, so a refusal gives back what the
        earlier windows took; in Redis every window is tested first, then taken.
        """
        take = self.windows.take
        if not self.windows.atomic:
            for limit, period in windows:
                window = await take(name, limit, period, cost, test=True)
                if not window.allowed:
                    self._refuse(key, kind, window, period)
        binding: tuple[Window, int] | None = None
        for position, (limit, period) in enumerate(windows):
            window = await take(name, limit, period, cost)
            if not window.allowed:  # full (or, in Redis, taken by another replica since the test)
                for earlier_limit, earlier_period in windows[:position]:
                    await take(name, earlier_limit, earlier_period, -cost, force=True)
                self._refuse(key, kind, window, period)
            if binding is None or window.remaining < binding[0].remaining:
                binding = (window, period)
        assert binding is not None
        return _headers(binding[0], kind)

    def _refuse(self, key: KeyRecord, kind: str, window: Window, period: int) -> NoReturn:
        self.rejected(key, kind)
        per = "minute" if period == MINUTE else "day"
        raise RateLimitError(
            f"Rate limit reached for {kind}: {window.limit} per {per} for this key. "
            f"Please try again in {format_reset(window.reset_in)}.",
            retry_after=window.reset_in, headers=_headers(window._replace(remaining=0), kind),
        )

    async def take_request(self, key: KeyRecord) -> dict[str, str]:
        """Count one request against the key; its headers, or RateLimitError when over quota."""
        quotas = key.policy.quotas
        windows = [(limit, period) for limit, period in ((quotas.rpm, MINUTE), (quotas.rpd, DAY)) if limit]
        return await self._take(f"REQ:{key.id}", windows, 1, "requests", key) if windows else {}

    async def reserve(self, key: KeyRecord, estimate: int) -> tuple[Reservation, dict[str, str]]:
        """Before the upstream call: the spend budget, a place in flight, the token estimate."""
        quotas = key.policy.quotas
        if quotas.budget_usd is not None and quotas.budget_period is not None:
            moment = datetime.now(UTC)
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
        windows = [(limit, period) for limit, period in ((quotas.tpm, MINUTE), (quotas.tpd, DAY)) if limit]
        if not windows:
            return reservation, {}
        try:
            for limit, period in windows:
                if estimate > limit:  # can never fit: refuse at once, as OpenAI does
                    self.rejected(key, "tokens")
                    raise RateLimitError(
                        f"Request too large for this key: about {estimate} tokens, limit {limit} per "
                        f"{'minute' if period == MINUTE else 'day'}. Send less input or a lower max_tokens.",
                        retry_after=period, headers=_headers(Window(False, limit, 0, period), "tokens"),
                    )
            headers = await self._take(f"TOK:{key.id}", windows, estimate, "tokens", key)
        except RateLimitError:
            await self.settle(reservation, 0)
            raise
        reservation.tokens = estimate
        return reservation, headers

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
        for limit, period in ((quotas.tpm, MINUTE), (quotas.tpd, DAY)):
            if limit:  # a refund (negative) or an overrun, recorded either way
                await self.windows.take(f"TOK:{key.id}", limit, period, delta, force=True)

    def rejected(self, key: KeyRecord, kind: str) -> None:
        if self.on_reject is not None:
            self.on_reject(key.id, kind)

    def inflight(self, key_id: str) -> int:
        return self._inflight.get(key_id, 0)

    async def close(self) -> None:
        await self.windows.close()


def _headers(window: Window, kind: str) -> dict[str, str]:
    return {
        f"x-ratelimit-limit-{kind}": str(window.limit),
        f"x-ratelimit-remaining-{kind}": str(window.remaining),
        f"x-ratelimit-reset-{kind}": format_reset(window.reset_in),
    }

