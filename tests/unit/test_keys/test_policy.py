from __future__ import annotations

import pytest

from keys import Policy, PolicyError, Quotas, policy_from_dict


def test_globs_ids_and_aliases_are_allowed() -> None:
    policy = Policy(allowed_models=("gpt-5*", "o3", "fast"))
    assert policy.allows_model(["gpt-5.1-codex"])
    assert policy.allows_model(["o3", "o3-2025-04-16"])
    assert policy.allows_model(["gpt-5.1-codex-mini", "fast"])  # allowed through its alias
    assert not policy.allows_model(["o3-mini"])
    assert not policy.allows_model(["gpt-4o"])


def test_matching_ignores_case() -> None:
    assert Policy(allowed_models=("GPT-5*",)).allows_model(["gpt-5"])


def test_an_empty_list_allows_nothing_and_star_allows_everything() -> None:
    assert not Policy(allowed_models=()).allows_model(["gpt-5"])
    assert Policy(allowed_models=("*",)).allows_model(["anything-at-all"])


def test_priority_rules_rank_models_in_rule_order() -> None:
    policy = Policy(allowed_models=("*",), priority_rules=("gpt-5.1-codex", "gpt-5*", "o*"))
    assert policy.rank(["gpt-5.1-codex"]) == 0
    assert policy.rank(["gpt-5-mini"]) == 1
    assert policy.rank(["o3"]) == 2
    assert policy.rank(["claude-sonnet-4-5"]) == 3


@pytest.mark.parametrize("pattern", ["", "  ", "gpt 5", "gpt-[5]", "-leading", "a" * 201])
def test_invalid_patterns_are_refused_with_a_clear_reason(pattern: str) -> None:
    with pytest.raises(PolicyError, match="invalid model pattern"):
        Policy(allowed_models=(pattern,))


def test_unknown_efforts_and_modalities_are_refused() -> None:
    with pytest.raises(PolicyError, match="unknown reasoning effort 'extreme'"):
        Policy(allowed_reasoning_efforts=("low", "extreme"))
    with pytest.raises(PolicyError, match="unknown modality"):
        Policy(allowed_modalities=("smell",))


@pytest.mark.parametrize(
    ("quotas", "message"),
    [
        ({"rpm": 0}, "rpm must be between"),
        ({"tpm": -5}, "tpm must be between"),
        ({"budget_usd": 20.0}, "needs a period"),
        ({"budget_period": "week"}, "without a budget amount"),
        ({"budget_usd": -1.0, "budget_period": "day"}, "positive amount"),
        ({"budget_usd": 5.0, "budget_period": "year"}, "day, week or month"),
    ],
)
def test_absurd_quotas_are_refused(quotas: dict[str, object], message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        Quotas(**quotas)  # type: ignore[arg-type]


def test_policies_round_trip_through_their_stored_form() -> None:
    policy = Policy(
        allowed_models=("gpt-5*",), allowed_reasoning_efforts=("low",), priority_rules=("gpt-5.1",), tier=1,
        quotas=Quotas(rpm=60, budget_usd=20.0, budget_period="month"),
    )
    assert policy_from_dict(policy.to_dict()) == policy


def test_keys_with_the_same_visible_rights_share_a_view_fingerprint() -> None:
    a = Policy(allowed_models=("gpt-5*",), quotas=Quotas(rpm=1))
    b = Policy(allowed_models=("gpt-5*",), quotas=Quotas(rpm=999), tier=2)
    c = Policy(allowed_models=("gpt-5*",), allowed_reasoning_efforts=("low",))
    assert a.view_fingerprint == b.view_fingerprint
    assert a.view_fingerprint != c.view_fingerprint


def test_globs_match_canonical_ids_only_so_an_alias_cannot_widen_access() -> None:
    policy = Policy(allowed_models=("gpt-5*",))
    # an operator alias "gpt-5-fast" pointing at a Claude model does not fall under gpt-5*
    assert not policy.allows_model(["claude-haiku-4-5", "gpt-5-fast"])
    assert Policy(allowed_models=("gpt-5-fast",)).allows_model(["claude-haiku-4-5", "gpt-5-fast"])


def test_bulk_selection_agrees_with_single_checks() -> None:
    from keys import NameIndex

    models = [("gpt-5.1-codex",), ("o3", "o3-2025-04-16"), ("claude-haiku-4-5", "gpt-5-fast"), ("gpt-5",)]
    policy = Policy(allowed_models=("gpt-5*", "o3-2025-04-16"), priority_rules=("o3*", "gpt-5"))
    selected = policy.select(NameIndex(models))
    assert selected == [(2, 0), (0, 1), (1, 3)]
    for rank, position in selected:
        assert policy.allows_model(models[position]) and policy.rank(models[position]) == rank
