from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import replace

import pytest

from app._db import create_engine
from app.settings import Settings
from keys import (
    AuthRejected,
    KeyCache,
    KeyNameTaken,
    KeyNotFound,
    KeyRevoked,
    KeyStore,
    NotCached,
    Policy,
    Quotas,
    Rejection,
    generate_token,
)
from tests.support import dump


@pytest.fixture
async def store(settings: Settings):  # type: ignore[no-untyped-def]
    engine = create_engine(settings)
    yield KeyStore(engine)
    await engine.dispose()


async def test_a_created_key_authenticates_and_only_its_hash_is_stored(store: KeyStore, settings: Settings) -> None:
    record, token = await store.create("alice", Policy(allowed_models=("gpt-5*",), quotas=Quotas(rpm=60)))
    cache = KeyCache(store)
    await cache.refresh()
    assert cache.authenticate(token, time.time()).id == record.id
    secret = token.split("_")[2][:32]
    stored = dump(settings)
    assert record.id in stored and secret not in stored and token not in stored


async def test_names_are_unique_among_live_keys(store: KeyStore) -> None:
    first, _ = await store.create("bob", Policy(allowed_models=("*",)))
    with pytest.raises(KeyNameTaken):
        await store.create("bob", Policy(allowed_models=("*",)))
    await store.revoke("bob")
    second, _ = await store.create("bob", Policy(allowed_models=("*",)))
    assert second.id != first.id
    assert (await store.get("bob")).id == second.id  # the live key wins the name


async def test_unknown_references_say_how_to_find_keys(store: KeyStore) -> None:
    with pytest.raises(KeyNotFound, match="keys list"):
        await store.get("nobody")


async def test_revoked_keys_cannot_be_changed(store: KeyStore) -> None:
    await store.create("carol", Policy(allowed_models=("*",)))
    await store.revoke("carol")
    with pytest.raises(KeyRevoked):
        await store.update("carol", disabled=True)
    with pytest.raises(KeyRevoked):
        await store.rotate("carol")


async def authenticate(cache: KeyCache, token: str, now: float) -> object:
    """As a request does: from the cache, or one lookup for a key the cache has not seen."""
    try:
        return cache.authenticate(token, now)
    except NotCached as miss:
        return await cache.fetch(miss, now)


async def test_every_change_reaches_a_cache_on_refresh(store: KeyStore) -> None:
    record, token = await store.create("dave", Policy(allowed_models=("*",)))
    cache = KeyCache(store)
    await cache.refresh()
    now = time.time()

    await store.update(record.id, disabled=True)
    assert await cache.refresh() == 1
    with pytest.raises(AuthRejected) as info:
        cache.authenticate(token, now)
    assert info.value.reason is Rejection.DISABLED

    await store.update(record.id, disabled=False, expires_at=now - 1)
    await cache.refresh()
    with pytest.raises(AuthRejected) as info:
        cache.authenticate(token, now)
    assert info.value.reason is Rejection.EXPIRED

    await store.update(record.id, expires_at=None, policy=Policy(allowed_models=("o3",)))
    await cache.refresh()
    assert cache.authenticate(token, now).policy.allowed_models == ("o3",)

    await store.revoke(record.id)
    await cache.refresh()
    with pytest.raises(AuthRejected) as info:
        await authenticate(cache, token, now)
    assert info.value.reason is Rejection.INVALID
    assert await cache.refresh() == 0  # nothing new: one counter read, no row reads


async def test_rotation_with_grace_keeps_the_old_secret_working_until_it_ends(store: KeyStore) -> None:
    record, old = await store.create("erin", Policy(allowed_models=("*",)))
    rotated, new = await store.rotate("erin", grace_seconds=3600)
    assert rotated.id == record.id and new != old
    cache = KeyCache(store)
    await cache.refresh()
    now = time.time()
    assert cache.authenticate(new, now).id == record.id
    assert cache.authenticate(old, now).id == record.id
    with pytest.raises(AuthRejected):
        cache.authenticate(old, now + 3601)

    _, newest = await store.rotate("erin")
    await cache.refresh()
    with pytest.raises(AuthRejected):
        cache.authenticate(new, now)
    assert cache.authenticate(newest, now).id == record.id


async def test_a_key_the_cache_has_not_seen_yet_works_at_once_and_made_up_ones_cost_one_lookup(
        store: KeyStore) -> None:
    record, token = await store.create("frank", Policy(allowed_models=("*",)))
    cache = KeyCache(store)  # never refreshed: knows no keys, as a replica just after another made one
    with pytest.raises(NotCached):
        cache.authenticate(token, time.time())
    assert (await authenticate(cache, token, time.time())).id == record.id  # type: ignore[attr-defined]
    assert cache.lookups == 1
    assert cache.authenticate(token, time.time()).id == record.id  # now cached: no second lookup

    made_up, _ = generate_token()  # a valid checksum, but no such key
    for _ in range(5):
        with pytest.raises(AuthRejected) as info:
            await authenticate(cache, made_up, time.time())
        assert info.value.reason is Rejection.INVALID
    assert cache.lookups == 2  # the miss is remembered: one query, not five
    with pytest.raises(AuthRejected):
        cache.authenticate("pg_garbage", time.time())  # malformed: no lookup at all
    assert cache.lookups == 2


async def test_concurrent_writers_never_see_database_is_locked(store: KeyStore) -> None:
    async def work(i: int) -> None:
        await store.create(f"user-{i}", Policy(allowed_models=("*",)))
        await store.update(f"user-{i}", disabled=True)

    await asyncio.gather(*(work(i) for i in range(40)))
    assert len(await store.list()) == 40
    assert await store.revision() == 80


async def test_concurrent_edits_of_one_key_all_land(store: KeyStore) -> None:
    await store.create("shared", Policy(allowed_models=("base",)))

    def adding(model: str) -> Callable[[Policy], Policy]:
        return lambda policy: replace(policy, allowed_models=(*policy.allowed_models, model))

    await asyncio.gather(*(store.update("shared", policy=adding(f"model-{i}")) for i in range(10)))
    models = (await store.get("shared")).policy.allowed_models
    assert sorted(models) == sorted(["base", *(f"model-{i}" for i in range(10))])
