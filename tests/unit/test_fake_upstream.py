"""Tests of the fake upstream itself: if it lies, every gateway test built on it lies too."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import re
import struct
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from app.fake_upstream import (
    FakeUpstream,
    Fault,
    client_error,
    cut_after,
    delay,
    garbage,
    hang,
    rate_limited,
    raw,
    server_error,
    trickle,
)

TEXT = "[fake] tok0 tok1 tok2 tok3"
ROOT = Path(__file__).resolve().parents[2]


async def eventually(predicate: Callable[[], bool], within: float = 2.0) -> None:
    """Poll until `predicate` holds; fail after `within` seconds instead of sleeping a guessed amount."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within}s")
        await asyncio.sleep(0.01)


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    fake = FakeUpstream(ratelimit_headers={"x-ratelimit-remaining-requests": "99"})
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


@pytest.fixture
async def session(upstream: FakeUpstream) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def chat_body(**extra: Any) -> dict[str, Any]:
    return {"model": "gpt-5", "messages": [{"role": "user", "content": "hello there world"}], **extra}


async def sse_lines(resp: aiohttp.ClientResponse) -> list[str]:
    """Non-empty SSE lines as they arrived."""
    return [line for raw in [ln async for ln in resp.content] if (line := raw.decode().strip())]


def data_events(lines: list[str]) -> list[str]:
    return [line.removeprefix("data: ") for line in lines if line.startswith("data: ")]


async def read_until_broken(resp: aiohttp.ClientResponse) -> tuple[list[str], BaseException | None]:
    """Lines read before the stream ended, and the error it ended with (None for a clean EOF)."""
    lines: list[str] = []
    try:
        async for raw in resp.content:
            if line := raw.decode().strip():
                lines.append(line)
    except aiohttp.ClientError as exc:
        return lines, exc
    return lines, None


# -- OpenAI surface -----------------------------------------------------------------------------


async def test_models_and_common_headers(upstream: FakeUpstream, session: aiohttp.ClientSession) -> None:
    async with session.get(f"{upstream.base_url}/models") as resp:
        assert resp.status == 200
        assert resp.headers["x-fake-upstream"] == "fake"
        assert resp.headers["x-ratelimit-remaining-requests"] == "99"
        assert re.fullmatch(r"req_\d+", resp.headers["x-request-id"])
        body = await resp.json()
    assert body["object"] == "list"
    assert [m["id"] for m in body["data"]] == ["gpt-5", "o3", "text-embedding-3-small"]
    assert body["data"][0] == {"id": "gpt-5", "object": "model", "created": 1700000000, "owned_by": "fake"}
    async with session.get(f"{upstream.base_url}/models") as resp2:
        assert resp2.headers["x-request-id"] != resp.headers["x-request-id"]


async def test_chat_non_stream_shape_and_usage(upstream: FakeUpstream, session: aiohttp.ClientSession) -> None:
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "one two three"}, {"type": "image_url"}]},
    ]
    async with session.post(f"{upstream.base_url}/chat/completions", json={"model": "o3", "messages": messages}) as r:
        assert r.status == 200
        assert r.content_type == "application/json"
        body = await r.json()
    assert body["id"].startswith("chatcmpl-")
    assert body["object"] == "chat.completion"
    assert body["model"] == "o3"
    assert isinstance(body["created"], int)
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"] == TEXT
    assert choice["finish_reason"] == "stop"
    assert body["usage"] == {
        "prompt_tokens": 5,
        "completion_tokens": 5,
        "total_tokens": 10,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }


async def test_chat_prompt_tokens_minimum_one(upstream: FakeUpstream, session: aiohttp.ClientSession) -> None:
    async with session.post(f"{upstream.base_url}/chat/completions", json={"model": "o3", "messages": []}) as r:
        body = await r.json()
    assert body["usage"]["prompt_tokens"] == 1


