"""The relay through the real ``openai`` SDK: poolgate serving on 127.0.0.1 in front of fake upstreams."""

from __future__ import annotations

import json
import socket
import time
import urllib.request

import openai
import pytest

from app.fake_upstream import cut_after, garbage, hang, rate_limited, server_error, trickle
from keys import Policy
from tests.support import wait_for

CHAT = [{"role": "user", "content": "hello there"}]


def test_chat_completions_streaming_and_not(make_gateway) -> None:  # type: ignore[no-untyped-def]
    gateway = make_gateway(upstreams={"acct-1": {}})
    client = gateway.client()
    answer = client.chat.completions.create(model="gpt-5", messages=CHAT)
    assert answer.choices[0].message.content == "[acct-1] tok0 tok1 tok2 tok3"
    assert answer.usage is not None and answer.usage.prompt_tokens == 2 and answer.usage.completion_tokens == 5

    chunks = list(client.chat.completions.create(model="gpt-5", messages=CHAT, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "[acct-1] tok0 tok1 tok2 tok3"
    sent = gateway.fakes["acct-1"].requests[-1]
    assert sent.body["stream_options"] == {"include_usage": True}  # asked for, so usage can be counted
    assert all(c.choices for c in chunks)  # ...but the client, which did not ask, gets no usage-only chunk
    wait_for(lambda: "stream=True attempts=1 tokens_in=2 tokens_out=5" in gateway.server.log(),
             what="the stream's usage in the access log")  # counted all the same

    asked = list(client.chat.completions.create(model="gpt-5", messages=CHAT, stream=True,
                                                stream_options={"include_usage": True}))
    assert asked[-1].usage is not None and asked[-1].usage.completion_tokens == 5


def test_responses_streaming_and_not(make_gateway) -> None:  # type: ignore[no-untyped-def]
    gateway = make_gateway(upstreams={"acct-1": {}})
    client = gateway.client()
    assert client.responses.create(model="gpt-5", input="hi").output_text == "[acct-1] tok0 tok1 tok2 tok3"
    events = list(client.responses.create(model="gpt-5", input="hi", stream=True))
    assert events[0].type == "response.created" and events[-1].type == "response.completed"
    assert [e.type for e in events].count("response.output_text.delta") == 5
    assert events[-1].response.usage is not None


def test_embeddings(make_gateway) -> None:  # type: ignore[no-untyped-def]
    gateway = make_gateway(upstreams={"acct-1": {}})
    result = gateway.client().embeddings.create(model="text-embedding-3-small", input=["a", "b"])
    assert len(result.data) == 2 and len(result.data[0].embedding) == 8


def test_stream_chunks_reach_the_client_as_they_are_produced(make_gateway) -> None:  # type: ignore[no-untyped-def]
    gateway = make_gateway(upstreams={"acct-1": {}}, fake_options={"chunks": 6, "interval": 0.3})
    arrivals = []
    for chunk in gateway.client().chat.completions.create(model="gpt-5", messages=CHAT, stream=True):
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.monotonic())
    # Paced upstream events arrive paced: nothing was buffered until the end. (They are produced over 1.8 s;
    # relayed as they come they arrive over about as long, buffered to the end within a moment.)
    assert len(arrivals) == 7
    assert arrivals[-1] - arrivals[0] > 0.5


def test_the_client_credential_is_replaced_and_only_allowed_headers_are_forwarded(make_gateway) -> None:  # type: ignore[no-untyped-def]
    gateway = make_gateway(upstreams={"acct-1": {}})
    client = gateway.client(default_headers={"x-codex-turn-metadata": "{}", "session-id": "abc",
                                             "cookie": "secret=1", "x-forwarded-for": "10.0.0.1"})
    client.chat.completions.create(model="gpt-5", messages=CHAT)
    headers = gateway.fakes["acct-1"].requests[-1].headers
    assert headers["authorization"] == "Bearer sk-acct-1-0123456789abcdef"
    assert headers["accept-encoding"] == "identity"  # bodies are relayed as they are, never compressed
    assert "0123456789abcdef" not in gateway.server.log()
    assert gateway.keys["alice"] not in json.dumps(headers)
    assert headers["x-codex-turn-metadata"] == "{}" and headers["session-id"] == "abc"
    assert "cookie" not in headers and "x-forwarded-for" not in headers
    assert headers["user-agent"] == client.user_agent  # the upstream sees which client it serves


def test_the_body_is_relayed_untouched_when_nothing_changes(make_gateway) -> None:  # type: ignore[no-untyped-def]
    gateway = make_gateway(upstreams={"acct-1": {}})
    raw = (b'{"model":"gpt-5","input":"hi","tools":[{"type":"namespace","name":"x"},{"type":"web_search"}],'
           b'"client_metadata":{"a":1},"include":["reasoning.encrypted_content"],"store":false}')
    request = urllib.request.Request(gateway.server.base_url + "/v1/responses", data=raw, method="POST", headers={
        "Authorization": f"Bearer {gateway.keys['alice']}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
    assert gateway.fakes["acct-1"].requests[-1].raw == raw


def test_aliases_and_renames_reach_the_upstream_under_its_own_name(make_gateway) -> None:  # type: ignore[no-untyped-def]
    gateway = make_gateway(upstreams={"acct-1": {"models": "gpt-5*,o3=o3-2025-04-16"}})
    gateway.client().chat.completions.create(model="o3", messages=CHAT)
    assert gateway.fakes["acct-1"].requests[-1].body["model"] == "o3-2025-04-16"


def test_load_is_spread_over_the_accounts(make_gateway) -> None:  # type: ignore[no-untyped-def]
    gateway = make_gateway(upstreams={"acct-1": {}, "acct-2": {}, "acct-3": {}})
    client = gateway.client()
    for _ in range(30):
        client.chat.completions.create(model="gpt-5", messages=CHAT)
    assert all(count >= 2 for count in gateway.served_by().values()), gateway.served_by()


def test_a_conversation_sticks_to_one_account(make_gateway) -> None:  # type: ignore[no-untyped-def]
    gateway = make_gateway(upstreams={"acct-1": {}, "acct-2": {}, "acct-3": {}})
    client = gateway.client()
    for _ in range(8):
        client.responses.create(model="gpt-5", input="hi", extra_body={"prompt_cache_key": "thread-42"})
    assert sorted(gateway.served_by().values()) == [0, 0, 8]


def test_tiers_fall_back_only_when_the_first_is_unavailable(make_gateway) -> None:  # type: ignore[no-untyped-def]
    gateway = make_gateway(upstreams={"main": {"tier": 0}, "backup": {"tier": 1}})
    client = gateway.client()
    for _ in range(5):
        client.chat.completions.create(model="gpt-5", messages=CHAT)
    assert gateway.served_by() == {"main": 5, "backup": 0}
    gateway.fakes["main"].do(gateway.fakes["main"].fake.script, rate_limited(30))
    answer = client.chat.completions.create(model="gpt-5", messages=CHAT)
    assert answer.choices[0].message.content.startswith("[backup]")


def test_a_rate_limited_account_is_skipped_until_it_recovers(make_gateway) -> None:  # type: ignore[no-untyped-def]
    gateway = make_gateway(upstreams={"acct-1": {"tier": 0}, "acct-2": {"tier": 1}})
    fake = gateway.fakes["acct-1"]
    fake.do(fake.fake.script, rate_limited(6))  # long enough for the six requests below, even on a busy machine
    client = gateway.client()
    for _ in range(6):  # every answer succeeds; the 429 moves the first request to acct-2
        assert client.chat.completions.create(model="gpt-5", messages=CHAT).choices[0].message.content
    assert len(fake.requests) == 1  # cooling down after its 429, so not asked again meanwhile
    wait_for(lambda: client.chat.completions.create(model="gpt-5", messages=CHAT) and
             len(fake.requests) > 1, timeout=30, interval=0.2, what="acct-1 to come back after its Retry-After")


def test_every_account_rate_limited_is_a_429_pool_exhausted_with_retry_after(make_gateway) -> None:  # type: ignore[no-untyped-def]
    gateway = make_gateway(upstreams={"acct-1": {}, "acct-2": {}})
    for fake in gateway.fakes.values():
        fake.do(fake.fake.script, rate_limited(7))
    with pytest.raises(openai.RateLimitError) as info:
        gateway.client().chat.completions.create(model="gpt-5", messages=CHAT)
    assert info.value.code == "pool_exhausted"
    assert 6 <= int(info.value.response.headers["retry-after"]) <= 7


def test_server_errors_fail_over_and_repeated_failures_eject(make_gateway) -> None:  # type: ignore[no-untyped-def]
    gateway = make_gateway(upstreams={"bad": {"tier": 0}, "good": {"tier": 1}})
    bad = gateway.fakes["bad"]
    bad.do(bad.fake.script, *[server_error(500)] * 5)
    client = gateway.client()
    for _ in range(12):
        answer = client.chat.completions.create(model="gpt-5", messages=CHAT)
        assert answer.choices[0].message.content.startswith("[good]")
    assert len(bad.requests) == 5  # ejected after 5 consecutive failures: not asked again
    assert "ejected" in gateway.server.log()


def test_client_errors_pass_through_and_do_not_count_against_the_account(make_gateway) -> None:  # type: ignore[no-untyped-def]
    from app.fake_upstream import client_error

    gateway = make_gateway(upstreams={"acct-1": {}})
    fake = gateway.fakes["acct-1"]
    fake.do(fake.fake.script, *[client_error(400, "invalid_value")] * 6)
    client = gateway.client()
    for _ in range(6):
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(model="gpt-5", messages=CHAT)
    assert client.chat.completions.create(model="gpt-5", messages=CHAT).choices  # never ejected


def test_an_upstream_that_hangs_times_out_and_the_request_moves_on(make_gateway) -> None:  # type: ignore[no-untyped-def]
    gateway = make_gateway(upstreams={"slow": {"tier": 0}, "fast": {"tier": 1}},
                           env={"POOLGATE_FIRST_BYTE_TIMEOUT": "2"})  # the fast upstream must answer in time too
    slow = gateway.fakes["slow"]
    slow.do(slow.fake.script, hang(), hang(), hang())
    client = gateway.client()
    for _ in range(3):
        answer = client.chat.completions.create(model="gpt-5", messages=CHAT)
        assert answer.choices[0].message.content.startswith("[fast]")
    assert len(slow.requests) == 3  # each request tried the first tier, timed out, and moved on


def test_only_hanging_upstreams_is_a_504(make_gateway) -> None:  # type: ignore[no-untyped-def]
    gateway = make_gateway(upstreams={"slow": {}}, env={"POOLGATE_FIRST_BYTE_TIMEOUT": "0.3"})
    slow = gateway.fakes["slow"]
    slow.do(slow.fake.script, hang())
    with pytest.raises(openai.InternalServerError) as info:
        gateway.client().chat.completions.create(model="gpt-5", messages=CHAT)
    assert info.value.status_code == 504 and info.value.code == "upstream_timeout"


def test_garbage_from_an_upstream_is_a_clear_502(make_gateway) -> None:  # type: ignore[no-untyped-def]
    gateway = make_gateway(upstreams={"acct-1": {}})
    fake = gateway.fakes["acct-1"]
    fake.do(fake.fake.script, garbage(200))
    with pytest.raises(openai.InternalServerError) as info:
        gateway.client().chat.completions.create(model="gpt-5", messages=CHAT)
    assert info.value.status_code == 502 and info.value.code == "upstream_error"
    fake.do(fake.fake.script, server_error(503, body=b"<html>down</html>"))
    with pytest.raises(openai.InternalServerError) as info:
        gateway.client().chat.completions.create(model="gpt-5", messages=CHAT)
    assert "<html>" not in info.value.message


def test_a_failure_after_the_first_byte_ends_the_stream_with_an_error_and_no_done(make_gateway) -> None:  # type: ignore[no-untyped-def]
    gateway = make_gateway(upstreams={"acct-1": {}}, fake_options={"chunks": 8})
    fake = gateway.fakes["acct-1"]
    fake.do(fake.fake.script, cut_after(3))
    body = json.dumps({"model": "gpt-5", "messages": CHAT, "stream": True}).encode()
    request = urllib.request.Request(gateway.server.base_url + "/v1/chat/completions", data=body, method="POST",
                                     headers={"Authorization": f"Bearer {gateway.keys['alice']}",
                                              "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        text = response.read().decode()
    events = [e for e in text.split("\n\n") if e.strip()]
    assert len(events) == 4  # 3 relayed, then the error
    error = json.loads(events[-1].removeprefix("data: "))["error"]
    assert error["code"] == "upstream_error"
    assert "[DONE]" not in text
    fake.do(fake.fake.script, cut_after(3))
    stream = gateway.client().chat.completions.create(model="gpt-5", messages=CHAT, stream=True)
    with pytest.raises(openai.APIError):  # the SDK reports it rather than returning a truncated answer
        list(stream)


def test_a_client_that_disconnects_mid_stream_stops_the_upstream_within_a_second(make_gateway) -> None:  # type: ignore[no-untyped-def]
    gateway = make_gateway(upstreams={"acct-1": {"max_concurrency": 1}}, fake_options={"chunks": 200, "interval": 0.05})
    fake = gateway.fakes["acct-1"]
    stream = gateway.client().chat.completions.create(model="gpt-5", messages=CHAT, stream=True)
    next(iter(stream))
    assert fake.do(lambda: fake.fake.in_flight) == 1
    stream.close()
    closed = time.monotonic()
    wait_for(lambda: fake.do(lambda: fake.fake.in_flight) == 0, timeout=1.0, what="the upstream request to end")
    assert time.monotonic() - closed < 1.0
    assert fake.do(lambda: fake.fake.cancelled) == 1
    # The account allows one request at a time: it must be free again, not held by the abandoned stream.
    assert gateway.client().chat.completions.create(model="gpt-5", messages=CHAT).choices


def test_a_client_that_leaves_before_the_first_token_stops_the_upstream(make_gateway) -> None:  # type: ignore[no-untyped-def]
    gateway = make_gateway(upstreams={"acct-1": {}})
    fake = gateway.fakes["acct-1"]
    fake.do(fake.fake.script, hang())
    body = json.dumps({"model": "gpt-5", "messages": CHAT, "stream": True}).encode()
    with socket.create_connection(("127.0.0.1", gateway.server.port)) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     + f"Authorization: Bearer {gateway.keys['alice']}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                     + body)
        wait_for(lambda: fake.do(lambda: fake.fake.in_flight) == 1, what="the upstream to receive the request")
    wait_for(lambda: fake.do(lambda: fake.fake.in_flight) == 0, timeout=1.0, what="the upstream request to end")


def test_access_is_checked_before_any_upstream_call(make_gateway) -> None:  # type: ignore[no-untyped-def]
    gateway = make_gateway(upstreams={"acct-1": {}}, keys={
        "alice": Policy(allowed_models=("gpt-5*", "o3"), allowed_reasoning_efforts=("low",),
                        allowed_modalities=("text",)),
    })
    client = gateway.client()
    cases = [
        (openai.NotFoundError, "model_not_found", dict(model="gpt-99", messages=CHAT)),
        (openai.PermissionDeniedError, "model_not_allowed", dict(model="claude-sonnet-4-5", messages=CHAT)),
        (openai.PermissionDeniedError, "reasoning_effort_not_allowed",
         dict(model="o3", messages=CHAT, reasoning_effort="high")),
        (openai.PermissionDeniedError, "modality_not_allowed", dict(model="gpt-5", messages=[
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}]}])),
        (openai.PermissionDeniedError, "endpoint_not_allowed", dict(model="gpt-5.1-codex", messages=CHAT)),
    ]
    for error, code, request in cases:
        with pytest.raises(error) as info:
            client.chat.completions.create(**request)  # type: ignore[call-overload]
        assert info.value.code == code
    assert gateway.fakes["acct-1"].requests == []


def test_bad_bodies_get_openai_shaped_errors(make_gateway) -> None:  # type: ignore[no-untyped-def]
    gateway = make_gateway(upstreams={"acct-1": {}}, env={"POOLGATE_MAX_BODY_BYTES": "2048"})
    url = gateway.server.base_url + "/v1/chat/completions"
    auth = {"Authorization": f"Bearer {gateway.keys['alice']}", "Content-Type": "application/json"}

    def post(data: bytes) -> tuple[int, dict[str, object]]:
        request = urllib.request.Request(url, data=data, method="POST", headers=auth)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())

    status, body = post(b"{not json")
    assert status == 400 and body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    status, body = post(b'{"messages": []}')
    assert status == 400 and body["error"]["param"] == "model"  # type: ignore[index]
    status, body = post(json.dumps({"model": "gpt-5", "messages": CHAT * 200}).encode())
    assert status == 413 and body["error"]["code"] == "request_too_large"  # type: ignore[index]
    assert gateway.fakes["acct-1"].requests == []


def test_no_account_serving_the_model_is_a_503(make_gateway) -> None:  # type: ignore[no-untyped-def]
    gateway = make_gateway(upstreams={"acct-1": {"models": "o3"}})
    with pytest.raises(openai.InternalServerError) as info:
        gateway.client().chat.completions.create(model="gpt-5", messages=CHAT)
    assert info.value.status_code == 503 and info.value.code == "no_upstream_available"


def test_an_upstream_error_quoting_its_credential_is_scrubbed(make_gateway) -> None:  # type: ignore[no-untyped-def]
    from app.fake_upstream import client_error

    gateway = make_gateway(upstreams={"acct-1": {}})
    fake = gateway.fakes["acct-1"]
    leaked = b'{"error":{"message":"bad key sk-acct-1-0123456789abcdef","type":"invalid_request_error"}}'
    fake.do(fake.fake.script, client_error(400, body=leaked))
    with pytest.raises(openai.BadRequestError) as info:
        gateway.client().chat.completions.create(model="gpt-5", messages=CHAT)
    assert "bad key ***" in info.value.message
    assert "0123456789abcdef" not in json.dumps(info.value.body)


def test_a_slow_trickle_is_relayed_without_stalling(make_gateway) -> None:  # type: ignore[no-untyped-def]
    gateway = make_gateway(upstreams={"acct-1": {}}, fake_options={"chunks": 5})
    fake = gateway.fakes["acct-1"]
    fake.do(fake.fake.script, trickle(0.2))
    chunks = list(gateway.client().chat.completions.create(model="gpt-5", messages=CHAT, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "[acct-1] tok0 tok1 tok2 tok3 tok4"


def test_a_model_can_have_its_own_balancer_in_the_catalog_file(make_gateway, tmp_path) -> None:  # type: ignore[no-untyped-def]
    catalog = tmp_path / "catalog.json"
    catalog.write_text(json.dumps({"models": [{"id": "gpt-5", "balancer": "round_robin"}]}))
    gateway = make_gateway(upstreams={"acct-1": {}, "acct-2": {}}, env={"POOLGATE_CATALOG_FILE": str(catalog)})
    client = gateway.client()
    for _ in range(10):
        client.chat.completions.create(model="gpt-5", messages=CHAT)
    assert gateway.served_by() == {"acct-1": 5, "acct-2": 5}  # strict alternation, not random spreading


def _raw(port: int, payload: bytes, *, close_after_send: bool = False) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(payload)
        if close_after_send:
            return b""
        chunks = []
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                chunks.append(data)
                if b"\r\n\r\n" in b"".join(chunks) and b"}" in data:
                    break
        except TimeoutError:
            pass
        return b"".join(chunks)


def test_lying_lengths_and_broken_headers_never_reach_an_upstream(make_gateway) -> None:  # type: ignore[no-untyped-def]
    gateway = make_gateway(upstreams={"acct-1": {}})
    port, token = gateway.server.port, gateway.keys["alice"]
    body = json.dumps({"model": "gpt-5", "messages": CHAT}).encode()
    head = f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
    head += "Content-Type: application/json\r\n"

    short = _raw(port, (head + "Content-Length: 10\r\nConnection: close\r\n\r\n").encode() + body)
    assert short.startswith(b"HTTP/1.1 400") and b"invalid_request_error" in short  # 10 bytes are not JSON

    _raw(port, (head + f"Content-Length: {len(body) + 500}\r\n\r\n").encode() + body, close_after_send=True)

    crlf = _raw(port, (head + "X-Evil: a\rb\r\nContent-Length: 2\r\n\r\n{}").encode())
    assert crlf.startswith(b"HTTP/1.1 400")

    assert gateway.client().chat.completions.create(model="gpt-5", messages=CHAT).choices  # still serving
    assert len(gateway.fakes["acct-1"].requests) == 1
