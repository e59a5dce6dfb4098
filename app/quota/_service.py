"""Per-key quotas: request and token windows, requests in flight, and spend.

A request takes one unit from each of the key's request windows (per minute, per day)
before anything else. Before the upstream call it reserves an estimate of its tokens
in the token windows, one place among the key's requests in flight, and is checked
against its spend budget; after the call the reservation settles to the real usage.
Answers carry OpenAI's ``x-ratelimit-*`` headers for the window closest to running
out; a refusal carries ``Retry-After`` exact to when that window frees enough, or, when
waiting cannot help within a minute, ``x-should-retry: false``.

The windows are sliding window counters (see ``_windows``): in this process for
``memory://``, in Redis (one Lua script per step) for ``redis://``, and through the
``limits`` library for Sentinel and Cluster URLs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NoReturn

from app._redis import RedisAddress, RedisLink, plain_redis_url
from app.errors import RateLimitError, ServiceUnavailableError
from app.quota._budget import BudgetBook, period_bounds
from app.quota._headers import format_reset
from app.quota._inflight import InFlight, LocalInflight, SharedInflight
from app.quota._windows import MemoryWindows, QuotaStoreUnavailable, RedisWindows, Window, Windows
from app.settings import SettingsError
from keys import KeyRecord

__all__ = ["QuotaService", "Reservation", "format_usd"]

log = logging.getLogger("poolgate.quota")

MINUTE, DAY = 60, 86_400


@dataclass(slots=True)
class Reservation:
    """What one request holds from its key's quotas until it ends."""

    key: KeyRecord
    tokens: int
    slot: str | None
    """This request's place among the key's requests in flight, when the key limits them."""
    settled: bool = False