async def test_chat_stream_deltas_usage_and_done(upstream: FakeUpstream, session: aiohttp.ClientSession) -> None:
    payload = chat_body(stream=True, stream_options={"include_usage": True})
    async with session.post(f"{upstream.base_url}/chat/completions", json=payload) as resp:
        assert resp.status == 200
        assert resp.content_type == "text/event-stream"
        assert resp.headers["Cache-Control"] == "no-cache"
        events = data_events(await sse_lines(resp))
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == "gpt-5" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    deltas = [c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]]
    assert "".join(deltas) == TEXT
    assert deltas[1:6] == ["[fake] ", "tok0", " tok1", " tok2", " tok3"]
    finish = chunks[-2]
    assert finish["choices"][0]["finish_reason"] == "stop"
    assert finish["choices"][0]["delta"] == {}
    usage_chunk = chunks[-1]
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"]["prompt_tokens"] == 3
    assert usage_chunk["usage"]["completion_tokens"] == 5
    assert usage_chunk["usage"]["total_tokens"] == 8


async def test_chat_stream_without_usage(upstream: FakeUpstream, session: aiohttp.ClientSession) -> None:
    async with session.post(f"{upstream.base_url}/chat/completions", json=chat_body(stream=True)) as resp:
        events = data_events(await sse_lines(resp))
    chunks = [json.loads(e) for e in events[:-1]]
    assert events[-1] == "[DONE]"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert all(c["choices"] and "usage" not in c for c in chunks)
    assert len(chunks) == 1 + 5 + 1


async def test_responses_non_stream(upstream: FakeUpstream, session: aiohttp.ClientSession) -> None:
    payload = {"model": "gpt-5", "input": [{"role": "user", "content": [{"type": "input_text", "text": "a b"}]}]}
    async with session.post(f"{upstream.base_url}/responses", json=payload) as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body["id"].startswith("resp_")
    assert body["object"] == "response"
    assert body["status"] == "completed"
    assert body["model"] == "gpt-5"
    item = body["output"][0]
    assert item["type"] == "message"
    assert item["role"] == "assistant"
    assert item["content"] == [{"type": "output_text", "text": TEXT, "annotations": []}]
    assert body["usage"] == {
        "input_tokens": 2,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 5,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 7,
    }


async def test_responses_stream_event_order(upstream: FakeUpstream, session: aiohttp.ClientSession) -> None:
    payload = {"model": "o3", "input": "four words right here", "stream": True}
    async with session.post(f"{upstream.base_url}/responses", json=payload) as resp:
        assert resp.content_type == "text/event-stream"
        lines = await sse_lines(resp)
    names = [line.removeprefix("event: ") for line in lines if line.startswith("event: ")]
    datas = [json.loads(d) for d in data_events(lines)]
    assert "[DONE]" not in lines and "data: [DONE]" not in lines
    assert names == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * 5,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [d["type"] for d in datas] == names
    assert [d["sequence_number"] for d in datas] == list(range(len(names)))
    assert "".join(d["delta"] for d in datas if d["type"] == "response.output_text.delta") == TEXT
    assert datas[-4]["text"] == TEXT
    assert datas[-2]["item"]["content"][0]["text"] == TEXT
    completed = datas[-1]["response"]
    assert completed["status"] == "completed"
    assert completed["model"] == "o3"
    assert completed["usage"]["input_tokens"] == 4
    assert completed["usage"]["output_tokens"] == 5
    assert completed["usage"]["total_tokens"] == 9


async def test_embeddings_shape(upstream: FakeUpstream, session: aiohttp.ClientSession) -> None:
    url = f"{upstream.base_url}/embeddings"
    payload = {"model": "text-embedding-3-small", "input": ["hello world", "bye"]}
    async with session.post(url, json=payload) as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body["object"] == "list"
    assert body["model"] == "text-embedding-3-small"
    assert [d["index"] for d in body["data"]] == [0, 1]
    vectors = [d["embedding"] for d in body["data"]]
    assert all(len(v) == 8 and all(isinstance(x, float) for x in v) for v in vectors)
    assert vectors[0] != vectors[1]
    assert body["usage"] == {"prompt_tokens": 3, "total_tokens": 3}
    async with session.post(url, json={"model": "text-embedding-3-small", "input": "hello world"}) as resp:
        single = await resp.json()
    assert single["data"][0]["embedding"] == vectors[0]
    b64 = {"model": "text-embedding-3-small", "input": "hello world", "encoding_format": "base64"}
    async with session.post(url, json=b64) as resp:
        encoded = (await resp.json())["data"][0]["embedding"]
    decoded = struct.unpack("<8f", base64.b64decode(encoded))
    assert decoded == pytest.approx(vectors[0], abs=1e-6)


