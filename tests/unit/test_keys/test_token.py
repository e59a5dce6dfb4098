from __future__ import annotations

import hashlib

import pytest

from keys import generate_token, hash_secret, parse_token
from keys._token import TOKEN_LENGTH, secret_matches


def test_generated_token_parses_back_to_its_parts() -> None:
    token, parts = generate_token()
    assert token.startswith(f"pg_{parts.public_id}_{parts.secret}")
    assert len(token) == TOKEN_LENGTH
    assert parse_token(token) == parts


def test_tokens_are_unique() -> None:
    tokens = {generate_token()[0] for _ in range(200)}
    assert len(tokens) == 200


def test_rotation_keeps_the_public_id_and_changes_the_secret() -> None:
    _, first = generate_token()
    token, second = generate_token(first.public_id)
    assert second.public_id == first.public_id
    assert second.secret != first.secret
    assert parse_token(token) == second


@pytest.mark.parametrize("position", [5, 20, -1])
def test_a_single_mistyped_character_is_rejected_by_the_checksum(position: int) -> None:
    token, _ = generate_token()
    replacement = "A" if token[position] != "A" else "B"
    typo = token[:position] + replacement + (token[position + 1 :] if position != -1 else "")
    assert parse_token(typo) is None


@pytest.mark.parametrize(
    "token",
    ["", "Bearer", "sk-abc", "pg_", "pg_short_secret", "x" * TOKEN_LENGTH, "pg_" + "_" * (TOKEN_LENGTH - 3)],
)
def test_malformed_tokens_are_rejected(token: str) -> None:
    assert parse_token(token) is None


def test_the_stored_form_is_the_sha256_of_the_secret() -> None:
    _, parts = generate_token()
    digest = hash_secret(parts.secret)
    assert digest == hashlib.sha256(parts.secret.encode()).hexdigest()
    assert secret_matches(parts.secret, bytes.fromhex(digest))


def test_one_changed_character_of_the_secret_does_not_match() -> None:
    _, parts = generate_token()
    stored = bytes.fromhex(hash_secret(parts.secret))
    for position in (0, len(parts.secret) // 2, len(parts.secret) - 1):
        changed = "A" if parts.secret[position] != "A" else "B"
        typo = parts.secret[:position] + changed + parts.secret[position + 1 :]
        assert not secret_matches(typo, stored)
