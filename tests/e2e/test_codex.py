"""The real Codex CLI (pinned) against poolgate: what a Codex user notices, end to end.

Codex talks to the gateway through a recording pass-through proxy, so each test can also say
exactly which requests codex made, including the ones the gateway refused and every retry.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from app.fake_upstream import trickle
from app.server import Clock
from keys import Policy, Quotas
from tests.support import ROOT, wait_for
from tests.support.codex import CODEX_VERSION, CodexRun, CodexUnavailable, Recorder, codex_binary, run_codex

ANSWER = "[acct-1] tok0 tok1 tok2 tok3"  # what the fake upstream streams back
FAIL_FAST = {"stream_max_retries": 0, "request_max_retries": 0}  # for tests where a retry would only cost time


@pytest.fixture(scope="module", autouse=True)
def _codex_installed() -> None:
    try:
        codex_binary()
    except CodexUnavailable as exc:
        pytest.skip(f"codex {CODEX_VERSION} is not available: {exc}")


@dataclass
class Codex:
    """Runs codex against one gateway, each run in a fresh CODEX_HOME, through a recorder."""

    gateway: Any
    recorder: Recorder
    home: Path
    runs: list[CodexRun] = field(default_factory=list)

    def run(self, key: str = "alice", **options: Any) -> CodexRun:
        home = self.home / f"run{len(self.runs)}"
        result = run_codex(home, self.recorder.base_url + "/v1", self.gateway.keys[key], **options)
        self.runs.append(result)
        return result


@pytest.fixture
def codex(tmp_path: Path) -> Iterator[Any]:
    """``codex(gateway)``: a codex runner in front of that gateway."""
    started: list[Codex] = []

    def connect(gateway: Any) -> Codex:
        runner = Codex(gateway, Recorder(gateway.server.base_url), tmp_path / f"codex{len(started)}")
        started.append(runner)
        return runner

    yield connect
    for runner in started:
        runner.recorder.stop()


def _usage(gateway: Any, key: str = "alice") -> dict[str, Any]:
    return dict(gateway.server.http.get("/v1/usage", gateway.keys[key]).json()["today"])


def test_the_answer_arrives_and_its_usage_is_recorded(make_gateway, codex) -> None:  # type: ignore[no-untyped-def]
    gateway = make_gateway(upstreams={"acct-1": {}}, keys={"alice": Policy(allowed_models=("gpt-5*",))})
    run = codex(gateway).run(model="gpt-5", provider=FAIL_FAST)
    assert run.code == 0, run.explain()
    assert run.messages == [ANSWER]
    # What codex reports for the turn is what the gateway recorded against the key.
    today = wait_for(lambda: (u := _usage(gateway))["requests"] == 1 and u, what="the usage row")
    assert (today["input_tokens"], today["output_tokens"]) == (run.usage["input_tokens"], run.usage["output_tokens"])
    assert today["output_tokens"] == 5 and today["cost_usd"] > 0


def test_without_a_model_codex_uses_the_keys_first_model_from_a_catalog_it_accepts(make_gateway, codex) -> None:  # type: ignore[no-untyped-def]
    bundled = {m["id"]: m for m in json.loads((ROOT / "app" / "catalog" / "bundled.json").read_text())["models"]}
    assert "pdf" in bundled["gpt-5-mini"]["input_modalities"]  # a modality codex does not know
    assert bundled["gpt-5"]["priority"] > bundled["gpt-5-mini"]["priority"]  # the catalog alone would pick gpt-5
    policy = Policy(allowed_models=("gpt-5", "gpt-5-mini", "claude-sonnet-4-5"), priority_rules=("gpt-5-mini",))
    gateway = make_gateway(upstreams={"acct-1": {}}, keys={"alice": policy})
    runner = codex(gateway)
    run = runner.run(provider=FAIL_FAST)  # no model in the config, none on the command line
    assert run.code == 0, run.explain()
    assert run.messages == [ANSWER]
    assert [r.body["model"] for r in gateway.fakes["acct-1"].requests] == ["gpt-5-mini"]
    # The catalog was fetched once and taken as it is: no decode error, no fallback metadata.
    catalog = runner.recorder.requests("GET", "/v1/models")
    assert [(r.path, r.status) for r in catalog] == [(f"/v1/models?client_version={CODEX_VERSION}", 200)]
    slugs = [m["slug"] for m in catalog[0].answer_json()["models"]]
    assert slugs[0] == "gpt-5-mini" and "gpt-5" in slugs
    assert "failed to refresh available models" not in run.stderr
    assert "fallback metadata" not in run.stderr + json.dumps(run.events)


def test_a_model_the_key_may_not_use_fails_at_once_naming_it(make_gateway, codex) -> None:  # type: ignore[no-untyped-def]
    gateway = make_gateway(upstreams={"acct-1": {}}, keys={"alice": Policy(allowed_models=("gpt-5*",))})
    runner = codex(gateway)
    run = runner.run(args=("-m", "o3"))  # default retries: a refusal codex retries would be sent 6 times
    assert run.code == 1, run.explain()
    assert run.messages == []
    assert run.errors and all("o3" in message for message in run.errors), run.explain()
    posts = runner.recorder.requests("POST", "/v1/responses")
    assert [(p.status, p.answer_json()["error"]["code"]) for p in posts] == [(403, "model_not_found")], run.explain()
    assert gateway.fakes["acct-1"].requests == []


def test_a_key_at_its_limit_backs_off_and_then_succeeds(make_gateway, codex) -> None:  # type: ignore[no-untyped-def]
    # A limit of one request in flight: its refusal says "retry in 1 s" and the test decides when the
    # place frees. (A per-minute window reopens at the end of the clock's minute: up to 60 s away.)
    # Codex keeps its default retries here.
    gateway = make_gateway(upstreams={"acct-1": {}},
                           keys={"alice": Policy(allowed_models=("gpt-5*",), quotas=Quotas(max_concurrency=1))})
    fake = gateway.fakes["acct-1"]
    fake.do(fake.fake.script, trickle(60))  # a slow stream that holds the key's one place until it is closed
    holder = gateway.client().responses.create(model="gpt-5", input="hold", stream=True)
    next(iter(holder))
    runner = codex(gateway)
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(runner.run, model="gpt-5")
        wait_for(lambda: any(p.status == 429 for p in runner.recorder.requests("POST")), timeout=20,
                 what="codex to be refused for the key's limit")
        holder.close()  # the place frees
        run = pending.result(timeout=60)
    assert run.code == 0, run.explain()
    assert run.messages == [ANSWER]
    posts = runner.recorder.requests("POST", "/v1/responses")
    statuses = [p.status for p in posts]
    assert statuses[-1] == 200 and set(statuses[:-1]) == {429}, statuses
    for refused, retry in pairwise(posts):
        wait = float(refused.answer_headers["retry-after"])
        assert retry.at - refused.at >= wait * 0.9  # codex waited as told before asking again


def test_codex_fields_and_headers_reach_the_upstream_intact(make_gateway, codex) -> None:  # type: ignore[no-untyped-def]
    gateway = make_gateway(upstreams={"acct-1": {}}, keys={"alice": Policy(allowed_models=("gpt-5*",))})
    runner = codex(gateway)
    run = runner.run(model="gpt-5", provider=FAIL_FAST)
    assert run.code == 0, run.explain()
    (sent,) = runner.recorder.requests("POST", "/v1/responses")
    (received,) = gateway.fakes["acct-1"].requests
    assert received.body == sent.json()  # nothing dropped, nothing added
    body = received.body
    assert {"namespace", "web_search"} <= {tool["type"] for tool in body["tools"]}
    assert body["prompt_cache_key"] == run.thread_id
    assert body["include"] == ["reasoning.encrypted_content"]
    assert body["client_metadata"]["thread_id"] == run.thread_id
    codex_headers = {name: value for name, value in sent.headers.items()
                     if name.startswith("x-codex-") or name in ("originator", "session-id", "thread-id",
                                                                "x-client-request-id", "accept", "user-agent")}
    assert {"x-codex-turn-metadata", "x-codex-window-id", "session-id"} <= codex_headers.keys()
    assert {name: received.headers.get(name) for name in codex_headers} == codex_headers
    assert received.headers["authorization"] != sent.headers["authorization"]  # the key stays at the gateway


def test_with_the_websocket_switched_off_codex_falls_back_to_http_at_once(make_gateway, codex) -> None:  # type: ignore[no-untyped-def]
    gateway = make_gateway(upstreams={"acct-1": {}}, keys={"alice": Policy(allowed_models=("gpt-5*",))},
                           websocket=False)
    runner = codex(gateway)
    run = runner.run(model="gpt-5", provider={**FAIL_FAST, "supports_websockets": True})
    assert run.code == 0, run.explain()
    assert run.messages == [ANSWER]
    turn = [(r.method, r.status) for r in runner.recorder.requests(path="/v1/responses")]
    assert turn == [("GET", 426), ("POST", 200)]  # one upgrade attempt, no reconnect loop
    assert runner.recorder.requests("GET", "/v1/responses")[0].headers["upgrade"] == "websocket"


@pytest.mark.parametrize("builtin", [False, True], ids=["custom-provider", "built-in-provider"])
def test_codex_runs_its_turns_over_the_websocket(make_gateway, tmp_path, builtin) -> None:  # type: ignore[no-untyped-def]
    gateway = make_gateway(upstreams={"acct-1": {}}, keys={"alice": Policy(allowed_models=("gpt-5*",))})
    # Straight to the gateway: the recorder relays HTTP only.
    run = run_codex(tmp_path / "ws", gateway.server.base_url + "/v1", gateway.keys["alice"], model="gpt-5",
                    provider={"supports_websockets": True}, builtin=builtin)
    assert run.code == 0, run.explain()
    assert run.messages == [ANSWER]
    # The access line is written as the turn's accounting ends, which may be just after codex exits.
    log = wait_for(lambda: gateway.server.log() if "transport=" in gateway.server.log() else None,
                   what="the access log line")
    assert "transport=ws" in log and "transport=http" not in log  # the turn went over the socket
    (received,) = gateway.fakes["acct-1"].requests  # bridged to the account over HTTP, as one whole request
    assert received.body["stream"] is True and "previous_response_id" not in received.body
    assert "say hi" in json.dumps(received.body["input"])
    usage = wait_for(lambda: _usage(gateway) if _usage(gateway)["requests"] == 1 else None, what="the usage row")
    assert usage["output_tokens"] == 5


def test_over_plain_http_the_access_log_says_so(make_gateway, codex) -> None:  # type: ignore[no-untyped-def]
    gateway = make_gateway(upstreams={"acct-1": {}}, keys={"alice": Policy(allowed_models=("gpt-5*",))})
    run = codex(gateway).run(model="gpt-5", provider=FAIL_FAST)
    assert run.code == 0 and run.messages == [ANSWER], run.explain()
    log = wait_for(lambda: gateway.server.log() if "transport=" in gateway.server.log() else None,
                   what="the access log line")
    assert "transport=http" in log and "transport=ws" not in log


def test_a_key_over_its_requests_per_minute_waits_for_the_window_and_then_succeeds(make_gateway, codex) -> None:  # type: ignore[no-untyped-def]
    # The window is the clock's minute. The server's clock is set to 3 s before a minute ends just before the
    # minute's one request (and runs at the real pace), so the wait codex is told is a few seconds without
    # waiting for the real clock's minute to turn.
    shift = [0.0]
    gateway = make_gateway(upstreams={"acct-1": {}}, clock=Clock(time.monotonic, lambda: shift[0] + time.monotonic()),
                           keys={"alice": Policy(allowed_models=("gpt-5*",), quotas=Quotas(rpm=1))})
    shift[0] = (time.time() // 60 * 60 + 57) - time.monotonic()
    gateway.client().responses.create(model="gpt-5", input="use the minute's one request")
    runner = codex(gateway)
    run = runner.run(model="gpt-5")
    assert run.code == 0, run.explain()
    assert run.messages == [ANSWER]
    posts = runner.recorder.requests("POST", "/v1/responses")
    assert [p.status for p in posts] == [429, 200], run.explain()
    refused, retried = posts
    assert refused.answer_json()["error"]["code"] == "rate_limit_exceeded"
    wait = float(refused.answer_headers["retry-after"])
    assert 1 <= wait <= 4
    assert retried.at - refused.at >= wait * 0.9  # codex waited as told, then the next minute let it through