async def test_auth_required_when_api_key_set() -> None:
    fake = FakeUpstream(api_key="sk-secret")
    await fake.start()
    try:
        async with aiohttp.ClientSession() as client:
            url = f"{fake.base_url}/models"
            for headers in ({}, {"Authorization": "Bearer wrong"}):
                async with client.get(url, headers=headers) as resp:
                    assert resp.status == 401
                    assert resp.headers["x-fake-upstream"] == "fake"
                    assert (await resp.json())["error"] == {
                        "message": "Incorrect API key provided",
                        "type": "invalid_request_error",
                        "param": None,
                        "code": "invalid_api_key",
                    }
            async with client.get(url, headers={"Authorization": "Bearer sk-secret"}) as resp:
                assert resp.status == 200
        assert len(fake.requests) == 3
    finally:
        await fake.stop()


async def test_unknown_model_and_invalid_json(upstream: FakeUpstream, session: aiohttp.ClientSession) -> None:
    url = f"{upstream.base_url}/chat/completions"
    async with session.post(url, json={"model": "gpt-9", "messages": []}) as resp:
        assert resp.status == 404
        assert (await resp.json())["error"]["code"] == "model_not_found"
    async with session.post(url, data=b"{not json", headers={"Content-Type": "application/json"}) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"]["type"] == "invalid_request_error"
    assert upstream.requests[-1].body is None
    assert upstream.requests[-1].raw == b"{not json"


async def test_unknown_fields_and_headers_are_ignored(upstream: FakeUpstream, session: aiohttp.ClientSession) -> None:
    payload = chat_body(temperature=0.2, some_future_field={"x": 1})
    async with session.post(f"{upstream.base_url}/chat/completions", json=payload, headers={"X-Odd": "1"}) as resp:
        assert resp.status == 200


# -- faults -------------------------------------------------------------------------------------


async def test_rate_limited_fault_then_normal(upstream: FakeUpstream, session: aiohttp.ClientSession) -> None:
    upstream.script(rate_limited(), rate_limited(0.5, reset_requests="2s"), rate_limited(None, reset_requests="1s"))
    url = f"{upstream.base_url}/chat/completions"
    async with session.post(url, json=chat_body()) as resp:
        assert resp.status == 429
        assert resp.headers["Retry-After"] == "1"
        assert resp.headers["x-fake-upstream"] == "fake"
        assert (await resp.json())["error"] == {
            "message": "Rate limit reached for requests. Please try again later.",
            "type": "requests",
            "param": None,
            "code": "rate_limit_exceeded",
        }
    async with session.post(url, json=chat_body()) as resp:
        assert resp.status == 429
        assert resp.headers["Retry-After"] == "0.5"
        assert resp.headers["x-ratelimit-reset-requests"] == "2s"
    async with session.post(url, json=chat_body()) as resp:
        assert resp.status == 429
        assert "Retry-After" not in resp.headers
        assert resp.headers["x-ratelimit-reset-requests"] == "1s"
    async with session.post(url, json=chat_body()) as resp:
        assert resp.status == 200


async def test_faults_only_consumed_by_posts(upstream: FakeUpstream, session: aiohttp.ClientSession) -> None:
    upstream.script(server_error())
    async with session.get(f"{upstream.base_url}/models") as resp:
        assert resp.status == 200
    assert upstream.pending_faults == 1
    async with session.post(f"{upstream.base_url}/embeddings", json={"model": "o3", "input": "x"}) as resp:
        assert resp.status == 500
    assert upstream.pending_faults == 0


async def test_server_error_faults(upstream: FakeUpstream, session: aiohttp.ClientSession) -> None:
    upstream.script(server_error(), server_error(503, body=b"upstream connect error"))
    url = f"{upstream.base_url}/chat/completions"
    async with session.post(url, json=chat_body()) as resp:
        assert resp.status == 500
        assert (await resp.json())["error"]["type"] == "server_error"
    async with session.post(url, json=chat_body()) as resp:
        assert resp.status == 503
        assert resp.content_type == "text/plain"
        assert await resp.read() == b"upstream connect error"


