"""``poolgate upstreams`` and ``poolgate secrets``: credentials encrypted at rest, never shown."""

from __future__ import annotations

import stat
from collections.abc import Iterator

import pytest

from app.crypto import generate_key
from app.settings import Settings
from tests.support import FakeUpstreamThread, dump, poolgate

SECRET = "sk-live-4f9a8b7c6d5e4f3a2b1c"


@pytest.fixture
def fake() -> Iterator[FakeUpstreamThread]:
    upstream = FakeUpstreamThread(name="acct", api_key=SECRET, models=("gpt-5", "o3"))
    yield upstream
    upstream.stop()


def _add(settings: Settings, fake: FakeUpstreamThread, name: str = "acct-1", *extra: str) -> dict[str, object]:
    result = poolgate(settings, "upstreams", "add", name, "--base-url", fake.base_url, "--models", "gpt-5*,o3",
                      "--api-key-env", "ACCT_KEY", "--weight", "2", *extra, "--json", env={"ACCT_KEY": SECRET})
    assert result.code == 0, result.stderr
    data: dict[str, object] = result.json()
    return data


def test_credentials_are_stored_encrypted_and_never_printed(settings: Settings, fake: FakeUpstreamThread) -> None:
    added = _add(settings, fake)
    assert added["has_credential"] is True and added["weight"] == 2.0
    outputs = [poolgate(settings, "upstreams", *args) for args in
               (["list"], ["list", "--json"], ["show", "acct-1"], ["show", "acct-1", "--json"])]
    for result in outputs:
        assert result.code == 0 and SECRET not in result.stdout + result.stderr
    stored = dump(settings)
    assert "acct-1" in stored and SECRET not in stored
    key_file = settings.data_dir / "encryption.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_the_key_can_come_from_stdin(settings: Settings, fake: FakeUpstreamThread) -> None:
    result = poolgate(settings, "upstreams", "add", "acct-2", "--base-url", fake.base_url, "--models", "o3",
                      "--api-key-stdin", "--json", stdin=SECRET + "\n")
    assert result.code == 0, result.stderr
    probe = poolgate(settings, "upstreams", "test", "acct-2", "--json")
    assert probe.code == 0, probe.stdout + probe.stderr  # the stored key opens the fake's door


def test_test_probes_the_upstream_and_reports_models_and_latency(settings: Settings, fake: FakeUpstreamThread) -> None:
    _add(settings, fake)
    result = poolgate(settings, "upstreams", "test", "acct-1")
    assert result.code == 0, result.stderr
    assert "HTTP 200" in result.stdout and "gpt-5" in result.stdout and "ms" in result.stdout
    data = poolgate(settings, "upstreams", "test", "acct-1", "--json").json()
    assert data["ok"] is True and data["models"] == ["gpt-5", "o3"] and data["latency_ms"] > 0


def test_test_reports_a_dead_upstream_in_one_line(settings: Settings, fake: FakeUpstreamThread) -> None:
    _add(settings, fake)
    assert poolgate(settings, "upstreams", "update", "acct-1", "--base-url", "http://127.0.0.1:9/v1").code == 0
    result = poolgate(settings, "upstreams", "test", "acct-1")
    assert result.code == 1 and "FAILED" in result.stdout


def test_update_and_remove(settings: Settings, fake: FakeUpstreamThread) -> None:
    _add(settings, fake)
    updated = poolgate(settings, "upstreams", "update", "acct-1", "--tier", "1", "--disable", "--json").json()
    assert updated["tier"] == 1 and updated["enabled"] is False and updated["weight"] == 2.0
    assert poolgate(settings, "upstreams", "remove", "acct-1").code == 0
    assert poolgate(settings, "upstreams", "list", "--json").json() == []
    _add(settings, fake)  # a removed upstream's name can be used again


def test_rotating_the_encryption_key(settings: Settings, fake: FakeUpstreamThread) -> None:
    _add(settings, fake)
    old = (settings.data_dir / "encryption.key").read_text().strip()
    new = generate_key()
    both = {"POOLGATE_ENCRYPTION_KEYS": f"{new},{old}"}
    result = poolgate(settings, "secrets", "rotate", "--json", env=both)
    assert result.code == 0 and result.json() == {"reencrypted": 1}
    only_new = {"POOLGATE_ENCRYPTION_KEYS": new}
    assert poolgate(settings, "upstreams", "test", "acct-1", env=only_new).code == 0
    wrong = poolgate(settings, "upstreams", "test", "acct-1", env={"POOLGATE_ENCRYPTION_KEYS": old})
    assert wrong.code == 1 and "cannot decrypt" in wrong.stderr


def test_serve_refuses_to_start_when_stored_secrets_cannot_be_decrypted(
    settings: Settings, fake: FakeUpstreamThread
) -> None:
    _add(settings, fake)
    result = poolgate(settings, "serve", "--port", "1", env={"POOLGATE_ENCRYPTION_KEYS": generate_key()})
    assert result.code == 1
    assert "the encryption keys set here cannot read the credentials this database holds" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["upstreams", "add", "x", "--models", "o3"], "--base-url is required"),
        (["upstreams", "add", "x", "--base-url", "http://h/v1"], "--models is required"),
        (["upstreams", "add", "x", "--base-url", "ftp://h/v1", "--models", "o3"], "invalid base URL"),
        (["upstreams", "add", "x", "--base-url", "https://u:p@h/v1", "--models", "o3"], "not in the base URL"),
        (["upstreams", "add", "x", "--base-url", "http://h/" + "v" * 2000, "--models", "o3"], "at most 2000 fit"),
        (["upstreams", "add", "x", "--base-url", "http://h/v1", "--models", "o3", "--weight", "0"], "weight must be"),
        (["upstreams", "add", "x", "--base-url", "http://h/v1", "--models", "o3", "--api-key-env", "NOPE_UNSET"],
         "NOPE_UNSET is not set"),
        (["upstreams", "show", "ghost"], "no upstream with id or name 'ghost'"),
        (["upstreams", "remove", "ghost"], "no upstream with id or name 'ghost'"),
    ],
)
def test_bad_input_is_one_line(settings: Settings, args: list[str], message: str) -> None:
    result = poolgate(settings, *args)
    assert result.code == 1, result.stdout
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_a_bad_encryption_key_setting_is_one_line(settings: Settings) -> None:
    result = poolgate(settings, "upstreams", "list", env={"POOLGATE_ENCRYPTION_KEYS": "not-a-key"})
    assert result.code == 1 and "POOLGATE_ENCRYPTION_KEYS: key 1 is not a Fernet key" in result.stderr
