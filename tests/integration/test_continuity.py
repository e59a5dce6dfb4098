"""Conversations that continue a response go to the account that made it (in-process, two fake accounts,
each of which knows only its own response ids and compactions, as OpenAI accounts do)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from app.fake_upstream import rate_limited
from app.pool import UpstreamStore
from keys import Policy


async def post(gateway: Any, path: str, body: dict[str, Any], key: str = "alice") -> tuple[int, Any]:
    response = await gateway.client.post(path, json=body, headers=gateway.auth(key))
    return response.status_code, response.json() if response.headers.get("content-type", "").startswith(
        "application/json") else response.text


def owner_of(gateway: Any, response_id: str) -> str:
    return next(name for name, fake in gateway.fakes.items() if response_id in fake.responses)


def stream_ids(text: str) -> str:
    for line in text.splitlines():
        if line.startswith("data: ") and '"response.completed"' in line:
            return str(json.loads(line[6:])["response"]["id"])
    raise AssertionError(f"no response.completed in {text[:300]}")


async def test_every_follow_up_reaches_the_account_that_made_its_response(make_gateway: Any) -> None:
    gateway = await make_gateway(upstreams={"acct-1": {}, "acct-2": {}}, balancer="round_robin")
    conversations = []
    for _ in range(6):  # round robin: the first turns land on both accounts
        status, first = await post(gateway, "/v1/responses", {"model": "gpt-5", "input": "start"})
        assert status == 200
        conversations.append(first["id"])
    assert {owner_of(gateway, rid) for rid in conversations} == {"acct-1", "acct-2"}
    for turn in range(2):
        for index, previous in enumerate(conversations):
            owner = owner_of(gateway, previous)
            body = {"model": "gpt-5", "input": f"turn {turn}", "previous_response_id": previous}
            if index % 2:  # half of them streamed
                response = await gateway.client.post("/v1/responses", json={**body, "stream": True},
                                                     headers=gateway.auth())
                assert response.status_code == 200
                following = stream_ids(response.text)
            else:
                status, answer = await post(gateway, "/v1/responses", body)
                assert status == 200, answer
                following = answer["id"]
            assert owner_of(gateway, following) == owner  # 12 of 12 follow-ups at their owner
            conversations[index] = following


async def test_the_per_response_endpoints_reach_the_owner_and_only_its_key(make_gateway: Any) -> None:
    gateway = await make_gateway(upstreams={"acct-1": {}, "acct-2": {}}, balancer="round_robin", keys={
        "alice": Policy(allowed_models=("*",)), "bob": Policy(allowed_models=("*",))})
    made = [(await post(gateway, "/v1/responses", {"model": "gpt-5", "input": f"hi {i}"}))[1]["id"]
            for i in range(4)]
    client = gateway.client
    for rid in made:
        got = await client.get(f"/v1/responses/{rid}", headers=gateway.auth())
        assert got.status_code == 200 and got.json()["id"] == rid
        items = await client.get(f"/v1/responses/{rid}/input_items", headers=gateway.auth())
        assert items.status_code == 200 and items.json()["data"][0]["content"].startswith("hi")
        assert (await client.post(f"/v1/responses/{rid}/cancel", headers=gateway.auth())).status_code == 200
        other = await client.get(f"/v1/responses/{rid}", headers=gateway.auth("bob"))
        assert other.status_code == 404  # another key's response is not there for it
    deleted = await client.delete(f"/v1/responses/{made[0]}", headers=gateway.auth())
    assert deleted.status_code == 200 and deleted.json()["deleted"] is True
    unknown = await client.get("/v1/responses/resp_never_made", headers=gateway.auth())
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "response_not_found"


async def test_an_owner_cooling_down_is_waited_for_and_one_gone_is_named(make_gateway: Any) -> None:
    gateway = await make_gateway(upstreams={"acct-1": {}, "acct-2": {}}, owner_wait=5)
    status, first = await post(gateway, "/v1/responses", {"model": "gpt-5", "input": "start"})
    owner = owner_of(gateway, first["id"])
    other = next(name for name in gateway.fakes if name != owner)
    gateway.fakes[owner].script(rate_limited(0.3))
    gateway.fakes[other].script(rate_limited(0.3))
    # A plain request cools the owner down (it moves to the other account)...
    assert (await post(gateway, "/v1/responses", {"model": "gpt-5", "input": "x", "prompt_cache_key": owner}))[0] \
        in (200, 429)
    # ...and a follow-up waits for the owner rather than asking an account that does not know the response.
    status, answer = await post(gateway, "/v1/responses", {"model": "gpt-5", "input": "more",
                                                            "previous_response_id": first["id"]})
    assert status == 200 and owner_of(gateway, answer["id"]) == owner

    await UpstreamStore(gateway.state.engine, gateway.state.vault).update(owner, enabled=False)
    await gateway.sync()
    status, error = await post(gateway, "/v1/responses", {"model": "gpt-5", "input": "again",
                                                           "previous_response_id": answer["id"]})
    assert status == 409 and error["error"]["code"] == "response_owner_gone"
    assert "switched off" in error["error"]["message"]
    assert not any(r.body.get("previous_response_id") == answer["id"] for r in gateway.fakes[other].requests)


async def test_compaction_passes_through_and_its_conversation_stays_on_its_account(make_gateway: Any) -> None:
    gateway = await make_gateway(upstreams={"acct-1": {}, "acct-2": {}}, balancer="round_robin")
    history = [{"role": "user", "content": "a long conversation"}]
    status, compacted = await post(gateway, "/v1/responses/compact", {
        "model": "gpt-5", "input": history, "prompt_cache_key": "thread-1"})
    assert status == 200 and [item["type"] for item in compacted["output"]] == ["compaction"]
    item = compacted["output"][0]
    # Codex's remote compaction v2: a normal streamed request whose input ends with a compaction trigger.
    response = await gateway.client.post("/v1/responses", headers=gateway.auth(), json={
        "model": "gpt-5", "stream": True, "prompt_cache_key": "thread-1",
        "input": [*history, {"type": "compaction_trigger"}]})
    done = [json.loads(line[6:]) for line in response.text.splitlines()
            if line.startswith("data: ") and "output_item.done" in line]
    assert [event["item"]["type"] for event in done] == ["compaction"]
    # The compaction's encrypted content is its account's alone; the session keeps later turns there.
    for turn in range(4):
        status, answer = await post(gateway, "/v1/responses", {
            "model": "gpt-5", "prompt_cache_key": "thread-1",
            "input": [item, {"role": "user", "content": f"next {turn}"}]})
        assert status == 200, answer


@pytest.mark.parametrize("stream", [False, True])
async def test_a_follow_up_sent_the_moment_an_answer_ends_finds_its_owner(make_gateway: Any, stream: bool) -> None:
    gateway = await make_gateway(upstreams={"acct-1": {}, "acct-2": {}}, balancer="round_robin")

    async def conversation(n: int) -> None:
        previous = None
        for turn in range(3):
            body: dict[str, Any] = {"model": "gpt-5", "input": f"c{n} t{turn}", "stream": stream}
            if previous:
                body["previous_response_id"] = previous
            response = await gateway.client.post("/v1/responses", json=body, headers=gateway.auth())
            assert response.status_code == 200, response.text
            current = stream_ids(response.text) if stream else response.json()["id"]
            assert previous is None or owner_of(gateway, current) == owner_of(gateway, previous)
            previous = current

    await asyncio.gather(*(conversation(n) for n in range(8)))
