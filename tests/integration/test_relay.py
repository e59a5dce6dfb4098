"""The relay, in-process: the real ``openai`` SDK talks to the app (no socket), the app's real upstream client
talks to fake upstream accounts on 127.0.0.1."""

from __future__ import annotations

import json
import logging
from typing import Any

import openai
import pytest

from app.fake_upstream import client_error, cut_after, garbage, hang, rate_limited, server_error, trickle
from keys import Policy

CHAT = [{"role": "user", "content": "hello there"}]


async def test_chat_completions_streaming_and_not(make_gateway: Any, caplog: Any) -> None:
    caplog.set_level(logging.INFO, logger="poolgate.access")
    gateway = await make_gateway(upstreams={"acct-1": {}})
    client = gateway.sdk()
    answer = await client.chat.completions.create(model="gpt-5", messages=CHAT)
    assert answer.choices[0].message.content == "[acct-1] tok0 tok1 tok2 tok3"
    assert answer.usage is not None and answer.usage.prompt_tokens == 2 and answer.usage.completion_tokens == 5

    chunks = [c async for c in await client.chat.completions.create(model="gpt-5", messages=CHAT, stream=True)]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "[acct-1] tok0 tok1 tok2 tok3"
    sent = gateway.fakes["acct-1"].requests[-1]
    assert sent.body["stream_options"] == {"include_usage": True}  # asked for, so usage can be counted
    assert all(c.choices for c in chunks)  # ...but the client, which did not ask, gets no usage-only chunk
    assert any("stream=True attempts=1 tokens_in=2 tokens_out=5" in line for line in gateway.log_lines(caplog))

    asked = [c async for c in await client.chat.completions.create(
        model="gpt-5", messages=CHAT, stream=True, stream_options={"include_usage": True})]
    assert asked[-1].usage is not None and asked[-1].usage.completion_tokens == 5


async def test_responses_streaming_and_not(make_gateway: Any) -> None:
    gateway = await make_gateway(upstreams={"acct-1": {}})
    client = gateway.sdk()
    assert (await client.responses.create(model="gpt-5", input="hi")).output_text == "[acct-1] tok0 tok1 tok2 tok3"
    events = [e async for e in await client.responses.create(model="gpt-5", input="hi", stream=True)]
    assert events[0].type == "response.created" and events[-1].type == "response.completed"
    assert [e.type for e in events].count("response.output_text.delta") == 5
    assert events[-1].response.usage is not None


async def test_embeddings(make_gateway: Any) -> None:
    gateway = await make_gateway(upstreams={"acct-1": {}})
    result = await gateway.sdk().embeddings.create(model="text-embedding-3-small", input=["a", "b"])
    assert len(result.data) == 2 and len(result.data[0].embedding) == 8


async def test_the_client_credential_is_replaced_and_only_allowed_headers_are_forwarded(
        make_gateway: Any, caplog: Any) -> None:
    caplog.set_level(logging.DEBUG)
    gateway = await make_gateway(upstreams={"acct-1": {}})
    client = gateway.sdk(default_headers={"x-codex-turn-metadata": "{}", "session-id": "abc",
                                          "cookie": "secret=1", "x-forwarded-for": "10.0.0.1"})
    await client.chat.completions.create(model="gpt-5", messages=CHAT)
    headers = gateway.fakes["acct-1"].requests[-1].headers
    assert headers["authorization"] == "Bearer sk-acct-1-0123456789abcdef"
    assert headers["accept-encoding"] == "identity"  # bodies are relayed as they are, never compressed
    assert "0123456789abcdef" not in caplog.text
    assert gateway.keys["alice"] not in json.dumps(headers)
    assert headers["x-codex-turn-metadata"] == "{}" and headers["session-id"] == "abc"
    assert "cookie" not in headers and "x-forwarded-for" not in headers
    assert headers["user-agent"] == client.user_agent  # the upstream sees which client it serves


async def test_headers_the_client_names_in_connection_are_not_forwarded(make_gateway: Any) -> None:
    gateway = await make_gateway(upstreams={"acct-1": {}})
    response = await gateway.client.post("/v1/chat/completions", json={"model": "gpt-5", "messages": CHAT},
                                         headers=gateway.auth(**{"connection": "keep-alive, session-id",
                                                                 "session-id": "hop", "x-codex-window-id": "w"}))
    assert response.status_code == 200
    headers = gateway.fakes["acct-1"].requests[-1].headers
    assert "session-id" not in headers  # a hop-by-hop header of this connection, by the client's own word
    assert headers["x-codex-window-id"] == "w"


