"""What a Codex-style client sees over real HTTP: its catalog shape, fatal refusals, and the WebSocket answer.

The real Codex CLI runs in test_codex.py; these tests pin the protocol details without it.
"""

from __future__ import annotations

import json
import socket
import urllib.request
from typing import Any

import openai
import pytest

from keys import Policy, Quotas
from tests.support import Http

CODEX_HEADERS = {"originator": "codex_exec", "user-agent": "codex_exec/0.169.0 (Debian 12.0.0; x86_64)"}


@pytest.fixture
def gateway(make_gateway: Any) -> Any:
    return make_gateway(keys={
        "alice": Policy(allowed_models=("gpt-5-mini", "o3", "gpt-5", "text-embedding-3-small"),
                        priority_rules=("o3", "gpt-5-mini"), allowed_reasoning_efforts=("low", "medium")),
    })


def post(base_url: str, path: str, key: str, body: dict[str, Any], headers: dict[str, str]) -> tuple[int, Any]:
    request = urllib.request.Request(
        base_url + path, data=json.dumps(body).encode(), method="POST",
        headers={"authorization": f"Bearer {key}", "content-type": "application/json", **headers},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, {**json.loads(err.read()), "headers": {k.lower(): v for k, v in err.headers.items()}}


def test_codex_gets_its_models_list_beside_data_in_the_keys_order(gateway: Any) -> None:
    http = Http(gateway.server.base_url)
    reply = http.get("/v1/models?client_version=0.169.0", gateway.keys["alice"], CODEX_HEADERS)
    assert reply.status == 200
    body = reply.json()
    codex = body["models"]
    assert [m["slug"] for m in codex] == ["o3", "gpt-5-mini", "gpt-5"]  # no embeddings model: Codex cannot call it
    assert [m["priority"] for m in codex] == [0, 1, 2]
    assert [lv["effort"] for lv in codex[0]["supported_reasoning_levels"]] == ["low", "medium"]
    assert all(m["shell_type"] and m["truncation_policy"]["limit"] > 0 and m["base_instructions"] for m in codex)
    assert [m["id"] for m in body["data"]] == ["o3", "gpt-5-mini", "gpt-5"]

    plain = http.get("/v1/models", gateway.keys["alice"]).json()
    assert "models" not in plain
    assert [m["id"] for m in plain["data"]] == ["o3", "gpt-5-mini", "gpt-5", "text-embedding-3-small"]
    assert reply.headers["etag"] != http.get("/v1/models", gateway.keys["alice"]).headers["etag"]


def test_a_client_version_that_is_no_version_is_a_clear_400(gateway: Any) -> None:
    reply = Http(gateway.server.base_url).get("/v1/models?client_version=latest", gateway.keys["alice"])
    assert reply.status == 400
    assert reply.json()["error"]["param"] == "client_version"


def test_a_disallowed_model_stops_codex_at_once_but_the_sdk_keeps_its_403(gateway: Any) -> None:
    body = {"model": "gpt-5.1", "input": "hi", "stream": True}
    status, error = post(gateway.server.base_url, "/v1/responses", gateway.keys["alice"], body, CODEX_HEADERS)
    assert status == 403
    assert error["error"]["code"] == "model_not_found"  # the one code Codex treats as fatal without retrying
    assert "gpt-5.1" in error["error"]["message"]

    status, error = post(gateway.server.base_url, "/v1/responses", gateway.keys["alice"],
                         {"model": "no-such-model", "input": "hi"}, CODEX_HEADERS)
    assert (status, error["error"]["code"]) == (404, "model_not_found")

    with pytest.raises(openai.PermissionDeniedError) as caught:
        gateway.client().responses.create(model="gpt-5.1", input="hi")
    assert caught.value.code == "model_not_allowed"
    assert gateway.all_requests() == []


def test_an_effort_the_key_may_not_use_also_stops_codex_at_once(gateway: Any) -> None:
    body = {"model": "o3", "input": "hi", "reasoning": {"effort": "high"}}
    status, error = post(gateway.server.base_url, "/v1/responses", gateway.keys["alice"], body, CODEX_HEADERS)
    assert (status, error["error"]["code"]) == (403, "model_not_found")
    assert "high" in error["error"]["message"]


def test_codex_is_told_to_wait_only_when_waiting_can_help(make_gateway: Any) -> None:
    gateway = make_gateway(keys={
        "daily": Policy(allowed_models=("gpt-5-mini",), quotas=Quotas(rpd=1)),
        "small": Policy(allowed_models=("gpt-5-mini",), quotas=Quotas(tpm=50)),
    })
    base, body = gateway.server.base_url, {"model": "gpt-5-mini", "input": "hi"}
    assert post(base, "/v1/responses", gateway.keys["daily"], body, CODEX_HEADERS)[0] == 200
    for headers, told_to_wait in ((CODEX_HEADERS, False), ({}, True)):
        status, error = post(base, "/v1/responses", gateway.keys["daily"], body, headers)
        assert (status, error["error"]["code"]) == (429, "rate_limit_exceeded")
        assert ("retry-after" in error["headers"]) is told_to_wait  # Codex would sleep for hours, silently
        assert "try again in" in error["error"]["message"]

    too_big = {"model": "gpt-5-mini", "input": "word " * 400, "max_output_tokens": 16}
    for headers, told_to_wait in ((CODEX_HEADERS, False), ({}, True)):
        status, error = post(base, "/v1/responses", gateway.keys["small"], too_big, headers)
        assert status == 429 and "Request too large" in error["error"]["message"]
        assert ("retry-after" in error["headers"]) is told_to_wait  # it can never fit: retrying cannot help


def test_a_websocket_upgrade_on_responses_gets_426_so_codex_falls_back_to_http(gateway: Any) -> None:
    with socket.create_connection(("127.0.0.1", gateway.server.port), timeout=5) as conn:
        conn.sendall(
            b"GET /v1/responses HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            b"openai-beta: responses_websockets=2026-02-06\r\n"
            b"Authorization: Bearer " + gateway.keys["alice"].encode() + b"\r\n\r\n"
        )
        reply = b""
        while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
            chunk = conn.recv(65536)
            if not chunk:
                break
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.split(b"\r\n")[0].startswith(b"HTTP/1.1 426")
    assert json.loads(body)["error"]["code"] == "websocket_not_supported"
    assert "ERROR" not in gateway.server.log()  # a refused upgrade is routine, not an error
