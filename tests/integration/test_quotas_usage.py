"""Quotas that hold under load, and usage that is recorded, in-process: the real SDK against the app, the app's
windows on a clock that stands still mid-minute (so a burst never straddles two windows)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import openai
import pytest
from sqlalchemy import text

from app.server import Clock
from keys import Policy, Quotas
from tests.support import eventually, poolgate

CHAT = [{"role": "user", "content": "hello there"}]
MID_MINUTE = Clock(time.monotonic, lambda: 1_800_000_030.0)  # a wall clock stopped 30 s into a minute


async def rows(gateway: Any, where: str = "1=1") -> list[dict[str, Any]]:
    await gateway.flush()
    async with gateway.state.engine.connect() as conn:
        result = await conn.execute(text(f"select * from usage where {where} order by id"))
        return [dict(row._mapping) for row in result]


async def burst(gateway: Any, key: str, count: int, body: dict[str, Any]) -> list[int]:
    async def one() -> int:
        response = await gateway.client.post("/v1/chat/completions", json=body, headers=gateway.auth(key))
        return response.status_code

    return list(await asyncio.gather(*(one() for _ in range(count))))


async def test_one_usage_row_per_request_with_tokens_and_cost(make_gateway: Any) -> None:
    gateway = await make_gateway(upstreams={"acct-1": {}})
    client = gateway.sdk()
    await client.chat.completions.create(model="gpt-5", messages=CHAT)
    [c async for c in await client.chat.completions.create(model="gpt-5", messages=CHAT, stream=True)]
    await client.embeddings.create(model="text-embedding-3-small", input="x")
    with pytest.raises(openai.NotFoundError):
        await client.chat.completions.create(model="gpt-99", messages=CHAT)  # refused before any upstream: no row
    recorded = await rows(gateway, "status != 'started'")
    assert len(recorded) == 3
    chat, stream, embedding = recorded
    assert (chat["input_tokens"], chat["output_tokens"], chat["status"], chat["upstream"]) == (2, 5, "ok", "acct-1")
    assert chat["cost_usd"] == pytest.approx((2 * 1.25 + 5 * 10.0) / 1e6)  # gpt-5's catalog prices
    assert stream["stream"] in (1, True) and stream["output_tokens"] == 5 and stream["ttfb_ms"] > 0
    assert embedding["endpoint"] == "embeddings" and embedding["output_tokens"] == 0

    usage = (await gateway.client.get("/v1/usage", headers=gateway.auth())).json()
    assert usage["today"]["requests"] == 3 and usage["today"]["output_tokens"] == 10
    metrics = (await gateway.client.get("/metrics", headers=gateway.auth(gateway.settings.metrics_token))).text
    assert 'poolgate_requests_total{key="' in metrics and 'model="gpt-5"' in metrics
    assert 'poolgate_upstream_inflight{upstream="acct-1"} 0' in metrics


async def test_a_hundred_concurrent_requests_against_a_limit_of_five(make_gateway: Any) -> None:
    gateway = await make_gateway(upstreams={"acct-1": {}}, clock=MID_MINUTE,
                                 keys={"alice": Policy(allowed_models=("*",), quotas=Quotas(rpm=5))})
    statuses = await burst(gateway, "alice", 100, {"model": "gpt-5", "messages": CHAT})
    assert statuses.count(200) == 5 and statuses.count(429) == 95
    assert len(gateway.fakes["acct-1"].requests) == 5
    metrics = (await gateway.client.get("/metrics", headers=gateway.auth(gateway.settings.metrics_token))).text
    assert 'kind="requests"} 95' in metrics


async def test_a_429_says_exactly_when_the_window_frees(make_gateway: Any) -> None:
    gateway = await make_gateway(upstreams={"acct-1": {}}, clock=MID_MINUTE,
                                 keys={"alice": Policy(allowed_models=("*",), quotas=Quotas(rpm=3))})
    assert (await burst(gateway, "alice", 3, {"model": "gpt-5", "messages": CHAT})).count(200) == 3
    with pytest.raises(openai.RateLimitError) as info:
        await gateway.sdk().chat.completions.create(model="gpt-5", messages=CHAT)
    headers = info.value.response.headers
    assert headers["retry-after-ms"] == "30001"  # the minute ends 30 s after the clock's moment, plus 1 ms
    assert headers["retry-after"] == "31"  # whole seconds, rounded up
    assert headers["x-ratelimit-remaining-requests"] == "0"
    # The window is whole again (all 3 requests free) once this minute's 3 have slid out of the last 60 s far
    # enough to weigh under one request: 30 s to the minute's end, then 2/3 of the next minute.
    assert headers["x-ratelimit-reset-requests"] == "1m10s"


async def test_the_sdk_waits_out_a_quota_429_and_then_succeeds(make_gateway: Any) -> None:
    gateway = await make_gateway(upstreams={"acct-1": {}}, fake_options={"chunks": 1200, "interval": 0.05},
                                 keys={"alice": Policy(allowed_models=("*",), quotas=Quotas(max_concurrency=1))})
    holder = asyncio.create_task(gateway.client.post(  # holds the key's one place until it is cancelled
        "/v1/chat/completions", json={"model": "gpt-5", "messages": CHAT, "stream": True}, headers=gateway.auth()))
    await eventually(lambda: gateway.fakes["acct-1"].in_flight, what="the holding stream")

    async def release() -> None:
        """Free the place as soon as the SDK's first try has been refused for it."""
        key_id = gateway.state.key_cache.records()[0].id
        await eventually(lambda: gateway.state.metrics._quota.get((key_id, "concurrency"), 0) >= 1,
                         timeout=30, what="the first try to be refused")
        holder.cancel()

    releasing = asyncio.create_task(release())
    # The first try is refused with Retry-After: 1; the SDK waits that long, retries, and gets through.
    answer = await gateway.sdk(max_retries=2).chat.completions.with_raw_response.create(model="gpt-5",
                                                                                      messages=CHAT)
    await releasing
    assert answer.http_response.status_code == 200
    assert answer.retries_taken >= 1


