"""Scale-out: three real replicas sharing one PostgreSQL database and one Redis.

Each test gets a fresh PostgreSQL database; the replicas are ``poolgate serve`` processes
with the same settings, as an operator would run them behind a load balancer.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import time
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet

from app._db import upgrade
from app.fake_upstream import rate_limited
from app.settings import Settings
from keys import Policy, Quotas
from tests.support import (
    METRICS_TOKEN,
    FakeUpstreamThread,
    ServerProcess,
    add_upstreams,
    create_key,
    poolgate,
    wait_for,
    wait_for_each,
    within_one_minute,
)

pytestmark = pytest.mark.slow

PG_SERVER = os.environ.get("POOLGATE_TEST_PG_SERVER", "postgresql+asyncpg://postgres@127.0.0.1:5432")
REDIS_URL = os.environ.get("POOLGATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def _reachable(check: Any) -> str | None:
    try:
        asyncio.run(asyncio.wait_for(check(), 3))
    except Exception as exc:
        return f"{exc.__class__.__name__}: {exc}"
    return None


async def _pg(sql: str, database: str = "postgres") -> None:
    import asyncpg

    dsn = PG_SERVER.replace("postgresql+asyncpg://", "postgresql://") + "/" + database
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def _redis_ping() -> None:
    import coredis

    client = coredis.Redis.from_url(REDIS_URL, connect_timeout=2, stream_timeout=2)
    try:
        await client.ping()
    finally:
        client.connection_pool.disconnect()


@pytest.fixture
def shared(tmp_path: Path) -> Iterator[Settings]:
    """Settings for replicas: a fresh PostgreSQL database, the machine's Redis, one encryption key."""
    for name, check in (("PostgreSQL", lambda: _pg("SELECT 1")), ("Redis", _redis_ping)):
        problem = _reachable(check)
        if problem is not None:
            pytest.skip(f"scale-out tests need {name} ({problem})")
    database = f"poolgate_replicas_{uuid.uuid4().hex[:12]}"
    asyncio.run(_pg(f'CREATE DATABASE "{database}"'))
    try:
        settings = Settings(
            data_dir=tmp_path / "data",
            database_url=f"{PG_SERVER}/{database}",
            limits_url=REDIS_URL,
            encryption_keys=(Fernet.generate_key().decode(),),
            metrics_token=METRICS_TOKEN,
        )
        upgrade(settings)
        yield settings
    finally:
        asyncio.run(_pg(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))


def _env(settings: Settings) -> dict[str, str]:
    return {"POOLGATE_ENCRYPTION_KEYS": ",".join(settings.encryption_keys)}


@pytest.fixture
def cluster(shared: Settings) -> Iterator[Any]:
    """``cluster(upstreams, keys)`` starts fakes and three replicas; all stopped afterwards."""
    started: list[Any] = []

    def build(
        upstreams: list[str], keys: dict[str, Policy], **fake_options: Any
    ) -> tuple[list[ServerProcess], dict[str, Any], dict[str, str]]:
        fakes = {name: FakeUpstreamThread(name=name, api_key=f"sk-{name}-0123456789", **fake_options)
                 for name in upstreams}
        started.extend(fakes.values())
        add_upstreams(shared, [
            {"name": name, "base_url": fake.base_url, "models": "gpt-5*", "credential": f"sk-{name}-0123456789"}
            for name, fake in fakes.items()
        ])
        tokens = {name: create_key(shared, name, policy)[1] for name, policy in keys.items()}
        replicas = []
        for _ in range(3):
            replica = ServerProcess(shared, env=_env(shared))
            started.append(replica)
            replicas.append(replica)
        with ThreadPoolExecutor(3) as pool:
            list(pool.map(lambda r: r.start(), replicas))
        return replicas, fakes, tokens

    yield build
    for item in reversed(started):
        item.stop()


def _chat(replica: ServerProcess, token: str, model: str = "gpt-5") -> tuple[int, dict[str, Any]]:
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}]}).encode()
    request = urllib.request.Request(
        replica.base_url + "/v1/chat/completions", data=body, method="POST",
        headers={"authorization": f"Bearer {token}", "content-type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=15) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_a_request_quota_holds_across_three_replicas(cluster: Any) -> None:
    replicas, _, tokens = cluster(["acct-1"], {"team": Policy(allowed_models=("gpt-5*",), quotas=Quotas(rpm=30))})
    # rpm counts the clock's minute: a burst across its end would let a 31st request through.
    with within_one_minute(), ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda i: _chat(replicas[i % 3], tokens["team"]), range(100)))
    statuses = [status for status, _ in results]
    assert statuses.count(200) == 30
    assert statuses.count(429) == 70
    assert {body["error"]["code"] for status, body in results if status == 429} == {"rate_limit_exceeded"}


