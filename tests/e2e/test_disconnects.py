"""A client that leaves mid-stream is accounted for and frees its place, on either quota store."""

from __future__ import annotations

import time
from typing import Any

import openai
import pytest

from keys import Policy, Quotas
from tests.support import query, wait_for
from tests.support.redis import machine_redis_up

CHAT = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize("limits_url", [
    "memory://",
    pytest.param("redis://127.0.0.1:6379/0",
                 marks=pytest.mark.skipif(not machine_redis_up(), reason="no Redis on 127.0.0.1:6379")),
])
def test_a_stream_the_client_left_is_recorded_and_its_place_freed_at_once(make_gateway: Any, limits_url: str) -> None:
    # With Redis the settling step waits on the network, which is where the framework's
    # cancellation of the abandoned stream used to cut it short.
    gateway = make_gateway(upstreams={"acct-1": {}}, fake_options={"chunks": 400, "interval": 0.05},
                           keys={"alice": Policy(allowed_models=("*",), quotas=Quotas(max_concurrency=1))},
                           env={"POOLGATE_LIMITS_URL": limits_url})
    client = gateway.client(max_retries=0)
    stream = client.chat.completions.create(model="gpt-5", messages=CHAT, stream=True)
    next(iter(stream))
    with pytest.raises(openai.RateLimitError):  # the key's one place is taken
        client.chat.completions.create(model="gpt-5", messages=CHAT)
    stream.close()
    left = time.monotonic()

    def served() -> bool:
        try:
            return bool(client.chat.completions.create(model="gpt-5", messages=CHAT).choices)
        except openai.RateLimitError:
            return False

    wait_for(served, timeout=5, interval=0.1, what="the key's place to be free again")
    assert time.monotonic() - left < 5  # not held until a lease runs out

    def rows() -> list[dict[str, Any]]:
        return query(gateway.settings, "select status, output_tokens from usage where http_status = 200 "
                                       "order by started_at")

    wait_for(lambda: len(rows()) == 2 and rows()[0]["status"] != "started", timeout=5,
             what="the abandoned stream's usage row to be finished")
    abandoned, later = rows()
    assert abandoned["status"] == "client_closed" and abandoned["output_tokens"] >= 1
    assert later["status"] == "ok"
    assert gateway.server.log().count("status=200") >= 2  # both requests reached the access log
