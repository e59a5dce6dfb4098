"""What a Codex-style client sees over HTTP: its catalog shape, fatal refusals, when it is told to wait.

The real Codex CLI runs in tests/e2e/test_codex.py; these tests pin the protocol details without it.
"""

from __future__ import annotations

from typing import Any

import openai
import pytest

from keys import Policy, Quotas
from tests.support import eventually

CODEX_HEADERS = {"originator": "codex_exec", "user-agent": "codex_exec/0.169.0 (Debian 12.0.0; x86_64)"}


@pytest.fixture
async def gateway(make_gateway: Any) -> Any:
    return await make_gateway(keys={
        "alice": Policy(allowed_models=("gpt-5-mini", "o3", "gpt-5", "text-embedding-3-small"),
                        priority_rules=("o3", "gpt-5-mini"), allowed_reasoning_efforts=("low", "medium")),
    })


async def post(gateway: Any, key: str, body: dict[str, Any], headers: dict[str, str]) -> tuple[int, Any]:
    response = await gateway.client.post("/v1/responses", json=body, headers=gateway.auth(key, **headers))
    data = response.json()
    if response.status_code >= 400:
        data["headers"] = dict(response.headers)
    return response.status_code, data


async def test_codex_gets_its_models_list_beside_data_in_the_keys_order(gateway: Any) -> None:
    reply = await gateway.client.get("/v1/models?client_version=0.169.0", headers=gateway.auth(**CODEX_HEADERS))
    assert reply.status_code == 200
    body = reply.json()
    codex = body["models"]
    assert [m["slug"] for m in codex] == ["o3", "gpt-5-mini", "gpt-5"]  # no embeddings model: Codex cannot call it
    assert [m["priority"] for m in codex] == [0, 1, 2]
    assert [lv["effort"] for lv in codex[0]["supported_reasoning_levels"]] == ["low", "medium"]
    assert all(m["shell_type"] and m["truncation_policy"]["limit"] > 0 and m["base_instructions"] for m in codex)
    assert [m["id"] for m in body["data"]] == ["o3", "gpt-5-mini", "gpt-5"]

    plain = await gateway.client.get("/v1/models", headers=gateway.auth())
    assert "models" not in plain.json()
    assert [m["id"] for m in plain.json()["data"]] == ["o3", "gpt-5-mini", "gpt-5", "text-embedding-3-small"]
    assert reply.headers["etag"] != plain.headers["etag"]


async def test_a_client_version_that_is_no_version_is_a_clear_400(gateway: Any) -> None:
    reply = await gateway.client.get("/v1/models?client_version=latest", headers=gateway.auth())
    assert reply.status_code == 400
    assert reply.json()["error"]["param"] == "client_version"


async def test_a_disallowed_model_stops_codex_at_once_but_the_sdk_keeps_its_403(gateway: Any) -> None:
    status, error = await post(gateway, "alice", {"model": "gpt-5.1", "input": "hi", "stream": True}, CODEX_HEADERS)
    assert status == 403
    assert error["error"]["code"] == "model_not_found"  # the one code Codex treats as fatal without retrying
    assert "gpt-5.1" in error["error"]["message"]

    status, error = await post(gateway, "alice", {"model": "no-such-model", "input": "hi"}, CODEX_HEADERS)
    assert (status, error["error"]["code"]) == (404, "model_not_found")

    with pytest.raises(openai.PermissionDeniedError) as caught:
        await gateway.sdk().responses.create(model="gpt-5.1", input="hi")
    assert caught.value.code == "model_not_allowed"
    assert all(not fake.requests for fake in gateway.fakes.values())


async def test_an_effort_the_key_may_not_use_also_stops_codex_at_once(gateway: Any) -> None:
    body = {"model": "o3", "input": "hi", "reasoning": {"effort": "high"}}
    status, error = await post(gateway, "alice", body, CODEX_HEADERS)
    assert (status, error["error"]["code"]) == (403, "model_not_found")
    assert "high" in error["error"]["message"]


async def test_a_429_waiting_cannot_fix_soon_says_not_to_retry_to_codex_and_the_sdks_alike(make_gateway: Any) -> None:
    gateway = await make_gateway(keys={
        "daily": Policy(allowed_models=("gpt-5-mini",), quotas=Quotas(rpd=1)),
        "small": Policy(allowed_models=("gpt-5-mini",), quotas=Quotas(tpm=50)),
    })
    body = {"model": "gpt-5-mini", "input": "hi"}
    assert (await post(gateway, "daily", body, CODEX_HEADERS))[0] == 200
    for headers in (CODEX_HEADERS, {}):
        status, error = await post(gateway, "daily", body, headers)
        assert (status, error["error"]["code"]) == (429, "rate_limit_exceeded")
        # A daily window: waiting would take hours. Codex and the SDKs would sleep that long, silently.
        assert "retry-after" not in error["headers"] and error["headers"]["x-should-retry"] == "false"
        assert "try again in" in error["error"]["message"]

    too_big = {"model": "gpt-5-mini", "input": "word " * 400, "max_output_tokens": 16}
    for headers in (CODEX_HEADERS, {}):
        status, error = await post(gateway, "small", too_big, headers)
        assert status == 429 and "Request too large" in error["error"]["message"]
        assert "retry-after" not in error["headers"]  # it can never fit: retrying cannot help
        assert error["headers"]["x-should-retry"] == "false"


async def test_a_429_that_frees_within_a_minute_tells_everyone_when(make_gateway: Any) -> None:
    gateway = await make_gateway(keys={"busy": Policy(allowed_models=("*",), quotas=Quotas(max_concurrency=1))})
    gateway.fakes["acct-1"].configure(chunks=500, interval=0.05)
    gateway.fakes["acct-2"].configure(chunks=500, interval=0.05)
    import asyncio

    holder = asyncio.create_task(gateway.client.post(
        "/v1/responses", json={"model": "gpt-5", "input": "hi", "stream": True}, headers=gateway.auth("busy")))
    await eventually(lambda: any(f.in_flight for f in gateway.fakes.values()), what="the holding stream")
    for headers in (CODEX_HEADERS, {}):
        status, error = await post(gateway, "busy", {"model": "gpt-5", "input": "hi"}, headers)
        assert status == 429 and error["headers"]["retry-after"] == "1"
        assert "x-should-retry" not in error["headers"]
    holder.cancel()
