"""Quota windows, reservations and budgets, with the clock moved instead of waited for."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
import time_machine

from app.errors import RateLimitError
from app.quota import QuotaService, period_bounds
from app.quota._budget import BudgetBook
from keys import KeyRecord, Policy, Quotas

START = datetime(2026, 11, 23, 12, 0, 10, tzinfo=UTC)


def key(**quotas: object) -> KeyRecord:
    return KeyRecord(
        id="key1", name="k", secret_digest=b"", previous_secret_digest=None, previous_expires_at=None,
        policy=Policy(allowed_models=("*",), quotas=Quotas(**quotas)),  # type: ignore[arg-type]
        expires_at=None, disabled=False, revoked_at=None, created_at=0.0, updated_at=0.0, revision=1,
    )


async def test_a_request_window_refuses_then_frees_as_the_clock_moves() -> None:
    with time_machine.travel(START, tick=False) as clock:
        quota = QuotaService("memory://")
        k = key(rpm=2)
        first = await quota.take_request(k)
        assert first["x-ratelimit-remaining-requests"] == "1"
        await quota.take_request(k)
        with pytest.raises(RateLimitError) as info:
            await quota.take_request(k)
        # The current minute ends 50 s from :10, and the request fits just after: 51 in whole seconds.
        assert info.value.headers["retry-after"] == "51"
        assert info.value.headers["retry-after-ms"] == "50001"
        clock.shift(49)
        with pytest.raises(RateLimitError):  # not yet
            await quota.take_request(k)
        clock.shift(1.5)  # Retry-After has passed: one request fits, as promised
        await quota.take_request(k)
        with pytest.raises(RateLimitError):  # the previous minute still weighs ~2 x 59.5/60
            await quota.take_request(k)
        clock.shift(30)  # half of the previous minute has slid out of the last 60 s
        assert (await quota.take_request(k))["x-ratelimit-limit-requests"] == "2"
        await quota.close()


async def test_exactly_the_limit_passes_under_concurrency() -> None:
    quota = QuotaService("memory://")
    k = key(rpm=5)

    async def one() -> bool:
        try:
            await quota.take_request(k)
        except RateLimitError:
            return False
        return True

    results = await asyncio.gather(*(one() for _ in range(100)))
    assert results.count(True) == 5
    await quota.close()


async def test_tokens_reserve_an_estimate_and_settle_to_the_real_count() -> None:
    with time_machine.travel(START, tick=False):
        quota = QuotaService("memory://")
        k = key(tpm=1000)
        reservation, headers = await quota.reserve(k, 600)
        assert headers["x-ratelimit-remaining-tokens"] == "400"
        with pytest.raises(RateLimitError):  # 600 held: another 600 does not fit
            await quota.reserve(k, 600)
        await quota.settle(reservation, 100)  # it used far less than it reserved
        second, headers = await quota.reserve(k, 600)
        assert headers["x-ratelimit-remaining-tokens"] == "300"
        with pytest.raises(RateLimitError, match="Request too large"):
            await quota.reserve(k, 1001)
        await quota.settle(second, 600)
        await quota.close()


async def test_concurrency_slots_are_taken_and_given_back() -> None:
    quota = QuotaService("memory://")
    k = key(max_concurrency=2)
    held = [(await quota.reserve(k, 10))[0] for _ in range(2)]
    with pytest.raises(RateLimitError, match="in flight"):
        await quota.reserve(k, 10)
    await quota.settle(held[0], 5)
    await quota.settle(held[0], 5)  # settling twice gives back one slot, not two
    assert await quota.inflight(k.id) == 1
    await quota.reserve(k, 10)
    await quota.close()


async def test_a_spent_budget_refuses_until_the_period_ends() -> None:
    with time_machine.travel(START, tick=False) as clock:
        quota = QuotaService("memory://")
        k = key(budget_usd=1.0, budget_period="day")
        reservation, _ = await quota.reserve(k, 10)
        await quota.settle(reservation, 10, cost_usd=1.25)
        with pytest.raises(RateLimitError) as info:
            await quota.reserve(k, 10)
        assert info.value.code == "insufficient_quota"
        assert info.value.retry_after == 12 * 3600 - 10  # until midnight UTC...
        # ...too long to wait: the SDKs and Codex are told not to retry, instead of sleeping for hours.
        assert "retry-after" not in info.value.headers and "retry-after-ms" not in info.value.headers
        assert info.value.headers["x-should-retry"] == "false"
        clock.shift(12 * 3600)
        await quota.reserve(k, 10)  # a new day, a new budget
        await quota.close()


def test_calendar_periods() -> None:
    now = datetime(2026, 11, 25, 15, 30, tzinfo=UTC)  # a Wednesday
    assert period_bounds("day", now) == (datetime(2026, 11, 25, tzinfo=UTC), datetime(2026, 11, 26, tzinfo=UTC))
    assert period_bounds("week", now) == (datetime(2026, 11, 23, tzinfo=UTC), datetime(2026, 11, 30, tzinfo=UTC))
    assert period_bounds("month", now) == (datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC))
    assert period_bounds("month", datetime(2026, 12, 31, tzinfo=UTC))[1] == datetime(2027, 1, 1, tzinfo=UTC)
    book = BudgetBook()
    book.add("k", "day", 0.5, now)
    assert book.spent("k", "day", now) == 0.5
    assert book.spent("k", "day", datetime(2026, 11, 26, tzinfo=UTC)) == 0.0


def test_a_reload_from_the_database_never_forgets_spend_not_yet_written() -> None:
    now = datetime(2026, 11, 25, 15, 30, tzinfo=UTC)
    book = BudgetBook()
    book.add("k", "day", 0.5, now)
    book.load("k", "day", 0.0, now)  # the usage row of that 0.5 is still queued
    assert book.spent("k", "day", now) == 0.5
    book.load("k", "day", 2.0, now)  # other replicas spent too
    assert book.spent("k", "day", now) == 2.0
    tomorrow = datetime(2026, 11, 26, 0, 0, 1, tzinfo=UTC)
    book.load("k", "day", 0.0, tomorrow)
    assert book.spent("k", "day", tomorrow) == 0.0  # a new period starts from the database's total


async def test_expired_counters_are_forgotten_a_slice_at_a_time() -> None:
    from app.quota._windows import MemoryWindows

    windows = MemoryWindows(sweep_every=0.01)
    with time_machine.travel(START, tick=False) as clock:
        for i in range(20_000):
            await windows.take(f"REQ:key{i}", 5, 60)
        assert len(windows) == 20_000
        clock.shift(3 * 60)  # both of every key's windows have passed
        sweeper = windows._sweeper
        assert sweeper is not None
        turns_during_sweep = 0

        async def other_work() -> None:
            nonlocal turns_during_sweep
            while not sweeper.done():
                turns_during_sweep += 1
                await asyncio.sleep(0)

        await asyncio.gather(other_work(), sweeper)
        assert len(windows) == 0
        assert turns_during_sweep >= 3  # the loop kept serving other work between slices
    await windows.close()
