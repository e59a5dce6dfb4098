"""What the real SDKs do, at their default settings, with a 429 that waiting cannot fix soon (a spent budget,
a request larger than its window): they stop at once, rather than sleeping for hours or retrying in vain.

The Python SDK and the Node SDK (pinned, installed with npm under ``.cache/``) talk over real HTTP to
poolgate listening on 127.0.0.1.
"""

from __future__ import annotations

import json
import re
import subprocess
from typing import Any

import openai
import pytest

from keys import Policy, Quotas
from tests.support.npm import NpmUnavailable, npm_package

NODE_SDK_VERSION = "6.30.1"
CHAT = [{"role": "user", "content": "hello there"}]
LARGE = [{"role": "user", "content": "word " * 400}]

NODE_CLIENT = """
const OpenAI = require("openai");
const [baseURL, apiKey, model, content] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey });  // the SDK's defaults: 2 retries, honouring Retry-After
const started = Date.now();
client.chat.completions.create({ model, messages: [{ role: "user", content }], max_tokens: 16 })
  .then(() => console.log(JSON.stringify({ status: 200, seconds: (Date.now() - started) / 1000 })))
  .catch((error) => console.log(JSON.stringify({ status: error.status ?? null, code: error.code ?? null,
                                                 seconds: (Date.now() - started) / 1000 })));
"""


def rejections(gateway: Any, key: str) -> int:
    """How many requests of ``key`` poolgate refused for a quota: each is one attempt the SDK made."""
    metrics = gateway.server.http.metrics()
    total = 0
    for line in metrics.splitlines():
        if line.startswith("poolgate_quota_rejections_total{") and f'key="{key}"' in line:
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


def key_id(gateway: Any, name: str) -> str:
    found = re.match(r"pg_([a-z0-9]{12})_", gateway.keys[name])
    assert found is not None
    return found.group(1)


@pytest.fixture
def gateway(make_gateway: Any) -> Any:
    return make_gateway(upstreams={"acct-1": {}}, keys={
        "spent": Policy(allowed_models=("gpt-5",), quotas=Quotas(budget_usd=0.000001, budget_period="day")),
        "spent-node": Policy(allowed_models=("gpt-5",), quotas=Quotas(budget_usd=0.000001, budget_period="day")),
        "small": Policy(allowed_models=("gpt-5",), quotas=Quotas(tpm=50)),
    })


def test_the_python_sdk_stops_at_once_on_a_spent_budget_and_an_oversized_request(gateway: Any) -> None:
    client = gateway.client("spent", max_retries=openai.DEFAULT_MAX_RETRIES)
    client.chat.completions.create(model="gpt-5", messages=CHAT)  # spends the whole budget
    with pytest.raises(openai.RateLimitError) as spent:
        client.chat.completions.create(model="gpt-5", messages=CHAT)
    assert "budget" in spent.value.message
    assert spent.value.response.headers["x-should-retry"] == "false"
    assert "retry-after" not in spent.value.response.headers
    assert rejections(gateway, key_id(gateway, "spent")) == 1  # one attempt: no retry at all

    small = gateway.client("small", max_retries=openai.DEFAULT_MAX_RETRIES)
    with pytest.raises(openai.RateLimitError) as large:
        small.chat.completions.create(model="gpt-5", messages=LARGE, max_tokens=16)
    assert "Request too large" in large.value.message
    assert rejections(gateway, key_id(gateway, "small")) == 1


def test_the_node_sdk_stops_at_once_on_a_spent_budget_and_an_oversized_request(gateway: Any) -> None:
    try:
        folder = npm_package("openai", NODE_SDK_VERSION)
    except NpmUnavailable as exc:
        pytest.skip(str(exc))
    script = folder / "give-up.js"
    script.write_text(NODE_CLIENT)
    base_url = gateway.server.base_url + "/v1"

    def run(key: str, content: str) -> dict[str, Any]:
        done = subprocess.run(["node", str(script), base_url, gateway.keys[key], "gpt-5", content],
                              cwd=folder, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        return result

    assert run("spent-node", "hello there")["status"] == 200  # spends the whole budget
    spent = run("spent-node", "hello there")
    assert spent["status"] == 429 and spent["seconds"] < 5, spent  # (it slept 25,860 s when told Retry-After)
    assert rejections(gateway, key_id(gateway, "spent-node")) == 1

    large = run("small", "word " * 400)
    assert large["status"] == 429 and large["seconds"] < 5, large
    assert rejections(gateway, key_id(gateway, "small")) == 1