async def test_client_error_fault(upstream: FakeUpstream, session: aiohttp.ClientSession) -> None:
    upstream.script(client_error(403, "unsupported_country_region_territory"))
    async with session.post(f"{upstream.base_url}/chat/completions", json=chat_body()) as resp:
        assert resp.status == 403
        assert (await resp.json())["error"]["code"] == "unsupported_country_region_territory"


async def test_garbage_fault(upstream: FakeUpstream, session: aiohttp.ClientSession) -> None:
    upstream.script(garbage(), garbage(502))
    for status in (200, 502):
        async with session.post(f"{upstream.base_url}/chat/completions", json=chat_body()) as resp:
            assert resp.status == status
            assert resp.content_type == "text/html"
            assert await resp.read() == b"<html>oops</html>"


async def test_raw_fault_sends_exactly_its_headers_and_parts(upstream: FakeUpstream,
                                                             session: aiohttp.ClientSession) -> None:
    upstream.script(raw(201, headers=[("content-type", "text/html; x=json"), ("x-odd", "caf\u00e9")],
                        parts=[b"ab", b"cd"], repeat=3))
    async with session.post(f"{upstream.base_url}/chat/completions", json=chat_body()) as resp:
        assert resp.status == 201 and resp.headers["content-type"] == "text/html; x=json"
        assert resp.headers["x-odd"] == "caf\u00e9" and "x-request-id" not in resp.headers
        assert await resp.read() == b"abcd" * 3


async def test_bodies_larger_than_aiohttps_default_limit_are_taken(upstream: FakeUpstream,
                                                                   session: aiohttp.ClientSession) -> None:
    big = io.BytesIO(json.dumps(chat_body(padding="x" * (3 * 1024 * 1024))).encode())
    async with session.post(f"{upstream.base_url}/chat/completions", data=big,
                            headers={"content-type": "application/json"}) as resp:
        assert resp.status == 200


async def test_cut_after_stream(upstream: FakeUpstream, session: aiohttp.ClientSession) -> None:
    upstream.script(cut_after(3))
    async with session.post(f"{upstream.base_url}/chat/completions", json=chat_body(stream=True)) as resp:
        assert resp.status == 200
        lines, error = await read_until_broken(resp)
    assert isinstance(error, aiohttp.ClientPayloadError)
    events = data_events(lines)
    assert len(events) == 3
    assert "[DONE]" not in events
    await eventually(lambda: upstream.in_flight == 0)
    assert upstream.cancelled == 0  # we hung up, not the client


async def test_cut_after_responses_stream(upstream: FakeUpstream, session: aiohttp.ClientSession) -> None:
    upstream.script(cut_after(2))
    async with session.post(f"{upstream.base_url}/responses", json={"model": "o3", "input": "x", "stream": True}) as r:
        lines, error = await read_until_broken(r)
    assert error is not None
    assert [line for line in lines if line.startswith("event: ")] == [
        "event: response.created",
        "event: response.in_progress",
    ]


async def test_cut_after_non_stream(upstream: FakeUpstream, session: aiohttp.ClientSession) -> None:
    upstream.script(cut_after(0))
    async with session.post(f"{upstream.base_url}/chat/completions", json=chat_body()) as resp:
        assert resp.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()
    async with session.post(f"{upstream.base_url}/chat/completions", json=chat_body()) as resp:
        assert (await resp.json())["choices"][0]["message"]["content"] == TEXT


async def test_hang_until_client_gives_up(upstream: FakeUpstream, session: aiohttp.ClientSession) -> None:
    upstream.script(hang())
    with pytest.raises(TimeoutError):
        async with session.post(
            f"{upstream.base_url}/chat/completions", json=chat_body(), timeout=aiohttp.ClientTimeout(total=0.3)
        ):
            pass
    await eventually(lambda: upstream.in_flight == 0, within=1.0)
    assert upstream.cancelled == 1
    async with session.post(f"{upstream.base_url}/chat/completions", json=chat_body()) as resp:
        assert resp.status == 200