def test_a_key_revoked_with_the_cli_is_refused_by_every_replica_within_two_seconds(
    cluster: Any, shared: Settings
) -> None:
    replicas, _, tokens = cluster(["acct-1"], {"leaver": Policy(allowed_models=("gpt-5*",))})
    assert all(_chat(replica, tokens["leaver"])[0] == 200 for replica in replicas)
    result = poolgate(shared, "keys", "revoke", "leaver", env=_env(shared))
    assert result.code == 0, result.stderr
    revoked_at = time.monotonic()
    # Every replica is asked at once, with a request that needs no upstream: the test's own time is not the replicas'.
    refused_at = wait_for_each(replicas, lambda r: r.http.get("/v1/models", tokens["leaver"]).status == 401,
                               deadline=revoked_at + 2.0, what=lambda r: f"replica {r.port} to refuse")
    assert max(refused_at) - revoked_at < 2.0


def _cooling(replica: ServerProcess, upstream: str) -> bool:
    metrics = replica.http.metrics()
    return f'poolgate_upstream_cooling_down{{upstream="{upstream}"}} 1' in metrics


def test_an_upstream_429_seen_by_one_replica_steers_the_others_away(cluster: Any) -> None:
    replicas, fakes, tokens = cluster(["acct-a", "acct-b"], {"team": Policy(allowed_models=("gpt-5*",))})
    fakes["acct-a"].do(fakes["acct-a"].fake.script, rate_limited(30))
    # Replica 0 sends until acct-a has answered its 429 (the request itself is retried on acct-b).
    wait_for(lambda: _chat(replicas[0], tokens["team"])[0] == 200 and len(fakes["acct-a"].requests) == 1,
             timeout=10, what="acct-a to be rate-limited once")
    seen_at = time.monotonic()
    wait_for_each(replicas[1:], lambda r: _cooling(r, "acct-a"), deadline=seen_at + 1.0,
                  what=lambda r: f"replica {r.port} to learn of the cooldown")
    before = len(fakes["acct-b"].requests)
    for i in range(20):
        assert _chat(replicas[1 + i % 2], tokens["team"])[0] == 200
    assert len(fakes["acct-a"].requests) == 1  # nobody else asked the rate-limited account
    assert len(fakes["acct-b"].requests) == before + 20


def test_a_limit_on_requests_in_flight_holds_across_replicas(cluster: Any) -> None:
    replicas, _, tokens = cluster(
        ["acct-1"], {"team": Policy(allowed_models=("gpt-5*",), quotas=Quotas(max_concurrency=2))},
        chunks=100, interval=0.05,
    )
    body = json.dumps({"model": "gpt-5", "stream": True, "messages": [{"role": "user", "content": "hi"}]})
    streams = []
    try:
        for replica in replicas[:2]:  # two long streams, each on its own replica
            conn = http.client.HTTPConnection("127.0.0.1", replica.port, timeout=15)
            conn.request("POST", "/v1/chat/completions", body=body, headers={
                "authorization": f"Bearer {tokens['team']}", "content-type": "application/json"})
            response = conn.getresponse()
            assert response.status == 200
            assert response.readline().startswith(b"data:")
            streams.append(conn)
        status, error = _chat(replicas[2], tokens["team"])
        assert status == 429
        assert "2 requests in flight" in error["error"]["message"]
        usage = replicas[2].http.get("/v1/usage", tokens["team"]).json()
        assert usage["limits"]["in_flight"] == 2
    finally:
        for conn in streams:
            conn.close()
    wait_for(lambda: _chat(replicas[2], tokens["team"])[0] == 200, timeout=5, what="places freed by closed streams")


def _respond(replica: ServerProcess, token: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        replica.base_url + "/v1/responses", data=json.dumps({"model": "gpt-5", **body}).encode(), method="POST",
        headers={"authorization": f"Bearer {token}", "content-type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=15) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_every_follow_up_finds_its_owner_on_whichever_replica_it_lands(cluster: Any) -> None:
    replicas, fakes, tokens = cluster(["acct-1", "acct-2"], {"alice": Policy(allowed_models=("*",))})

    def owner(response_id: str) -> str:
        return next(name for name, fake in fakes.items() if fake.do(lambda f=fake: response_id in f.fake.responses))

    conversations = []
    for n in range(6):  # new conversations, spread over the accounts by each replica's balancer
        status, first = _respond(replicas[n % 3], tokens["alice"], {"input": f"start {n}"})
        assert status == 200, first
        conversations.append(first["id"])
    assert {owner(rid) for rid in conversations} == {"acct-1", "acct-2"}
    reached = 0
    for turn in range(2):
        for n, previous in enumerate(conversations):
            # The follow-up goes to another replica than the one that made the response, at once.
            replica = replicas[(n + turn + 1) % 3]
            status, answer = _respond(replica, tokens["alice"], {"input": f"turn {turn}",
                                                                 "previous_response_id": previous})
            assert status == 200, answer
            assert owner(answer["id"]) == owner(previous)
            reached += 1
            conversations[n] = answer["id"]
    assert reached == 12  # 12 of 12 follow-ups at their owner