async def test_the_body_is_relayed_untouched_when_nothing_changes(make_gateway: Any) -> None:
    gateway = await make_gateway(upstreams={"acct-1": {}})
    raw = (b'{"model":"gpt-5","input":"hi","tools":[{"type":"namespace","name":"x"},{"type":"web_search"}],'
           b'"client_metadata":{"a":1},"include":["reasoning.encrypted_content"],"store":false}')
    response = await gateway.client.post("/v1/responses", content=raw, headers=gateway.auth(
        **{"content-type": "application/json"}))
    assert response.status_code == 200
    assert gateway.fakes["acct-1"].requests[-1].raw == raw


async def test_aliases_and_renames_reach_the_upstream_under_its_own_name(make_gateway: Any) -> None:
    gateway = await make_gateway(upstreams={"acct-1": {"models": "gpt-5*,o3=o3-2025-04-16"}})
    await gateway.sdk().chat.completions.create(model="o3", messages=CHAT)
    assert gateway.fakes["acct-1"].requests[-1].body["model"] == "o3-2025-04-16"


async def test_load_is_spread_over_the_accounts(make_gateway: Any) -> None:
    gateway = await make_gateway(upstreams={"acct-1": {}, "acct-2": {}, "acct-3": {}})
    client = gateway.sdk()
    for _ in range(30):
        await client.chat.completions.create(model="gpt-5", messages=CHAT)
    assert all(count >= 2 for count in gateway.served_by().values()), gateway.served_by()


async def test_a_conversation_sticks_to_one_account(make_gateway: Any) -> None:
    gateway = await make_gateway(upstreams={"acct-1": {}, "acct-2": {}, "acct-3": {}})
    client = gateway.sdk()
    for _ in range(8):
        await client.responses.create(model="gpt-5", input="hi", extra_body={"prompt_cache_key": "thread-42"})
    assert sorted(gateway.served_by().values()) == [0, 0, 8]


async def test_tiers_fall_back_only_when_the_first_is_unavailable(make_gateway: Any) -> None:
    gateway = await make_gateway(upstreams={"main": {"tier": 0}, "backup": {"tier": 1}})
    client = gateway.sdk()
    for _ in range(5):
        await client.chat.completions.create(model="gpt-5", messages=CHAT)
    assert gateway.served_by() == {"main": 5, "backup": 0}
    gateway.fakes["main"].script(rate_limited(30))
    answer = await client.chat.completions.create(model="gpt-5", messages=CHAT)
    assert (answer.choices[0].message.content or "").startswith("[backup]")


async def test_a_rate_limited_account_is_skipped_until_it_recovers(make_gateway: Any) -> None:
    gateway = await make_gateway(upstreams={"acct-1": {"tier": 0}, "acct-2": {"tier": 1}})
    fake = gateway.fakes["acct-1"]
    fake.script(rate_limited(6))
    client = gateway.sdk()
    for _ in range(6):  # every answer succeeds; the 429 moves the first request to acct-2
        assert (await client.chat.completions.create(model="gpt-5", messages=CHAT)).choices[0].message.content
    assert len(fake.requests) == 1  # cooling down after its 429, so not asked again meanwhile
    state = gateway.state.pool.states[next(s.id for s in gateway.state.pool.states.values() if s.name == "acct-1")]
    state.cooldown_until = 0  # the Retry-After has passed
    await client.chat.completions.create(model="gpt-5", messages=CHAT)
    assert len(fake.requests) == 2


async def test_every_account_rate_limited_is_a_429_pool_exhausted_with_retry_after(make_gateway: Any) -> None:
    gateway = await make_gateway(upstreams={"acct-1": {}, "acct-2": {}})
    for fake in gateway.fakes.values():
        fake.script(rate_limited(7))
    with pytest.raises(openai.RateLimitError) as info:
        await gateway.sdk().chat.completions.create(model="gpt-5", messages=CHAT)
    assert info.value.code == "pool_exhausted"
    assert 6 <= int(info.value.response.headers["retry-after"]) <= 7


