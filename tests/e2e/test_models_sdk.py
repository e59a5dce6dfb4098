"""``/v1/models`` through the real ``openai`` SDK against poolgate listening on a free port.

The server reads a clock that starts five seconds into a minute: per-minute windows are whole for the
module's tests, without waiting for the real clock's minute to turn."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest

from app.server import Clock, create_app
from keys import Policy, Quotas
from tests.support import Databases, Http, add_upstreams, create_key
from tests.support.gateway import LiveServer


@dataclass
class Server:
    live: LiveServer

    @property
    def base_url(self) -> str:
        return self.live.base_url

    @property
    def http(self) -> Http:
        return Http(self.live.base_url)


@dataclass
class Deployment:
    server: Server
    keys: dict[str, str]

    def client(self, name: str, **kwargs: object) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.server.base_url + "/v1", api_key=self.keys[name], **kwargs)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory, databases: Databases) -> Iterator[Deployment]:
    settings = databases.settings(Path(tmp_path_factory.mktemp("e2e")) / "data", sync_interval=0.1)
    policies = {
        "alice": Policy(allowed_models=("gpt-5*", "o3"), priority_rules=("gpt-5.1-codex", "gpt-5*"),
                        allowed_reasoning_efforts=("low", "medium")),
        "everything": Policy(allowed_models=("*",)),
        "nothing": Policy(allowed_models=()),
        "limited": Policy(allowed_models=("*",), quotas=Quotas(rpm=2)),
        "metered": Policy(allowed_models=("o3*",), quotas=Quotas(rpm=1000, rpd=5000)),
        "off": Policy(allowed_models=("*",)),
    }
    keys = {name: create_key(settings, name, policy)[1] for name, policy in policies.items()}
    keys["old"] = create_key(settings, "old", Policy(allowed_models=("*",)), expires_at=time.time() + 1.5)[1]
    keys["off"] = create_key(settings, "off2", Policy(allowed_models=("*",)), disabled=True)[1]
    add_upstreams(settings, [{"name": "any", "base_url": "http://127.0.0.1:9/v1", "models": "*"}])
    shift = (time.time() // 60 * 60 + 5) - time.monotonic()
    clock = Clock(time.monotonic, lambda: shift + time.monotonic())
    server = LiveServer(create_app(settings, clock=clock), settings).start()
    try:
        yield Deployment(Server(server), keys)
    finally:
        server.stop()
        databases.release(settings)


def test_the_sdk_lists_exactly_the_keys_models_in_its_order(deployment: Deployment) -> None:
    models = deployment.client("alice").models.list()
    ids = [m.id for m in models.data]
    assert ids[0] == "gpt-5.1-codex"
    assert set(ids) >= {"gpt-5.1", "gpt-5-mini", "o3"}
    assert all(i.startswith("gpt-5") for i in ids[:-1]) and ids[-1] == "o3"
    first = models.data[0].model_dump()
    efforts = [lv["effort"] for lv in first["metadata"]["supported_reasoning_levels"]]
    assert efforts == ["low", "medium"]
    assert first["pricing"]["input"] > 0


def test_the_sdk_retrieves_a_model_by_id_or_alias(deployment: Deployment) -> None:
    client = deployment.client("alice")
    assert client.models.retrieve("o3").id == "o3"
    assert client.models.retrieve("o3-2025-04-16").id == "o3"  # alias resolved to its canonical id


def test_an_empty_model_list_allows_nothing(deployment: Deployment) -> None:
    assert deployment.client("nothing").models.list().data == []


@pytest.mark.parametrize("kind", ["garbage", "well-formed but unknown"])
def test_unknown_key_raises_authentication_error(deployment: Deployment, kind: str) -> None:
    from keys import generate_token

    api_key = "pg_nonsense" if kind == "garbage" else generate_token()[0]  # valid checksum, no such key
    client = openai.OpenAI(base_url=deployment.server.base_url + "/v1", api_key=api_key)
    with pytest.raises(openai.AuthenticationError) as info:
        client.models.list()
    assert info.value.code == "invalid_api_key"


def test_expired_key_raises_authentication_error_with_its_own_code(deployment: Deployment) -> None:
    client = deployment.client("old", max_retries=0)
    deadline = time.monotonic() + 5
    while True:
        try:
            client.models.list()
        except openai.AuthenticationError as exc:
            assert exc.code == "api_key_expired"
            break
        assert time.monotonic() < deadline, "the key never expired"
        time.sleep(0.1)


def test_disabled_key_raises_permission_denied(deployment: Deployment) -> None:
    with pytest.raises(openai.PermissionDeniedError) as info:
        deployment.client("off").models.list()
    assert info.value.code == "api_key_disabled"


def test_a_model_outside_the_keys_list_is_403_and_an_unknown_one_404(deployment: Deployment) -> None:
    client = deployment.client("alice")
    with pytest.raises(openai.PermissionDeniedError) as denied:
        client.models.retrieve("gpt-4o")
    assert denied.value.code == "model_not_allowed"
    with pytest.raises(openai.NotFoundError) as missing:
        client.models.retrieve("gpt-99-ultra")
    assert missing.value.code == "model_not_found"


def test_over_quota_raises_rate_limit_error_with_retry_after(deployment: Deployment) -> None:
    client = deployment.client("limited", max_retries=0)
    client.models.list()
    client.models.list()
    with pytest.raises(openai.RateLimitError) as info:
        client.models.list()
    headers = info.value.response.headers
    assert info.value.code == "rate_limit_exceeded"
    assert 1 <= int(headers["retry-after"]) <= 60
    assert 0 < int(headers["retry-after-ms"]) <= 60_000
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert headers["x-ratelimit-limit-requests"] == "2"


def test_rate_limit_headers_and_etag_on_the_raw_response(deployment: Deployment) -> None:
    http = deployment.server.http
    key = deployment.keys["metered"]
    if True:  # the second request counts in the same minute as the first
        first = http.get("/v1/models", key)
        assert first.status == 200
        body = first.json()
        assert body["object"] == "list" and body["catalog_version"]
        assert isinstance(body["catalog_age_seconds"], int)
        assert first.headers["x-ratelimit-limit-requests"] == "1000"  # the window closest to running out
        remaining = int(first.headers["x-ratelimit-remaining-requests"])
        assert remaining == 999
        assert first.headers["x-ratelimit-reset-requests"].endswith("s")
        etag = first.headers["etag"]
        again = http.get("/v1/models", key, {"If-None-Match": etag})
        assert again.status == 304 and again.body == b""
        assert int(again.headers["x-ratelimit-remaining-requests"]) == remaining - 1
    other = http.get("/v1/models", deployment.keys["everything"], {"If-None-Match": etag})
    assert other.status == 200  # another key's view is another representation
    missing = http.get("/v1/models/gpt-4o", key)
    assert missing.status == 403 and "x-ratelimit-remaining-requests" in missing.headers


def test_filters_and_pagination(deployment: Deployment) -> None:
    http = deployment.server.http
    key = deployment.keys["everything"]
    embeddings = http.get("/v1/models?endpoint=embeddings", key).json()
    assert embeddings["data"] and all("embeddings" in m["metadata"]["supported_endpoints"] for m in embeddings["data"])
    google = http.get("/v1/models?provider=google", key).json()
    assert google["data"] and all(m["owned_by"] == "google" for m in google["data"])
    bad = http.get("/v1/models?endpoint=images", key)
    assert bad.status == 400 and bad.json()["error"]["param"] == "endpoint"

    full = [m["id"] for m in http.get("/v1/models", key).json()["data"]]
    seen: list[str] = []
    page = http.get("/v1/models?page_size=7", key).json()
    while True:
        seen += [m["id"] for m in page["data"]]
        if not page["has_more"]:
            assert page["next_page_token"] is None
            break
        page = http.get(f"/v1/models?page_size=7&page_token={page['next_page_token']}", key).json()
    assert seen == full

    first_page = http.get("/v1/models?page_size=7", key)
    token = first_page.json()["next_page_token"]
    forged = http.get(f"/v1/models?page_size=7&page_token={token[:-3]}xyz", key)
    assert forged.status == 400 and forged.json()["error"]["param"] == "page_token"
    other_key = http.get(f"/v1/models?page_size=7&page_token={token}", deployment.keys["alice"])
    assert other_key.status == 400
    with_etag = http.get(f"/v1/models?page_size=7&page_token={token[:-3]}xyz", key,
                         {"If-None-Match": first_page.headers["etag"]})
    assert with_etag.status == 400  # a bad token is refused before any 304
    second_page = http.get(f"/v1/models?page_size=7&page_token={token}", key)
    assert second_page.headers["etag"] != first_page.headers["etag"]

    unknown = http.get("/v1/models?provider=acme", key)
    assert unknown.status == 400 and unknown.json()["error"]["param"] == "provider"


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Basic abc"}, {"Authorization": "Bearer"}, {"Authorization": "Bearer pg_x_y"},
     {"x-api-key": "pg_aaaaaaaaaaaa_bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbcccccc"}],
)
def test_malformed_credentials_get_one_401_envelope(deployment: Deployment, headers: dict[str, str]) -> None:
    response = deployment.server.http.get("/v1/models", headers=headers)
    assert response.status == 401
    error = response.json()["error"]
    assert error["type"] == "authentication_error" and error["code"] == "invalid_api_key"


def test_x_api_key_header_is_accepted(deployment: Deployment) -> None:
    response = deployment.server.http.get("/v1/models", headers={"x-api-key": deployment.keys["alice"]})
    assert response.status == 200


def test_a_bad_filter_raises_bad_request_error(deployment: Deployment) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        deployment.client("alice").models.list(extra_query={"endpoint": "images"})
    assert info.value.code == "invalid_request"


def test_health_and_readiness(deployment: Deployment) -> None:
    http = deployment.server.http
    assert http.get("/healthz").json() == {"status": "ok"}
    ready = http.get("/readyz")
    assert ready.status == 200 and ready.json()["status"] == "ready"


def test_unknown_paths_and_methods_get_the_envelope(deployment: Deployment) -> None:
    response = deployment.server.http.get("/v2/everything", deployment.keys["alice"])
    assert response.status == 404
    assert response.json()["error"]["type"] == "invalid_request_error"
