"""Responses over WebSocket, as Codex speaks it: a real socket to uvicorn on 127.0.0.1, turns bridged to the
fake upstream accounts over HTTP."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection, connect

from app.fake_upstream import cut_after, server_error, trickle
from keys import Policy, Quotas
from tests.support import query, wait_for

INSTRUCTIONS = {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "Be brief."}]}


def user(text: str) -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


@contextmanager
def socket(gateway: Any, key: str = "alice", **headers: str) -> Iterator[ClientConnection]:
    url = gateway.server.base_url.replace("http://", "ws://") + "/v1/responses"
    with connect(url, additional_headers={"Authorization": f"Bearer {gateway.keys.get(key, key)}",
                                          "OpenAI-Beta": "responses_websockets=2026-02-06", **headers},
                 open_timeout=10, max_size=None) as ws:
        yield ws


def turn(ws: ClientConnection, **frame: Any) -> list[dict[str, Any]]:
    """Send one ``response.create`` and read its events up to the one that ends it."""
    ws.send(json.dumps({"type": "response.create", "model": "gpt-5", "store": False, **frame}))
    events = []
    while True:
        event = json.loads(ws.recv(timeout=20))
        events.append(event)
        if event["type"] in ("response.completed", "response.failed", "response.incomplete", "error"):
            return events


def completed_id(events: list[dict[str, Any]]) -> str:
    assert events[-1]["type"] == "response.completed", events[-1]
    return str(events[-1]["response"]["id"])


def test_a_refused_handshake_is_the_same_401_or_403_and_off_is_426(make_gateway: Any) -> None:
    gateway = make_gateway(upstreams={"acct-1": {}}, keys={"alice": Policy(allowed_models=("*",))})
    for key, status in (("pg_not_a_key", 401),):
        with pytest.raises(InvalidStatus) as refused, socket(gateway, key):
            pass
        assert refused.value.response.status_code == status
        assert json.loads(refused.value.response.body)["error"]["code"] == "invalid_api_key"
    off = make_gateway(upstreams={"acct-1": {}}, websocket=False)
    with pytest.raises(InvalidStatus) as refused, socket(off):
        pass
    assert refused.value.response.status_code == 426


def test_a_warm_up_and_several_turns_on_one_socket(make_gateway: Any) -> None:
    gateway = make_gateway(upstreams={"acct-1": {}, "acct-2": {}})
    with socket(gateway, session_id="thread-1") as ws:
        warm = turn(ws, generate=False, input=[INSTRUCTIONS])
        assert [e["type"] for e in warm] == ["response.created", "response.completed"]
        assert gateway.all_requests() == []  # a warm-up calls no upstream
        first = turn(ws, previous_response_id=completed_id(warm), input=[user("hello")])
        assert "response.output_text.delta" in [e["type"] for e in first]
        second = turn(ws, previous_response_id=completed_id(first), input=[user("and again")])
        third = turn(ws, input=[INSTRUCTIONS, user("a new start")])  # full input, as after a reconnect
        completed_id(second), completed_id(third)
    sent = [r.body for r in gateway.all_requests()]
    assert len(sent) == 3
    # Upstreams see whole conversations: the bridge rebuilt what previous_response_id stood for.
    assert sent[0]["input"] == [INSTRUCTIONS, user("hello")] and "previous_response_id" not in sent[0]
    assert sent[1]["input"][:2] == [INSTRUCTIONS, user("hello")]
    assert sent[1]["input"][2]["type"] == "message" and sent[1]["input"][2]["role"] == "assistant"
    assert sent[1]["input"][-1] == user("and again")
    assert all(body["stream"] is True for body in sent)
    # The turns went to one account (the session sticks), and each is a usage row of its own.
    assert sorted(gateway.served_by().values()) == [0, 3]
    rows = wait_for(lambda: [r for r in query(gateway.settings, "select status from usage")
                             if r["status"] != "started"] if len(query(gateway.settings, "select id from usage")) == 3
                    else None, what="three usage rows")
    assert [r["status"] for r in rows] == ["ok", "ok", "ok"]
    wait_for(lambda: gateway.server.log().count("transport=ws") == 3, what="an access line per turn")
    assert "transport=http" not in gateway.server.log()


def test_refusals_and_failures_are_error_frames_codex_acts_on(make_gateway: Any) -> None:
    gateway = make_gateway(upstreams={"acct-1": {}}, keys={
        "alice": Policy(allowed_models=("gpt-5",), quotas=Quotas(rpm=3)),
        "broke": Policy(allowed_models=("gpt-5",), quotas=Quotas(budget_usd=0.000001, budget_period="day"))})
    with socket(gateway) as ws:
        refused = turn(ws, model="o3", input=[user("hi")])[-1]
        assert (refused["type"], refused["status"], refused["error"]["code"]) == ("error", 403, "model_not_allowed")
        gateway.fakes["acct-1"].do(gateway.fakes["acct-1"].fake.script, server_error(500))  # the only account
        failed = turn(ws, input=[user("hi")])[-1]
        assert (failed["type"], failed["status"]) == ("error", 502)
        gateway.fakes["acct-1"].do(gateway.fakes["acct-1"].fake.script, cut_after(3))
        cut = turn(ws, input=[user("hi")])
        assert cut[-1]["type"] == "error" and cut[-1]["status"] == 502 and len(cut) == 4
        limited = turn(ws, input=[user("hi")])[-1]  # the fourth request this minute
        assert (limited["status"], limited["error"]["code"]) == (429, "rate_limit_exceeded")
        assert int(limited["headers"]["retry-after"]) >= 1  # Codex retries after it
    with socket(gateway, "broke", originator="codex_exec") as ws:
        completed_id(turn(ws, input=[user("spend it")]))
        spent = turn(ws, input=[user("more")])[-1]
        assert spent["status"] == 429 and "retry-after" not in spent["headers"]  # Codex stops: waiting won't help
        denied = turn(ws, model="o3", input=[user("hi")])[-1]
        assert denied["error"]["code"] == "model_not_found"  # to Codex, a refusal that stops it at once


def test_closing_the_socket_mid_turn_stops_the_upstream_and_frees_the_keys_place(make_gateway: Any) -> None:
    gateway = make_gateway(upstreams={"acct-1": {}}, keys={
        "alice": Policy(allowed_models=("gpt-5",), quotas=Quotas(max_concurrency=1))})
    fake = gateway.fakes["acct-1"]
    fake.do(fake.fake.script, trickle(0.2))
    fake.do(fake.fake.configure, chunks=200)
    ws_cm = socket(gateway)
    ws = ws_cm.__enter__()
    ws.send(json.dumps({"type": "response.create", "model": "gpt-5", "input": [user("long")]}))
    json.loads(ws.recv(timeout=10))  # the stream is under way
    ws_cm.__exit__(None, None, None)
    closed_at = time.monotonic()
    wait_for(lambda: fake.do(lambda: fake.fake.cancelled) == 1, timeout=1.0, what="the upstream call to stop")
    assert time.monotonic() - closed_at < 1.0
    fake.do(fake.fake.configure, chunks=4)
    assert gateway.client("alice").responses.create(model="gpt-5", input="next").output_text  # the place is free
    statuses = wait_for(lambda: [r["status"] for r in query(gateway.settings, "select status from usage order by id")
                                 if r["status"] != "started"] if len(query(gateway.settings, "select id from usage"))
                        == 2 else None, what="two usage rows")
    assert statuses[0] == "client_closed"


def test_an_interrupt_ends_the_turn_as_incomplete_and_the_socket_goes_on(make_gateway: Any) -> None:
    gateway = make_gateway(upstreams={"acct-1": {}})
    fake = gateway.fakes["acct-1"]
    fake.do(fake.fake.script, trickle(0.2))
    fake.do(fake.fake.configure, chunks=100)
    with socket(gateway) as ws:
        ws.send(json.dumps({"type": "response.create", "model": "gpt-5", "input": [user("long")]}))
        created = json.loads(ws.recv(timeout=10))
        ws.send(json.dumps({"type": "response.interrupt", "response_id": created["response"]["id"],
                            "mode": "discard_partial_items"}))
        while (event := json.loads(ws.recv(timeout=10)))["type"] != "response.incomplete":
            pass
        assert event["response"]["incomplete_details"]["reason"] == "interrupted"
        fake.do(fake.fake.configure, chunks=4)
        completed_id(turn(ws, input=[user("short")]))


def test_a_compaction_over_the_socket_yields_its_one_item_and_the_next_turn_sticks(make_gateway: Any) -> None:
    gateway = make_gateway(upstreams={"acct-1": {}, "acct-2": {}})
    with socket(gateway, session_id="thread-9") as ws:
        first = completed_id(turn(ws, input=[user("a long conversation")], prompt_cache_key="thread-9"))
        # Codex's remote compaction v2 on a socket: the previous response and a trigger, nothing else.
        compacted = turn(ws, previous_response_id=first, input=[{"type": "compaction_trigger"}],
                         prompt_cache_key="thread-9")
        items = [e["item"] for e in compacted if e["type"] == "response.output_item.done"]
        assert [item["type"] for item in items] == ["compaction"]
        # After a compaction Codex sends the whole input, the compaction item in it; only its account reads it.
        after = turn(ws, input=[user("a long conversation"), items[0], user("go on")], prompt_cache_key="thread-9")
        completed_id(after)
    sent = [r.body for r in gateway.all_requests()]
    assert sent[1]["input"][-1] == {"type": "compaction_trigger"} and sent[1]["input"][0] == user("a long conversation")