async def test_server_errors_fail_over_and_repeated_failures_eject(make_gateway: Any, caplog: Any) -> None:
    caplog.set_level(logging.WARNING)
    gateway = await make_gateway(upstreams={"bad": {"tier": 0}, "good": {"tier": 1}})
    bad = gateway.fakes["bad"]
    bad.script(*[server_error(500)] * 5)
    client = gateway.sdk()
    for _ in range(12):
        answer = await client.chat.completions.create(model="gpt-5", messages=CHAT)
        assert (answer.choices[0].message.content or "").startswith("[good]")
    assert len(bad.requests) == 5  # ejected after 5 consecutive failures: not asked again
    assert "upstream bad ejected" in caplog.text


async def test_client_errors_pass_through_and_do_not_count_against_the_account(make_gateway: Any) -> None:
    gateway = await make_gateway(upstreams={"acct-1": {}})
    gateway.fakes["acct-1"].script(*[client_error(400, "invalid_value")] * 6)
    client = gateway.sdk()
    for _ in range(6):
        with pytest.raises(openai.BadRequestError):
            await client.chat.completions.create(model="gpt-5", messages=CHAT)
    assert (await client.chat.completions.create(model="gpt-5", messages=CHAT)).choices  # never ejected


async def test_an_upstream_that_hangs_times_out_and_the_request_moves_on(make_gateway: Any) -> None:
    gateway = await make_gateway(upstreams={"slow": {"tier": 0}, "fast": {"tier": 1}}, first_byte_timeout=0.5)
    slow = gateway.fakes["slow"]
    slow.script(hang(), hang(), hang())
    client = gateway.sdk()
    for _ in range(3):
        answer = await client.chat.completions.create(model="gpt-5", messages=CHAT)
        assert (answer.choices[0].message.content or "").startswith("[fast]")
    assert len(slow.requests) == 3  # each request tried the first tier, timed out, and moved on


async def test_only_hanging_upstreams_is_a_504(make_gateway: Any) -> None:
    gateway = await make_gateway(upstreams={"slow": {}}, first_byte_timeout=0.3)
    gateway.fakes["slow"].script(hang())
    with pytest.raises(openai.InternalServerError) as info:
        await gateway.sdk().chat.completions.create(model="gpt-5", messages=CHAT)
    assert info.value.status_code == 504 and info.value.code == "upstream_timeout"


async def test_garbage_from_an_upstream_is_a_clear_502(make_gateway: Any) -> None:
    gateway = await make_gateway(upstreams={"acct-1": {}})
    fake = gateway.fakes["acct-1"]
    fake.script(garbage(200))
    with pytest.raises(openai.InternalServerError) as info:
        await gateway.sdk().chat.completions.create(model="gpt-5", messages=CHAT)
    assert info.value.status_code == 502 and info.value.code == "upstream_error"
    fake.script(server_error(503, body=b"<html>down</html>"))
    with pytest.raises(openai.InternalServerError) as info:
        await gateway.sdk().chat.completions.create(model="gpt-5", messages=CHAT)
    assert "<html>" not in info.value.message


async def test_a_failure_after_the_first_byte_ends_the_stream_with_an_error_and_no_done(make_gateway: Any) -> None:
    gateway = await make_gateway(upstreams={"acct-1": {}}, fake_options={"chunks": 8})
    fake = gateway.fakes["acct-1"]
    fake.script(cut_after(3))
    response = await gateway.client.post("/v1/chat/completions", headers=gateway.auth(),
                                         json={"model": "gpt-5", "messages": CHAT, "stream": True})
    events = [e for e in response.text.split("\n\n") if e.strip()]
    assert len(events) == 4  # 3 relayed, then the error
    error = json.loads(events[-1].removeprefix("data: "))["error"]
    assert error["code"] == "upstream_error"
    assert "[DONE]" not in response.text
    fake.script(cut_after(3))
    stream = await gateway.sdk().chat.completions.create(model="gpt-5", messages=CHAT, stream=True)
    with pytest.raises(openai.APIError):  # the SDK reports it rather than returning a truncated answer
        [c async for c in stream]