async def test_hang_released_by_stop() -> None:
    fake = FakeUpstream()
    await fake.start()
    fake.script(hang())
    async with aiohttp.ClientSession() as client:

        async def call() -> None:
            async with client.post(f"{fake.base_url}/chat/completions", json=chat_body()) as resp:
                await resp.read()

        task = asyncio.create_task(call())
        await eventually(lambda: fake.in_flight == 1)
        await asyncio.wait_for(fake.stop(), timeout=5)
        with pytest.raises(aiohttp.ClientError):
            await asyncio.wait_for(task, timeout=5)
    assert fake.in_flight == 0


async def test_client_disconnect_mid_stream_is_counted(upstream: FakeUpstream, session: aiohttp.ClientSession) -> None:
    upstream.configure(chunks=50, interval=0.05)
    resp = await session.post(f"{upstream.base_url}/chat/completions", json=chat_body(stream=True))
    try:
        first = await resp.content.readline()
        assert first.startswith(b"data: ")
        assert upstream.in_flight == 1
    finally:
        resp.close()
    await eventually(lambda: upstream.in_flight == 0, within=1.0)
    assert upstream.cancelled == 1


async def test_trickle_fault(upstream: FakeUpstream, session: aiohttp.ClientSession) -> None:
    upstream.script(trickle(0.01))
    async with session.post(f"{upstream.base_url}/chat/completions", json=chat_body(stream=True)) as resp:
        events = data_events(await sse_lines(resp))
    assert len(events) == 1 + 5 + 1 + 1
    assert events[-1] == "[DONE]"
    assert "".join(json.loads(e)["choices"][0]["delta"].get("content", "") for e in events[:-1]) == TEXT


async def test_delay_fault(upstream: FakeUpstream, session: aiohttp.ClientSession) -> None:
    upstream.script(delay(0.05))
    async with session.post(f"{upstream.base_url}/chat/completions", json=chat_body()) as resp:
        assert resp.status == 200
        assert (await resp.json())["choices"][0]["message"]["content"] == TEXT


async def test_fault_helpers_validate_and_round_trip() -> None:
    faults = [
        rate_limited(0.5, reset_requests="2s"),
        rate_limited(None),
        server_error(502, body=b"bad gateway"),
        client_error(404, "nope"),
        hang(),
        cut_after(3),
        trickle(0.05),
        garbage(500),
        delay(0.2),
        raw(203, headers=[("content-type", "text/plain"), ("x-a", "1")], parts=[b"one", b"two"], repeat=2),
    ]
    assert [Fault.from_json(f.to_json()) for f in faults] == faults
    with pytest.raises(ValueError):
        server_error(404)
    with pytest.raises(ValueError):
        client_error(500)
    with pytest.raises(ValueError):
        cut_after(-1)
    with pytest.raises(ValueError):
        delay(-1)
    with pytest.raises(ValueError):
        Fault.from_json({"kind": "explode"})
    with pytest.raises(ValueError):
        raw(200, repeat=0)


# -- recording and configuration ----------------------------------------------------------------


async def test_requests_are_recorded(upstream: FakeUpstream, session: aiohttp.ClientSession) -> None:
    before = time.monotonic()
    headers = {"Authorization": "Bearer anything", "X-Trace-Id": "abc"}
    async with session.post(f"{upstream.base_url}/chat/completions", json=chat_body(), headers=headers) as resp:
        assert resp.status == 200
    async with session.get(f"{upstream.base_url}/models"):
        pass
    first, second = upstream.requests
    assert (first.method, first.path) == ("POST", "/v1/chat/completions")
    assert first.headers["authorization"] == "Bearer anything"
    assert first.headers["x-trace-id"] == "abc"
    assert first.body == chat_body()
    assert json.loads(first.raw) == chat_body()
    assert before <= first.at <= second.at
    assert (second.method, second.path, second.body) == ("GET", "/v1/models", None)
    upstream.reset()
    assert upstream.requests == []


async def test_configure_changes_replies(upstream: FakeUpstream, session: aiohttp.ClientSession) -> None:
    upstream.configure(chunks=2, ratelimit_headers={"x-ratelimit-remaining-tokens": "9000"})
    async with session.post(f"{upstream.base_url}/chat/completions", json=chat_body()) as resp:
        assert resp.headers["x-ratelimit-remaining-tokens"] == "9000"
        assert "x-ratelimit-remaining-requests" not in resp.headers
        body = await resp.json()
    assert body["choices"][0]["message"]["content"] == "[fake] tok0 tok1"
    assert body["usage"]["completion_tokens"] == 3