class QuotaService:
    def __init__(self, url: str, fail_open: bool = False, *,
                 on_reject: Callable[[str, str], None] | None = None,
                 windows: Windows | None = None, in_flight: InFlight | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.fail_open = fail_open
        """When the shared store is away: serve without quotas (True) or answer 503 (False, the default)."""
        self._last_outage_log = 0.0
        self._on_reject = on_reject
        """Called with (key id, kind) for every refusal (the metrics count them)."""
        if windows is not None and in_flight is not None:
            self.windows, self.in_flight = windows, in_flight
        elif url.startswith("memory://"):
            self.windows, self.in_flight = MemoryWindows(clock), LocalInflight()
        elif plain_redis_url(url) is not None:
            self.windows, self.in_flight = RedisWindows(url), SharedInflight(url)
        else:  # Sentinel and Cluster: the limits library's storage; requests in flight per process
            from app.quota._limits import LimitsWindows, limits_storage

            self.windows, self.in_flight = LimitsWindows(limits_storage(url)), LocalInflight()
            log.warning("with %s limits, --max-concurrency counts per process", url.split("://", 1)[0])
        self.budgets = BudgetBook()

    @classmethod
    def check_url(cls, url: str) -> None:
        """Fail at start, in one line, when the limits storage cannot be used."""
        if url.startswith("memory://"):
            return
        if plain_redis_url(url) is None:
            from app.quota._limits import limits_storage

            limits_storage(url)
            return
        try:
            RedisAddress(url)
        except ValueError as exc:
            raise SettingsError(f"POOLGATE_LIMITS_URL: {exc}") from None

    @classmethod
    async def ping(cls, url: str) -> None:
        """Fail at start, in one line, when the shared quota store does not answer."""
        try:
            async with asyncio.timeout(3):
                if plain_redis_url(url) is not None:
                    link = RedisLink(url, timeout=3)
                    try:
                        alive = await link.call("PING") == "PONG"
                    finally:
                        await link.close()
                else:
                    from app.quota._limits import limits_storage

                    alive = await limits_storage(url).check()
        except Exception as exc:
            alive, reason = False, f"{exc.__class__.__name__}: {exc}"
        else:
            reason = "no answer"
        if not alive:
            raise SettingsError(f"POOLGATE_LIMITS_URL: cannot reach the quota store ({reason})")

    async def _take(self, name: str, windows: list[tuple[int, int]], cost: int, kind: str,
                    key: KeyRecord) -> dict[str, str] | None:
        """The headers of the tightest window; None when the store is away and quotas fail open."""
        try:
            taken = await self.windows.take_all(name, windows, cost)
        except QuotaStoreUnavailable as exc:
            self._store_away(exc)
            return None
        binding = taken[0]
        for position, window in enumerate(taken):
            if not window.allowed:
                self._refuse(key, kind, window, windows[position][1])
            if window.remaining < binding.remaining:
                binding = window
        return _headers(binding, kind)

    def _store_away(self, exc: QuotaStoreUnavailable) -> None:
        """Redis is away: a clear 503 that says so, or (fail-open) no quotas until it is back."""
        now = time.monotonic()
        if now - self._last_outage_log > 10:
            self._last_outage_log = now
            log.warning("quota store (POOLGATE_LIMITS_URL) unavailable: %s; %s", exc,
                        "serving without quotas (POOLGATE_QUOTA_FAIL_OPEN)" if self.fail_open else "answering 503")
        if not self.fail_open:
            raise ServiceUnavailableError(
                "poolgate cannot reach its quota store right now, so it cannot check this key's limits. "
                "Please try again shortly.",
                code="quota_store_unavailable", headers={"retry-after": "1"},
            ) from None

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
        if quotas.rpm is None and quotas.rpd is None:
            return {}
        windows = [(limit, period) for limit, period in ((quotas.rpm, MINUTE), (quotas.rpd, DAY)) if limit]
        return await self._take(f"REQ:{key.id}", windows, 1, "requests", key) or {}

    async def reserve(self, key: KeyRecord, estimate: int) -> tuple[Reservation, dict[str, str]]:
        """Before the upstream call: the spend budget, a place in flight, the token estimate."""
        quotas = key.policy.quotas
        if quotas.budget_usd is not None and quotas.budget_period is not None:
            moment = datetime.now(UTC)
            if self.budgets.spent(key.id, quotas.budget_period, moment) >= quotas.budget_usd:
                _, end = period_bounds(quotas.budget_period, moment)
                self.rejected(key, "budget")
                raise RateLimitError(
                    f"This API key has used its budget of {format_usd(quotas.budget_usd)} "
                    f"for this {quotas.budget_period}.",
                    retry_after=(end - moment).total_seconds(), code="insufficient_quota", retryable=False,
                )
        slot = None
        if quotas.max_concurrency is not None:
            try:
                slot = await self.in_flight.acquire(key.id, quotas.max_concurrency)
            except QuotaStoreUnavailable as exc:
                self._store_away(exc)  # fail-open: the request goes on without a place
            else:
                if slot is None:
                    self.rejected(key, "concurrency")
                    raise RateLimitError(
                        f"This API key already has {quotas.max_concurrency} requests in flight, its limit.",
                        retry_after=1,
                    )
        reservation = Reservation(key, 0, slot)
        if quotas.tpm is None and quotas.tpd is None:
            return reservation, {}
        windows = [(limit, period) for limit, period in ((quotas.tpm, MINUTE), (quotas.tpd, DAY)) if limit]
        try:
            for limit, period in windows:
                if estimate > limit:  # can never fit: refuse at once, as OpenAI does
                    self.rejected(key, "tokens")
                    raise RateLimitError(
                        f"Request too large for this key: about {estimate} tokens, limit {limit} per "
                        f"{'minute' if period == MINUTE else 'day'}. Send less input or a lower max_tokens.",
                        retry_after=period, headers=_headers(Window(False, limit, 0, period, period), "tokens"),
                        retryable=False,
                    )
            headers = await self._take(f"TOK:{key.id}", windows, estimate, "tokens", key)
        except BaseException:  # refused, store away, or cancelled: the place in flight goes back
            await asyncio.shield(self.settle(reservation, 0))
            raise
        if headers is None:  # the store is away and quotas fail open: settle counts what was used
            return reservation, {}
        reservation.tokens = estimate
        return reservation, headers

    async def settle(self, reservation: Reservation, actual_tokens: int, cost_usd: float = 0.0) -> None:
        """After the call: the token windows move from the estimate to the real count; the slot frees."""
        if reservation.settled:
            return
        reservation.settled = True
        key = reservation.key
        if reservation.slot is not None:
            await self.in_flight.release(key.id, reservation.slot)
        quotas = key.policy.quotas
        if cost_usd and quotas.budget_period is not None:
            self.budgets.add(key.id, quotas.budget_period, cost_usd, datetime.now(UTC))
        delta = actual_tokens - reservation.tokens
        if not delta or (quotas.tpm is None and quotas.tpd is None):
            return
        windows = [(limit, period) for limit, period in ((quotas.tpm, MINUTE), (quotas.tpd, DAY)) if limit]
        try:  # a refund (negative) or an overrun, recorded either way
            await self.windows.take_all(f"TOK:{key.id}", windows, delta, force=True)
        except QuotaStoreUnavailable as exc:  # the answer is already on its way; only the count is lost
            log.warning("could not settle %d tokens for key %s: %s", delta, key.id, exc)

    async def left(self, key: KeyRecord) -> list[dict[str, Any]]:
        """What remains now of each of the key's windows, spending nothing (for the member page)."""
        quotas = key.policy.quotas
        out: list[dict[str, Any]] = []
        for kind, name, pairs in (("requests", f"REQ:{key.id}", ((quotas.rpm, MINUTE), (quotas.rpd, DAY))),
                                  ("tokens", f"TOK:{key.id}", ((quotas.tpm, MINUTE), (quotas.tpd, DAY)))):
            windows = [(limit, period) for limit, period in pairs if limit]
            if not windows:
                continue
            try:
                taken = await self.windows.take_all(name, windows, 0)
            except QuotaStoreUnavailable:
                taken = []
            for (limit, period), window in zip(windows, taken, strict=False):
                out.append({"kind": kind, "per": "minute" if period == MINUTE else "day", "limit": limit,
                            "remaining": max(0, window.remaining), "whole_in": window.whole_in})
        return out

    def rejected(self, key: KeyRecord, kind: str) -> None:
        if self._on_reject is not None:
            self._on_reject(key.id, kind)

    async def inflight(self, key_id: str) -> int:
        """The key's requests in flight: in this process, or across replicas with Redis."""
        try:
            return await self.in_flight.count(key_id)
        except QuotaStoreUnavailable as exc:
            self._store_away(exc)
            return 0

    async def close(self) -> None:
        await self.windows.close()
        await self.in_flight.close()


def format_usd(amount: float) -> str:
    """Dollars as people write them: $20, $12.50, $0.000001 (never 1e-06)."""
    if amount == int(amount):
        return f"${int(amount):,}"
    text = f"{amount:.6f}".rstrip("0")
    return "$" + (text + "0" if text.endswith(".") or len(text.split(".")[1]) == 1 else text)


def _headers(window: Window, kind: str) -> dict[str, str]:
    return {
        f"x-ratelimit-limit-{kind}": str(window.limit),
        f"x-ratelimit-remaining-{kind}": str(window.remaining),
        f"x-ratelimit-reset-{kind}": format_reset(window.whole_in),
    }