async def test_access_is_checked_before_any_upstream_call(make_gateway: Any) -> None:
    gateway = await make_gateway(upstreams={"acct-1": {}}, keys={
        "alice": Policy(allowed_models=("gpt-5*", "o3"), allowed_reasoning_efforts=("low",),
                        allowed_modalities=("text",)),
    })
    client = gateway.sdk()
    cases = [
        (openai.NotFoundError, "model_not_found", {"model": "gpt-99", "messages": CHAT}),
        (openai.PermissionDeniedError, "model_not_allowed", {"model": "claude-sonnet-4-5", "messages": CHAT}),
        (openai.PermissionDeniedError, "reasoning_effort_not_allowed",
         {"model": "o3", "messages": CHAT, "reasoning_effort": "high"}),
        (openai.PermissionDeniedError, "modality_not_allowed", {"model": "gpt-5", "messages": [
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}]}]}),
        (openai.PermissionDeniedError, "endpoint_not_allowed", {"model": "gpt-5.1-codex", "messages": CHAT}),
    ]
    for error, code, request in cases:
        with pytest.raises(error) as info:
            await client.chat.completions.create(**request)
        assert info.value.code == code
    assert gateway.fakes["acct-1"].requests == []


async def test_bad_bodies_get_openai_shaped_errors(make_gateway: Any) -> None:
    gateway = await make_gateway(upstreams={"acct-1": {}}, max_body_bytes=2048)

    async def post(data: bytes) -> tuple[int, dict[str, Any]]:
        response = await gateway.client.post("/v1/chat/completions", content=data,
                                             headers=gateway.auth(**{"content-type": "application/json"}))
        return response.status_code, response.json()

    status, body = await post(b"{not json")
    assert status == 400 and body["error"]["type"] == "invalid_request_error"
    status, body = await post(b'{"messages": []}')
    assert status == 400 and body["error"]["param"] == "model"
    status, body = await post(json.dumps({"model": "gpt-5", "messages": CHAT * 200}).encode())
    assert status == 413 and body["error"]["code"] == "request_too_large"
    assert gateway.fakes["acct-1"].requests == []


async def test_no_account_serving_the_model_is_a_503(make_gateway: Any) -> None:
    gateway = await make_gateway(upstreams={"acct-1": {"models": "o3"}})
    with pytest.raises(openai.InternalServerError) as info:
        await gateway.sdk().chat.completions.create(model="gpt-5", messages=CHAT)
    assert info.value.status_code == 503 and info.value.code == "no_upstream_available"


async def test_an_upstream_error_quoting_its_credential_is_scrubbed(make_gateway: Any) -> None:
    gateway = await make_gateway(upstreams={"acct-1": {}})
    leaked = b'{"error":{"message":"bad key sk-acct-1-0123456789abcdef","type":"invalid_request_error"}}'
    gateway.fakes["acct-1"].script(client_error(400, body=leaked))
    with pytest.raises(openai.BadRequestError) as info:
        await gateway.sdk().chat.completions.create(model="gpt-5", messages=CHAT)
    assert "bad key ***" in info.value.message
    assert "0123456789abcdef" not in json.dumps(info.value.body)


async def test_a_slow_trickle_is_relayed_whole(make_gateway: Any) -> None:
    gateway = await make_gateway(upstreams={"acct-1": {}}, fake_options={"chunks": 5})
    gateway.fakes["acct-1"].script(trickle(0.05))
    stream = await gateway.sdk().chat.completions.create(model="gpt-5", messages=CHAT, stream=True)
    chunks = [c async for c in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "[acct-1] tok0 tok1 tok2 tok3 tok4"


async def test_a_model_can_have_its_own_balancer_in_the_catalog_file(make_gateway: Any, tmp_path: Any) -> None:
    catalog = tmp_path / "catalog.json"
    catalog.write_text(json.dumps({"models": [{"id": "gpt-5", "balancer": "round_robin"}]}))
    gateway = await make_gateway(upstreams={"acct-1": {}, "acct-2": {}}, catalog_file=catalog)
    client = gateway.sdk()
    for _ in range(10):
        await client.chat.completions.create(model="gpt-5", messages=CHAT)
    assert gateway.served_by() == {"acct-1": 5, "acct-2": 5}  # strict alternation, not random spreading