async def test_concurrency_tokens_and_budget_limits(make_gateway: Any) -> None:
    gateway = await make_gateway(upstreams={"acct-1": {}}, clock=MID_MINUTE, keys={
        "two-at-once": Policy(allowed_models=("*",), quotas=Quotas(max_concurrency=2)),
        "small": Policy(allowed_models=("*",), quotas=Quotas(tpm=1000)),
        "thrifty": Policy(allowed_models=("*",), quotas=Quotas(budget_usd=0.00001, budget_period="day")),
    })
    gateway.fakes["acct-1"].configure(chunks=1200, interval=0.05)
    holders = [asyncio.create_task(gateway.client.post(
        "/v1/chat/completions", json={"model": "gpt-5", "messages": CHAT, "stream": True},
        headers=gateway.auth("two-at-once"))) for _ in range(2)]
    await eventually(lambda: gateway.fakes["acct-1"].in_flight == 2, what="two holding streams")
    with pytest.raises(openai.RateLimitError) as info:
        await gateway.sdk("two-at-once").chat.completions.create(model="gpt-5", messages=CHAT)
    assert "in flight" in info.value.message
    for holder in holders:
        holder.cancel()
    gateway.fakes["acct-1"].configure(chunks=4, interval=0)

    with pytest.raises(openai.RateLimitError) as info:  # its estimate alone is over the limit: refused at once
        await gateway.sdk("small").chat.completions.create(model="gpt-5", messages=CHAT, max_tokens=5000)
    assert "Request too large" in info.value.message
    fits = await gateway.sdk("small").chat.completions.with_raw_response.create(model="gpt-5", messages=CHAT,
                                                                               max_tokens=100)
    assert fits.headers["x-ratelimit-limit-tokens"] == "1000"
    assert int(fits.headers["x-ratelimit-remaining-tokens"]) < 1000

    thrifty = gateway.sdk("thrifty")
    await thrifty.chat.completions.create(model="gpt-5", messages=CHAT)  # costs more than the whole budget
    with pytest.raises(openai.RateLimitError) as info:
        await thrifty.chat.completions.create(model="gpt-5", messages=CHAT)
    assert info.value.code == "insufficient_quota"
    assert "retry-after" not in info.value.response.headers  # waiting until tomorrow is no retry
    assert info.value.response.headers["x-should-retry"] == "false"
    usage = (await gateway.client.get("/v1/usage", headers=gateway.auth("thrifty"))).json()
    assert usage["budget"]["remaining_usd"] == 0


async def test_two_hundred_concurrent_requests_lose_no_row(make_gateway: Any, caplog: Any) -> None:
    caplog.set_level(logging.WARNING)
    gateway = await make_gateway(upstreams={"acct-1": {}, "acct-2": {}})
    statuses = await burst(gateway, "alice", 200, {"model": "gpt-5", "messages": CHAT})
    assert statuses.count(200) == 200
    assert len(await rows(gateway, "status = 'ok'")) == 200
    assert "database is locked" not in caplog.text


async def test_usage_cli_reads_what_the_gateway_recorded(make_gateway: Any) -> None:
    gateway = await make_gateway(upstreams={"acct-1": {}})
    for _ in range(3):
        await gateway.sdk().chat.completions.create(model="gpt-5", messages=CHAT)
    await gateway.flush()
    report = poolgate(gateway.settings, "usage", "--key", "alice", "--json")
    assert report.code == 0, report.stderr
    data = report.json()
    assert data["totals"]["requests"] == 3 and data["rows"][0]["model"] == "gpt-5"
