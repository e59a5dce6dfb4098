"""Who is calling, and the errors a refusal becomes (app/access.py)."""

from __future__ import annotations

import time

import pytest

from app.access import authenticate, bearer_token, codex_fatal, is_codex, resolve_model
from app.catalog import build_catalog, load_bundled
from app.errors import AuthenticationError, NotFoundError, PermissionDeniedError, RateLimitError
from keys import KeyCache, KeyRecord, Policy, generate_token
from keys._token import parse_token, secret_digest

CATALOG = build_catalog(load_bundled(), {"aliases": {"fast": "gpt-5-mini"}})


def record(token: str, **changes: object) -> KeyRecord:
    parsed = parse_token(token)
    assert parsed is not None
    values: dict[str, object] = dict(
        id=parsed.public_id, name="alice", secret_digest=secret_digest(parsed.secret), previous_secret_digest=None,
        previous_expires_at=None, policy=Policy(allowed_models=("gpt-5*",)), expires_at=None, disabled=False,
        revoked_at=None, created_at=time.time(), updated_at=time.time(), revision=1)
    values.update(changes)
    return KeyRecord(**values)  # type: ignore[arg-type]


class Store:
    """A key store of fixed records, as the cache reads it."""

    def __init__(self, *records: KeyRecord) -> None:
        self.records = {r.id: r for r in records}

    async def revision(self) -> int:
        return 1

    async def changes_since(self, revision: int, policies: object) -> tuple[list[KeyRecord], set[str], int]:
        return list(self.records.values()), set(), 1

    async def live(self, public_id: str) -> KeyRecord | None:
        return self.records.get(public_id)


@pytest.mark.parametrize(("headers", "token"), [
    ({"authorization": "Bearer abc"}, "abc"),
    ({"authorization": "bearer  abc "}, "abc"),
    ({"authorization": "Basic abc"}, ""),
    ({"x-api-key": " abc"}, "abc"),
    ({"authorization": "Bearer abc", "x-api-key": "other"}, "abc"),
    ({}, ""),
])
def test_the_key_is_read_from_a_bearer_header_or_x_api_key(headers: dict[str, str], token: str) -> None:
    assert bearer_token(headers) == token


async def test_refusals_become_the_errors_the_sdks_know() -> None:
    good, _ = generate_token()
    expired, _ = generate_token()
    disabled, _ = generate_token()
    store = Store(record(good), record(expired, expires_at=time.time() - 1), record(disabled, disabled=True))
    cache = KeyCache(store)  # type: ignore[arg-type]
    await cache.refresh()
    assert (await authenticate({"authorization": f"Bearer {good}"}, cache)).name == "alice"
    with pytest.raises(AuthenticationError) as info:
        await authenticate({"authorization": f"Bearer {expired}"}, cache)
    assert info.value.code == "api_key_expired"
    with pytest.raises(PermissionDeniedError) as denied:
        await authenticate({"authorization": f"Bearer {disabled}"}, cache)
    assert denied.value.code == "api_key_disabled"
    for bad in ("", "pg_nonsense", generate_token()[0]):
        with pytest.raises(AuthenticationError) as unknown:
            await authenticate({"authorization": f"Bearer {bad}"}, cache)
        assert unknown.value.code == "invalid_api_key" and "Incorrect API key" in unknown.value.message


def test_a_model_resolves_by_id_or_alias_only_within_the_keys_list() -> None:
    key = record(generate_token()[0])
    assert resolve_model(CATALOG, key, "fast").id == "gpt-5-mini"
    with pytest.raises(PermissionDeniedError) as denied:
        resolve_model(CATALOG, key, "o3")
    assert (denied.value.code, denied.value.param) == ("model_not_allowed", "model")
    with pytest.raises(NotFoundError) as missing:
        resolve_model(CATALOG, key, "gpt-99")
    assert missing.value.code == "model_not_found"


def test_codex_is_told_to_stop_only_for_refusals_no_retry_can_change() -> None:
    assert is_codex({"originator": "codex_exec"}) and is_codex({"user-agent": "codex_cli_rs/0.169.0"})
    assert not is_codex({"user-agent": "OpenAI/Python 2.1"})
    assert codex_fatal(PermissionDeniedError("no", code="verbosity_not_allowed")).code == "model_not_found"
    assert codex_fatal(PermissionDeniedError("no", code="api_key_disabled")).code == "api_key_disabled"
    limit = RateLimitError("slow down", retry_after=3)
    assert codex_fatal(limit).code == "rate_limit_exceeded"
