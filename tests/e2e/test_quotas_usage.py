"""Quotas that hold under load, and usage that is recorded and never lost."""

from __future__ import annotations

import asyncio
import json
import signal
import threading
from concurrent.futures import ThreadPoolExecutor

import aiohttp
import openai
import pytest

from keys import Policy, Quotas
from tests.support import ServerProcess, query, wait_for, within_one_minute

CHAT = [{"role": "user", "content": "hello there"}]


def rows(gateway, where: str = "1=1") -> list[dict[str, object]]:  # type: ignore[no-untyped-def]
    return query(gateway.settings, f"select * from usage where {where} order by id")


async def _burst(url: str, token: str, count: int, body: dict[str, object]) -> list[int]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        async def one() -> int:
            async with session.post(url, json=body, headers={"Authorization": f"Bearer {token}"}) as response:
                await response.read()
                return response.status
        return list(await asyncio.gather(*(one() for _ in range(count))))


def test_one_usage_row_per_request_with_tokens_and_cost(make_gateway) -> None:  # type: ignore[no-untyped-def]
    gateway = make_gateway(upstreams={"acct-1": {}})
    client = gateway.client()
    client.chat.completions.create(model="gpt-5", messages=CHAT)
    list(client.chat.completions.create(model="gpt-5", messages=CHAT, stream=True))
    client.embeddings.create(model="text-embedding-3-small", input="x")
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-99", messages=CHAT)  # refused before any upstream: no row
    recorded = wait_for(lambda: len(r := rows(gateway, "status != 'started'")) == 3 and r, what="3 usage rows")
    chat, stream, embedding = recorded
    assert (chat["input_tokens"], chat["output_tokens"], chat["status"], chat["upstream"]) == (2, 5, "ok", "acct-1")
    assert chat["cost_usd"] == pytest.approx((2 * 1.25 + 5 * 10.0) / 1e6)  # gpt-5's catalog prices
    assert stream["stream"] == 1 and stream["output_tokens"] == 5 and stream["ttfb_ms"] > 0
    assert embedding["endpoint"] == "embeddings" and embedding["output_tokens"] == 0

    usage = gateway.server.http.get("/v1/usage", gateway.keys["alice"]).json()
    assert usage["today"]["requests"] == 3 and usage["today"]["output_tokens"] == 10
    metrics = gateway.server.http.get("/metrics").body.decode()
    assert 'poolgate_requests_total{key="' in metrics and 'model="gpt-5"' in metrics
    assert 'poolgate_upstream_inflight{upstream="acct-1"} 0' in metrics


def test_a_hundred_concurrent_requests_against_a_limit_of_five(make_gateway) -> None:  # type: ignore[no-untyped-def]
    gateway = make_gateway(upstreams={"acct-1": {}},
                           keys={"alice": Policy(allowed_models=("*",), quotas=Quotas(rpm=5))})
    with within_one_minute():  # rpm counts the clock's minute: a burst across its end would let a 6th through
        statuses = asyncio.run(_burst(gateway.server.base_url + "/v1/chat/completions", gateway.keys["alice"], 100,
                                      {"model": "gpt-5", "messages": CHAT}))
    assert statuses.count(200) == 5 and statuses.count(429) == 95
    assert len(gateway.fakes["acct-1"].requests) == 5
    metrics = gateway.server.http.get("/metrics").body.decode()
    assert 'kind="requests"} 95' in metrics


