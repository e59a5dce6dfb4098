"""What a careless or hostile client (or upstream) finds: policy holes, bad input, misbehaving upstreams.

In-process: the app on the test's loop, its real upstream client talking to fake upstreams on 127.0.0.1.
Each test names the probe it answers; docs/security.md lists them.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import openai
import pytest
from sqlalchemy import text

from app.fake_upstream import client_error, raw
from app.pool import UpstreamStore
from keys import KeyStore, Policy, Quotas

CHAT = [{"role": "user", "content": "hello there"}]


async def post(gateway: Any, path: str, body: Any, key: str = "alice", **headers: str) -> tuple[int, Any, Any]:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = await gateway.client.post(path, content=content, headers={
        **gateway.auth(key), "content-type": "application/json", **headers})
    try:
        payload = response.json()
    except ValueError:
        payload = response.text
    return response.status_code, payload, response.headers


async def usage_rows(gateway: Any) -> list[dict[str, Any]]:
    await gateway.flush()
    async with gateway.state.engine.connect() as conn:
        result = await conn.execute(text("select * from usage where status != 'started' order by id"))
        return [dict(row._mapping) for row in result]


# -- policy holes -----------------------------------------------------------------------------------------


async def test_verbosity_outside_the_keys_list_is_refused_and_a_default_chosen_from_it(make_gateway: Any) -> None:
    gateway = await make_gateway(upstreams={"acct-1": {}}, keys={
        "terse": Policy(allowed_models=("gpt-5",), allowed_verbosities=("low",))})
    status, error, _ = await post(gateway, "/v1/chat/completions",
                                  {"model": "gpt-5", "messages": CHAT, "verbosity": "high"}, "terse")
    assert (status, error["error"]["code"], error["error"]["param"]) == (403, "verbosity_not_allowed", "verbosity")
    status, error, _ = await post(gateway, "/v1/responses",
                                  {"model": "gpt-5", "input": "hi", "text": {"verbosity": "high"}}, "terse")
    assert (status, error["error"]["code"], error["error"]["param"]) == (403, "verbosity_not_allowed",
                                                                         "text.verbosity")
    assert gateway.fakes["acct-1"].requests == []

    assert (await post(gateway, "/v1/chat/completions", {"model": "gpt-5", "messages": CHAT}, "terse"))[0] == 200
    assert gateway.fakes["acct-1"].requests[-1].body["verbosity"] == "low"
    body = {"model": "gpt-5", "input": "hi", "text": {"format": {"type": "text"}}}
    assert (await post(gateway, "/v1/responses", body, "terse"))[0] == 200
    assert gateway.fakes["acct-1"].requests[-1].body["text"] == {"format": {"type": "text"}, "verbosity": "low"}


async def test_a_model_named_in_a_tool_must_be_one_the_key_may_use(make_gateway: Any) -> None:
    gateway = await make_gateway(upstreams={"acct-1": {}}, keys={
        "text": Policy(allowed_models=("gpt-5",)), "images": Policy(allowed_models=("gpt-5", "gpt-image-1"))})
    tools = [{"type": "web_search"}, {"type": "image_generation", "model": "gpt-image-1"}]
    status, error, _ = await post(gateway, "/v1/responses", {"model": "gpt-5", "input": "a cat", "tools": tools},
                                  "text")
    assert (status, error["error"]["code"], error["error"]["param"]) == (403, "model_not_allowed", "tools[1].model")
    # The same name spelled with JSON escapes reads the same to an upstream, so it is caught the same.
    escaped = b'{"model":"gpt-5","input":"a cat","tools":[{"type":"image_generation","\\u006dodel":"gpt-image-1"}]}'
    assert (await post(gateway, "/v1/responses", escaped, "text"))[0] == 403
    assert gateway.fakes["acct-1"].requests == []
    assert (await post(gateway, "/v1/responses", {"model": "gpt-5", "input": "a cat", "tools": tools},
                       "images"))[0] == 200


@pytest.mark.parametrize("body", [
    {"model": "gpt-5", "input": [{"type": "function_call_output", "call_id": "c1", "output": [
        {"type": "input_image", "image_url": "data:image/png;base64,AAAA"}]}]},
    {"model": "gpt-5", "input": [{"role": "user", "content": [{"type": "input_text", "text": "hi"},
                                                              {"type": "input_file", "file_id": "file-1"}]}]},
    {"model": "gpt-5", "input": "hi", "prompt": {"id": "pmpt_1", "variables": {
        "photo": {"type": "input_image", "image_url": "https://example.com/a.png"}}}},
], ids=["function-call-output", "file-part", "prompt-variable"])
async def test_non_text_input_is_found_wherever_it_stands(make_gateway: Any, body: dict[str, Any]) -> None:
    gateway = await make_gateway(upstreams={"acct-1": {}}, keys={
        "text-only": Policy(allowed_models=("gpt-5",), allowed_modalities=("text",))})
    status, error, _ = await post(gateway, "/v1/responses", body, "text-only")
    assert (status, error["error"]["code"]) == (403, "modality_not_allowed")
    spelled = json.dumps(body).replace('"input_', '"\\u0069nput_').encode()  # the same type, escaped
    assert (await post(gateway, "/v1/responses", spelled, "text-only"))[0] == 403
    assert gateway.fakes["acct-1"].requests == []


async def test_a_duplicated_top_level_field_is_refused(make_gateway: Any) -> None:
    gateway = await make_gateway(upstreams={"acct-1": {}}, keys={"mini": Policy(allowed_models=("gpt-5-mini",))})
    for body in (b'{"model":"gpt-5-mini","model":"o3","input":"hi"}',
                 b'{"model":"gpt-5-mini","input":"hi","\\u006dodel":"o3"}',
                 b'{"model":"gpt-5-mini","stream":false,"input":"hi","stream":true}'):
        status, error, _ = await post(gateway, "/v1/responses", body, "mini")
        assert status == 400 and error["error"]["type"] == "invalid_request_error"
        assert "more than once" in error["error"]["message"]
    assert gateway.fakes["acct-1"].requests == []
    # Nested objects may repeat names of the top level: only the top level is the request's own.
    body = {"model": "gpt-5-mini", "input": [{"role": "user", "content": "hi", "model": "x"}]}
    assert (await post(gateway, "/v1/responses", body, "mini"))[0] == 200


async def test_service_tiers_are_a_key_right_and_priced_by_tier(make_gateway: Any) -> None:
    gateway = await make_gateway(upstreams={"acct-1": {}}, keys={
        "anyone": Policy(allowed_models=("gpt-5",)),
        "cheap": Policy(allowed_models=("gpt-5",), allowed_service_tiers=("flex",))})
    status, error, _ = await post(gateway, "/v1/chat/completions",
                                  {"model": "gpt-5", "messages": CHAT, "service_tier": "priority"}, "cheap")
    assert (status, error["error"]["code"], error["error"]["param"]) == (403, "service_tier_not_allowed",
                                                                         "service_tier")
    assert (await post(gateway, "/v1/chat/completions", {"model": "gpt-5", "messages": CHAT}, "cheap"))[0] == 200
    assert gateway.fakes["acct-1"].requests[-1].body["service_tier"] == "flex"  # the only tier it may use

    for tier in ("priority", "default"):
        body = {"model": "gpt-5", "messages": CHAT, "service_tier": tier}
        assert (await post(gateway, "/v1/chat/completions", body, "anyone"))[0] == 200
    flex, priority, default = (row["cost_usd"] for row in await usage_rows(gateway))
    assert default == pytest.approx((2 * 1.25 + 5 * 10.0) / 1e6)  # gpt-5, standard
    assert flex == pytest.approx(default / 2) and priority == pytest.approx(default * 2)


# -- answers poolgate makes itself ------------------------------------------------------------------------


async def test_every_answer_carries_a_request_id(make_gateway: Any) -> None:
    gateway = await make_gateway(upstreams={"acct-1": {}}, keys={
        "alice": Policy(allowed_models=("gpt-5",)), "once": Policy(allowed_models=("gpt-5",), quotas=Quotas(rpm=1))},
        max_body_bytes=1024 * 1024)
    client = gateway.client
    answers = [
        await client.get("/v1/models"),  # 401
        await client.post("/v1/chat/completions", json={"model": "o3", "messages": CHAT},
                          headers=gateway.auth()),  # 403
        await client.get("/v1/nowhere", headers=gateway.auth()),  # 404
        await client.post("/v1/chat/completions", content=b"{" + b" " * 2 * 1024 * 1024 + b"}",
                          headers=gateway.auth()),  # 413
        await client.post("/v1/chat/completions", content=b"{", headers=gateway.auth()),  # 400
        await client.post("/v1/chat/completions", json={"model": "gpt-5", "messages": CHAT},
                          headers=gateway.auth("once")),  # 200
        await client.post("/v1/chat/completions", json={"model": "gpt-5", "messages": CHAT},
                          headers=gateway.auth("once")),  # 429
        await client.get("/healthz"),
    ]
    assert [a.status_code for a in answers] == [401, 403, 404, 413, 400, 200, 429, 200]
    ids = [a.headers.get("x-request-id", "") for a in answers]
    assert all(i.startswith("req_") for i in ids), ids
    assert len(set(ids)) == len(ids)
    await gateway.fakes["acct-1"].stop()  # no upstream left: a 5xx of poolgate's own
    await gateway.state.key_cache.refresh()
    unavailable = await client.post("/v1/chat/completions", json={"model": "gpt-5", "messages": CHAT},
                                    headers=gateway.auth())
    assert unavailable.status_code >= 500 or unavailable.status_code == 429
    assert unavailable.headers["x-request-id"].startswith("req_")


async def test_a_bug_on_the_relay_path_is_a_500_envelope_with_a_request_id(make_gateway: Any,
                                                                             caplog: Any) -> None:
    gateway = await make_gateway(upstreams={"acct-1": {}}, keys={"alice": Policy(allowed_models=("gpt-5",))})

    async def broken(*_: Any, **__: Any) -> Any:
        raise RuntimeError("a bug")

    gateway.state.proxy.handle = broken  # the relayed POSTs skip the framework's own error handling
    caplog.set_level(logging.ERROR)
    answer = await gateway.client.post("/v1/chat/completions", json={"model": "gpt-5", "messages": CHAT},
                                       headers=gateway.auth())
    assert answer.status_code == 500
    assert answer.json()["error"]["type"] == "server_error" and "a bug" not in answer.text
    assert answer.headers["x-request-id"].startswith("req_")
    assert "unhandled error on POST /v1/chat/completions" in caplog.text


# -- bad input --------------------------------------------------------------------------------------------


async def test_deeply_nested_json_is_a_400_not_a_500(make_gateway: Any, caplog: Any) -> None:
    gateway = await make_gateway(upstreams={"acct-1": {}})
    caplog.set_level(logging.ERROR)
    deep = b'{"model":"gpt-5","input":' + b"[" * 5000 + b"]" * 5000 + b"}"
    status, error, _ = await post(gateway, "/v1/responses", deep)
    assert (status, error["error"]["type"]) == (400, "invalid_request_error")
    tools = b'{"model":"gpt-5","input":"hi","tools":[{"model":"gpt-5","x":' + b"[" * 5000 + b"]" * 5000 + b"}]}"
    assert (await post(gateway, "/v1/responses", tools))[0] == 400
    assert "Traceback" not in caplog.text


# -- a misbehaving upstream -------------------------------------------------------------------------------


async def test_an_upstream_header_no_client_could_read_is_dropped_not_a_500(make_gateway: Any,
                                                                            caplog: Any) -> None:
    caplog.set_level(logging.INFO, logger="poolgate.access")
    gateway = await make_gateway(upstreams={"acct-1": {}})
    answer = json.dumps({"id": "chatcmpl-1", "object": "chat.completion", "choices": [],
                         "usage": {"prompt_tokens": 1, "completion_tokens": 1}}).encode()
    gateway.fakes["acct-1"].script(raw(200, headers=[
        ("content-type", "application/json"), ("x-request-id", "req_\u00e9\u4e2d"),
        ("openai-processing-ms", "12"), ("x-codex-turn-state", "state\u2028evil"),
        ("set-cookie", "upstream=session"), ("openai-organization", "org-secret")], parts=[answer]))
    status, body, headers = await post(gateway, "/v1/chat/completions", {"model": "gpt-5", "messages": CHAT})
    assert status == 200 and body["id"] == "chatcmpl-1"
    assert "x-upstream-request-id" not in headers  # not printable ASCII: dropped, never a 500
    assert "set-cookie" not in headers and "openai-organization" not in headers
    assert headers["openai-processing-ms"] == "12"  # a header clients use, and well formed: passed on
    assert "x-codex-turn-state" not in headers  # the same header, not printable ASCII: dropped
    assert any(" 200 " in line or "status=200" in line for line in gateway.log_lines(caplog))


async def test_only_a_real_json_or_event_stream_answer_is_relayed(make_gateway: Any) -> None:
    gateway = await make_gateway(upstreams={"acct-1": {}, "acct-2": {}})
    for fake in gateway.fakes.values():
        fake.script(raw(200, headers=[("content-type", "text/html; x=json")], parts=[b"<script>x</script>"]))
    status, error, headers = await post(gateway, "/v1/chat/completions", {"model": "gpt-5", "messages": CHAT})
    assert status == 502 and headers["content-type"].startswith("application/json")
    assert "<script>" not in json.dumps(error)


async def test_a_stream_without_event_ends_is_cut_at_the_event_size_bound(make_gateway: Any) -> None:
    gateway = await make_gateway(upstreams={"acct-1": {}}, max_event_bytes=1024 * 1024)
    gateway.fakes["acct-1"].script(raw(200, headers=[("content-type", "text/event-stream")],
                                       parts=[b"data: " + b"x" * 65536], repeat=64 * 16))  # 64 MiB, no blank line
    response = await gateway.client.post("/v1/chat/completions", headers=gateway.auth(),
                                         json={"model": "gpt-5", "messages": CHAT, "stream": True})
    assert response.status_code == 200
    assert len(response.content) < 4096  # nothing of the runaway event: only the error frame
    assert b'"error"' in response.content and b"[DONE]" not in response.content
    [row] = await usage_rows(gateway)
    assert row["status"] != "ok"


async def test_done_inside_a_text_is_not_the_end_of_the_stream(make_gateway: Any) -> None:
    gateway = await make_gateway(upstreams={"acct-1": {}})
    chunk = {"id": "c1", "object": "chat.completion.chunk", "choices": [
        {"index": 0, "delta": {"content": "say\ndata: [DONE]\n\nplease"}}]}
    gateway.fakes["acct-1"].script(raw(200, headers=[("content-type", "text/event-stream")],
                                       parts=[b"data: " + json.dumps(chunk).encode() + b"\n\n"]))
    client = gateway.sdk()
    stream = await client.chat.completions.create(model="gpt-5", messages=CHAT, stream=True)
    with pytest.raises(openai.APIError):
        [c async for c in stream]  # the upstream stopped before its real end: the client is told so
    [row] = await usage_rows(gateway)
    assert row["status"] == "error"


async def test_the_upstream_credential_never_reaches_a_client(make_gateway: Any) -> None:
    gateway = await make_gateway(upstreams={"acct-1": {}})
    secret = "sk-acct-1-0123456789abcdef"
    echo = json.dumps({"id": "chatcmpl-1", "object": "chat.completion", "debug": f"sent {secret}",
                       "choices": [{"index": 0, "message": {"role": "assistant", "content": "...cdef"}}]}).encode()
    fake = gateway.fakes["acct-1"]
    fake.script(raw(200, headers=[("content-type", "application/json")], parts=[echo]))
    status, body, _ = await post(gateway, "/v1/chat/completions", {"model": "gpt-5", "messages": CHAT})
    assert status == 200 and secret not in json.dumps(body) and "sent ***" in body["debug"]

    event = {"type": "error", "error": {"message": f"key {secret[:6]}...{secret[-8:]} is over quota"}}
    fake.script(raw(200, headers=[("content-type", "text/event-stream")],
                    parts=[b"event: error\ndata: " + json.dumps(event).encode() + b"\n\n"]))
    response = await gateway.client.post("/v1/responses", headers=gateway.auth(),
                                         json={"model": "gpt-5", "input": "hi", "stream": True})
    assert secret[-8:].encode() not in response.content and b"over quota" in response.content

    fake.script(client_error(400, body=json.dumps({"error": {"message": f"bad key {secret}"}}).encode()))
    status, body, _ = await post(gateway, "/v1/chat/completions", {"model": "gpt-5", "messages": CHAT})
    assert status == 400 and secret not in json.dumps(body)


# -- operator pitfalls ------------------------------------------------------------------------------------


async def test_a_key_works_on_its_first_request_right_after_it_is_made(make_gateway: Any) -> None:
    gateway = await make_gateway(upstreams={"acct-1": {}}, sync_interval=3600)  # the cache never refreshes
    store = KeyStore(gateway.state.engine)
    for i in range(10):
        _, token = await store.create(f"new-{i}", Policy(allowed_models=("gpt-5",)))
        response = await gateway.client.post("/v1/chat/completions", json={"model": "gpt-5", "messages": CHAT},
                                             headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200, response.text
    before = gateway.state.key_cache.lookups
    for _ in range(20):  # made up, well formed or not: refused, and a repeat costs no query
        response = await gateway.client.get("/v1/models", headers={"Authorization": "Bearer pg_" + "x" * 40})
        assert response.status_code == 401
    assert gateway.state.key_cache.lookups - before <= 1


async def test_models_no_enabled_upstream_serves_are_not_listed(make_gateway: Any) -> None:
    gateway = await make_gateway(upstreams={"acct-1": {"models": "gpt-5*"}, "acct-2": {"models": "o3"}})
    listed = [m.id async for m in gateway.sdk().models.list()]
    assert "gpt-5" in listed and "o3" in listed
    assert not any(m.startswith(("claude", "gemini", "o4")) for m in listed)
    assert (await gateway.client.get("/v1/models/claude-sonnet-4-5", headers=gateway.auth())).status_code == 404

    await UpstreamStore(gateway.state.engine, gateway.state.vault).update("acct-2", enabled=False)
    await gateway.sync()
    assert "o3" not in [m.id async for m in gateway.sdk().models.list()]


async def test_streams_without_max_tokens_fit_a_small_token_quota(make_gateway: Any) -> None:
    gateway = await make_gateway(upstreams={"acct-1": {}}, keys={
        "small": Policy(allowed_models=("gpt-5",), quotas=Quotas(tpm=5000))})
    for fake in gateway.fakes.values():
        fake.configure(interval=0.05)

    async def stream() -> int:
        response = await gateway.client.post("/v1/chat/completions", headers=gateway.auth("small"),
                                             json={"model": "gpt-5", "messages": CHAT, "stream": True})
        return response.status_code

    assert await asyncio.gather(*(stream() for _ in range(4))) == [200] * 4
    assert all(row["output_tokens"] == 5 for row in await usage_rows(gateway))


async def test_an_upstream_error_before_the_first_byte_costs_the_key_nothing(make_gateway: Any) -> None:
    gateway = await make_gateway(upstreams={"acct-1": {}}, keys={
        "budget": Policy(allowed_models=("gpt-5",), quotas=Quotas(budget_usd=1, budget_period="day"))})
    gateway.fakes["acct-1"].script(client_error(404, "model_not_found"))
    status, _, _ = await post(gateway, "/v1/chat/completions", {"model": "gpt-5", "messages": CHAT}, "budget")
    assert status == 404
    [row] = await usage_rows(gateway)
    assert (row["input_tokens"], row["output_tokens"], row["cost_usd"]) == (0, 0, 0)
    usage = (await gateway.client.get("/v1/usage", headers=gateway.auth("budget"))).json()
    assert usage["today"]["cost_usd"] == 0


async def test_metrics_name_their_charset_once(make_gateway: Any) -> None:
    gateway = await make_gateway(upstreams={"acct-1": {}})
    response = await gateway.client.get("/metrics", headers=gateway.auth(gateway.settings.metrics_token))
    assert response.status_code == 200
    assert response.headers["content-type"].count("charset") == 1