async def test_name_tags_replies() -> None:
    fake = FakeUpstream(name="east", chunks=1)
    await fake.start()
    try:
        async with (
            aiohttp.ClientSession() as client,
            client.post(f"{fake.base_url}/chat/completions", json=chat_body()) as resp,
        ):
            assert resp.headers["x-fake-upstream"] == "east"
            assert (await resp.json())["choices"][0]["message"]["content"] == "[east] tok0"
    finally:
        await fake.stop()


async def test_http_control_endpoints(upstream: FakeUpstream, session: aiohttp.ClientSession) -> None:
    root = upstream.base_url.removesuffix("/v1")
    script = [
        {"kind": "rate_limited", "retry_after": 1},
        {"kind": "server_error", "status": 503},
        {"kind": "client_error", "status": 400},
        {"kind": "garbage"},
        {"kind": "delay", "seconds": 0.01},
        {"kind": "trickle", "interval": 0.01},
        {"kind": "cut_after", "chunks": 3},
        {"kind": "hang"},
    ]
    async with session.post(f"{root}/_fake/script", json=script) as resp:
        assert resp.status == 200
        assert (await resp.json())["queued"] == 8
    async with session.post(f"{root}/_fake/script", json=[{"kind": "explode"}]) as resp:
        assert resp.status == 400
    assert upstream.pending_faults == 8

    url = f"{upstream.base_url}/chat/completions"
    seen: list[tuple[int, str | None]] = []
    for _ in range(5):
        async with session.post(url, json=chat_body()) as resp:
            seen.append((resp.status, resp.headers.get("Retry-After")))
            await resp.read()
    assert seen == [(429, "1"), (503, None), (400, None), (200, None), (200, None)]
    async with session.post(url, json=chat_body(stream=True)) as resp:  # trickle
        assert data_events(await sse_lines(resp))[-1] == "[DONE]"
    async with session.post(url, json=chat_body(stream=True)) as resp:  # cut_after 3
        lines, error = await read_until_broken(resp)
    assert error is not None
    assert len(data_events(lines)) == 3
    assert upstream.pending_faults == 1

    async with session.post(f"{root}/_fake/config", json={"chunks": 1, "interval": 0.0}) as resp:
        assert (await resp.json())["chunks"] == 1
    async with session.post(f"{root}/_fake/config", json={"chunks": "many"}) as resp:
        assert resp.status == 400

    async with session.post(f"{root}/_fake/reset") as resp:
        assert resp.status == 200
    assert upstream.pending_faults == 0
    async with session.post(url, json=chat_body(), headers={"X-Probe": "1"}) as resp:
        assert (await resp.json())["choices"][0]["message"]["content"] == "[fake] tok0"

    async with session.get(f"{root}/_fake/requests") as resp:
        recorded = await resp.json()
    assert recorded == [
        {"method": "POST", "path": "/v1/chat/completions", "headers": upstream.requests[0].headers, "body": chat_body()}
    ]
    assert recorded[0]["headers"]["x-probe"] == "1"
    async with session.get(f"{root}/_fake/stats") as resp:
        assert await resp.json() == {"in_flight": 0, "cancelled": 0, "received": 1}
    async with session.get(f"{root}/_fake/nothing") as resp:
        assert resp.status == 404


async def test_cli_starts_and_prints_listening_line() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app.fake_upstream",
        "--port",
        "0",
        "--name",
        "cli",
        "--models",
        "gpt-5,o3",
        "--api-key",
        "k",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), timeout=20)).decode()
        match = re.fullmatch(r"fake upstream listening on (http://127\.0\.0\.1:(\d+)/v1)\n", line)
        assert match, line
        assert int(match.group(2)) > 0
        async with (
            aiohttp.ClientSession() as client,
            client.get(f"{match.group(1)}/models", headers={"Authorization": "Bearer k"}) as resp,
        ):
            assert resp.headers["x-fake-upstream"] == "cli"
            assert [m["id"] for m in (await resp.json())["data"]] == ["gpt-5", "o3"]
    finally:
        if proc.returncode is None:
            proc.terminate()
        _, stderr = await asyncio.wait_for(proc.communicate(), timeout=10)
    assert proc.returncode == 0, stderr.decode()