def test_a_429_says_exactly_when_the_window_frees(make_gateway) -> None:  # type: ignore[no-untyped-def]
    gateway = make_gateway(upstreams={"acct-1": {}},
                           keys={"alice": Policy(allowed_models=("*",), quotas=Quotas(rpm=3))})
    client = gateway.client(max_retries=0)
    with within_one_minute():  # rpm counts the clock's minute: across its end a 4th request would fit
        statuses = asyncio.run(_burst(gateway.server.base_url + "/v1/chat/completions", gateway.keys["alice"], 3,
                                      {"model": "gpt-5", "messages": CHAT}))
        assert statuses.count(200) == 3
        with pytest.raises(openai.RateLimitError) as info:
            client.chat.completions.create(model="gpt-5", messages=CHAT)
    headers = info.value.response.headers
    wait_ms = int(headers["retry-after-ms"])
    assert 0 < wait_ms <= 60_000
    assert int(headers["retry-after"]) == -(-wait_ms // 1000)  # whole seconds, rounded up


def test_the_sdk_waits_out_a_quota_429_and_then_succeeds(make_gateway) -> None:  # type: ignore[no-untyped-def]
    gateway = make_gateway(upstreams={"acct-1": {}}, fake_options={"chunks": 1200, "interval": 0.05},
                           keys={"alice": Policy(allowed_models=("*",), quotas=Quotas(max_concurrency=1))})
    holder = gateway.client()
    stream = holder.chat.completions.create(model="gpt-5", messages=CHAT, stream=True)
    next(iter(stream))  # the key's one place in flight is taken until the stream is closed

    def release() -> None:
        """Close the holding stream as soon as the SDK's first try has been refused for it."""
        wait_for(lambda: 'kind="concurrency"} 1' in gateway.server.http.get("/metrics").body.decode(),
                 timeout=30, interval=0.05, what="the first try to be refused")
        stream.close()

    with ThreadPoolExecutor(1) as pool:
        released = pool.submit(release)
        # The first try is refused with Retry-After: 1; the SDK waits that long, retries, and gets through.
        answer = gateway.client(max_retries=2).chat.completions.with_raw_response.create(model="gpt-5",
                                                                                        messages=CHAT)
        released.result(timeout=30)
    assert answer.http_response.status_code == 200
    assert answer.retries_taken >= 1
    metrics = gateway.server.http.get("/metrics").body.decode()
    assert 'kind="concurrency"} 1' in metrics


def test_concurrency_tokens_and_budget_limits(make_gateway) -> None:  # type: ignore[no-untyped-def]
    gateway = make_gateway(upstreams={"acct-1": {}}, fake_options={"chunks": 1200, "interval": 0.05}, keys={
        "two-at-once": Policy(allowed_models=("*",), quotas=Quotas(max_concurrency=2)),
        "small": Policy(allowed_models=("*",), quotas=Quotas(tpm=1000)),
        "thrifty": Policy(allowed_models=("*",), quotas=Quotas(budget_usd=0.00001, budget_period="day")),
    })
    pair = gateway.client("two-at-once")
    streams = [pair.chat.completions.create(model="gpt-5", messages=CHAT, stream=True) for _ in range(2)]
    for stream in streams:
        next(iter(stream))
    with pytest.raises(openai.RateLimitError) as info:
        gateway.client("two-at-once").chat.completions.create(model="gpt-5", messages=CHAT)
    assert "in flight" in info.value.message
    for stream in streams:
        stream.close()

    with pytest.raises(openai.RateLimitError) as info:  # its estimate alone is over the limit: refused at once
        gateway.client("small").chat.completions.create(model="gpt-5", messages=CHAT, max_tokens=5000)
    assert "Request too large" in info.value.message
    fits = gateway.client("small").chat.completions.with_raw_response.create(model="gpt-5", messages=CHAT,
                                                                          max_tokens=100)
    assert fits.headers["x-ratelimit-limit-tokens"] == "1000"
    assert int(fits.headers["x-ratelimit-remaining-tokens"]) < 1000

    thrifty = gateway.client("thrifty")
    thrifty.chat.completions.create(model="gpt-5", messages=CHAT)  # costs more than the whole budget
    with pytest.raises(openai.RateLimitError) as info:
        thrifty.chat.completions.create(model="gpt-5", messages=CHAT)
    assert info.value.code == "insufficient_quota"
    assert int(info.value.response.headers["retry-after"]) <= 86400
    usage = gateway.server.http.get("/v1/usage", gateway.keys["thrifty"]).json()
    assert usage["budget"]["remaining_usd"] == 0


def test_two_hundred_concurrent_requests_on_sqlite_lose_no_row(make_gateway) -> None:  # type: ignore[no-untyped-def]
    gateway = make_gateway(upstreams={"acct-1": {}, "acct-2": {}})
    statuses = asyncio.run(_burst(gateway.server.base_url + "/v1/chat/completions", gateway.keys["alice"], 200,
                                  {"model": "gpt-5", "messages": CHAT}))
    assert statuses.count(200) == 200
    wait_for(lambda: len(rows(gateway, "status = 'ok'")) == 200, what="200 usage rows")
    assert "database is locked" not in gateway.server.log()


def test_sigterm_with_ten_streams_in_flight_commits_ten_rows(make_gateway) -> None:  # type: ignore[no-untyped-def]
    gateway = make_gateway(upstreams={"acct-1": {}}, fake_options={"chunks": 100, "interval": 0.05})
    url = gateway.server.base_url + "/v1/chat/completions"
    results: list[int] = []

    def run() -> None:
        results.extend(asyncio.run(_burst(url, gateway.keys["alice"], 10,
                                          {"model": "gpt-5", "messages": CHAT, "stream": True})))

    worker = threading.Thread(target=run)
    worker.start()
    fake = gateway.fakes["acct-1"]
    wait_for(lambda: fake.do(lambda: fake.fake.in_flight) == 10, what="10 streams in flight")
    assert gateway.server.process is not None
    gateway.server.process.send_signal(signal.SIGTERM)
    worker.join(timeout=30)
    gateway.server.process.wait(timeout=30)
    assert results == [200] * 10
    finished = rows(gateway)
    assert len(finished) == 10 and {r["status"] for r in finished} == {"ok"}
    assert all(r["output_tokens"] == 101 for r in finished)


def test_kill_9_mid_stream_leaves_rows_the_next_start_marks_interrupted(make_gateway) -> None:  # type: ignore[no-untyped-def]
    gateway = make_gateway(upstreams={"acct-1": {}}, fake_options={"chunks": 400, "interval": 0.05})
    stream = gateway.client().chat.completions.create(model="gpt-5", messages=CHAT, stream=True)
    next(iter(stream))
    wait_for(lambda: rows(gateway, "status = 'started'"), what="the started row to be written")
    assert gateway.server.process is not None
    gateway.server.process.kill()
    gateway.server.process.wait()
    stream.close()
    restarted = ServerProcess(gateway.settings).start()
    try:
        wait_for(lambda: [r["status"] for r in rows(gateway)] == ["interrupted"], timeout=30, interval=0.5,
                 what="the orphaned row to be marked interrupted")
        assert "marked 1 usage row(s) interrupted" in restarted.log()
    finally:
        restarted.stop()


def test_usage_cli_reads_what_the_gateway_recorded(make_gateway) -> None:  # type: ignore[no-untyped-def]
    from tests.support import poolgate

    gateway = make_gateway(upstreams={"acct-1": {}})
    for _ in range(3):
        gateway.client().chat.completions.create(model="gpt-5", messages=CHAT)
    wait_for(lambda: len(rows(gateway, "status = 'ok'")) == 3, what="3 rows")
    report = poolgate(gateway.settings, "usage", "--key", "alice", "--json")
    assert report.code == 0, report.stderr
    data = json.loads(report.stdout)
    assert data["totals"]["requests"] == 3 and data["rows"][0]["model"] == "gpt-5"
