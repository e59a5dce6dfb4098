"""Quotas in Redis: windows taken by one script per request, and places in flight shared by replicas."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from app.errors import RateLimitError
from app.quota import QuotaService
from app.quota._inflight import SharedInflight
from keys import KeyRecord, Policy, Quotas
from tests.support import within_one_minute
from tests.support.redis import machine_redis_up

REDIS = "redis://127.0.0.1:6379/0"


pytestmark = pytest.mark.skipif(not machine_redis_up(), reason="no Redis on 127.0.0.1:6379")


def a_key(limit: int) -> KeyRecord:
    return KeyRecord(
        id=f"k{uuid.uuid4().hex[:10]}", name="team", secret_digest=b"", previous_secret_digest=None,
        previous_expires_at=None, policy=Policy(allowed_models=("*",), quotas=Quotas(max_concurrency=limit)),
        expires_at=None, disabled=False, revoked_at=None, created_at=0.0, updated_at=0.0, revision=1,
    )


async def test_places_in_flight_are_shared_by_two_replicas() -> None:
    first, second = QuotaService(REDIS), QuotaService(REDIS)
    key = a_key(2)
    try:
        held = [(await first.reserve(key, 1))[0], (await second.reserve(key, 1))[0]]
        for replica in (first, second):
            with pytest.raises(RateLimitError, match="2 requests in flight"):
                await replica.reserve(key, 1)
        assert await first.inflight(key.id) == 2
        await second.settle(held[1], 1)
        again, _ = await first.reserve(key, 1)  # the place second freed is free for first at once
        assert await second.inflight(key.id) == 2
        await first.settle(held[0], 1)
        await first.settle(again, 1)
        assert await second.inflight(key.id) == 0
    finally:
        await first.close()
        await second.close()


async def test_a_replica_that_dies_frees_its_places_within_one_lease() -> None:
    lost, survivor = SharedInflight(REDIS, lease=0.6), SharedInflight(REDIS, lease=0.6)
    key = a_key(1)
    try:
        assert await lost.acquire(key.id, 1) is not None
        await lost.close()  # dies without releasing: its lease is no longer renewed
        assert await survivor.acquire(key.id, 1) is None
        await asyncio.sleep(0.8)
        assert await survivor.acquire(key.id, 1) is not None
    finally:
        await survivor.close()


async def test_a_running_request_keeps_its_place_past_the_lease() -> None:
    holder, other = SharedInflight(REDIS, lease=0.6), SharedInflight(REDIS, lease=0.6)
    key = a_key(1)
    try:
        token = await holder.acquire(key.id, 1)
        assert token is not None
        await asyncio.sleep(1.5)  # over two leases: renewed in the background
        assert await other.acquire(key.id, 1) is None
        await holder.release(key.id, token)
        assert await other.acquire(key.id, 1) is not None
    finally:
        await holder.close()
        await other.close()


async def test_redis_windows_take_all_or_nothing_in_one_step() -> None:
    from app.quota._windows import RedisWindows

    windows = RedisWindows(REDIS)
    name = f"REQ:k{uuid.uuid4().hex[:10]}"
    minute, day = (10, 60), (3, 86_400)
    try:
        with within_one_minute(5):  # the counts below are one clock minute's (and one day's)
            for expected in (2, 1, 0):
                taken = await windows.take_all(name, [minute, day], 1)
                assert all(w.allowed for w in taken)
                assert taken[1].remaining == expected
            refused = await windows.take_all(name, [minute, day], 1)
            assert [w.allowed for w in refused] == [True, False]  # the day window is full
            assert refused[1].reset_in > 60  # it frees only as the day slides
            (only_minute,) = await windows.take_all(name, [minute], 1)
            assert only_minute.remaining == 6  # the refused request took nothing from the minute window
            await windows.take_all(name, [minute], -4, force=True)  # a refund
            (after,) = await windows.take_all(name, [minute], 0)
            assert after.remaining == 10
    finally:
        await windows.close()


async def test_a_hundred_concurrent_takes_against_a_limit_of_five_let_exactly_five_through() -> None:
    from app.quota._windows import RedisWindows

    windows = RedisWindows(REDIS)
    name = f"REQ:k{uuid.uuid4().hex[:10]}"
    try:
        with within_one_minute(5):  # across the end of a minute a sixth take would fit
            results = await asyncio.gather(*[windows.take_all(name, [(5, 60)], 1) for _ in range(100)])
        assert sum(1 for (w,) in results if w.allowed) == 5
    finally:
        await windows.close()


def tokens_key(**quotas: int) -> KeyRecord:
    return KeyRecord(
        id=f"k{uuid.uuid4().hex[:10]}", name="team", secret_digest=b"", previous_secret_digest=None,
        previous_expires_at=None, policy=Policy(allowed_models=("*",), quotas=Quotas(**quotas)),
        expires_at=None, disabled=False, revoked_at=None, created_at=0.0, updated_at=0.0, revision=1,
    )


async def test_a_reservation_that_fails_midway_gives_its_place_back(monkeypatch: pytest.MonkeyPatch) -> None:
    quota = QuotaService(REDIS)
    key = tokens_key(max_concurrency=1, tpm=10_000)

    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("the token step failed")

    try:
        with monkeypatch.context() as patch:
            patch.setattr(quota.windows, "take_all", broken)
            with pytest.raises(RuntimeError):
                await quota.reserve(key, 100)
        assert await quota.inflight(key.id) == 0
        reservation, _ = await quota.reserve(key, 100)  # the key's one place is free again
        await quota.settle(reservation, 100)
    finally:
        await quota.close()


async def test_failing_open_counts_what_was_used_once_the_store_is_back(monkeypatch: pytest.MonkeyPatch) -> None:
    from app.quota._windows import QuotaStoreUnavailable

    quota = QuotaService(REDIS, fail_open=True)
    key = tokens_key(tpm=10_000)

    async def away(*args: object, **kwargs: object) -> None:
        raise QuotaStoreUnavailable("paused")

    try:
        with monkeypatch.context() as patch:
            patch.setattr(quota.windows, "take_all", away)
            reservation, headers = await quota.reserve(key, 5_000)  # served without the token window
        assert headers == {}
        with within_one_minute(5):  # in the next minute the 100 tokens would weigh a little less
            await quota.settle(reservation, 100)  # the store is back: the 100 tokens used are counted, no refund
            (window,) = await quota.windows.take_all(f"TOK:{key.id}", [(10_000, 60)], 0)
        assert window.remaining == 9_900
    finally:
        await quota.close()
