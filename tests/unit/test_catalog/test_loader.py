from __future__ import annotations

from pathlib import Path

import pytest

from app.catalog import CatalogError, build_catalog, load_bundled
from app.catalog._loader import read_operator_file

BUNDLED = load_bundled()


def test_the_bundled_catalog_is_valid_and_covers_the_major_providers() -> None:
    catalog = build_catalog(BUNDLED)
    providers = {m.provider for m in catalog.models}
    assert {"openai", "anthropic", "google"} <= providers
    ids = {m.id for m in catalog.models}
    assert {"gpt-5.1-codex", "o3", "text-embedding-3-small"} <= ids
    assert any("embeddings" in m.supported_endpoints for m in catalog.models)
    for model in catalog.models:
        assert model.display_name and model.context_window
        assert model.pricing is not None and model.pricing.input is not None
        levels = [lv.effort for lv in model.supported_reasoning_levels]
        assert model.default_reasoning_level is None or model.default_reasoning_level in levels


def test_aliases_resolve_to_the_canonical_model() -> None:
    catalog = build_catalog(BUNDLED)
    model = catalog.resolve("o3-2025-04-16")
    assert model is not None and model.id == "o3"
    assert catalog.resolve("no-such-model") is None


def test_models_are_ordered_by_priority_then_id() -> None:
    catalog = build_catalog(BUNDLED)
    keys = [(-m.priority, m.id) for m in catalog.models]
    assert keys == sorted(keys)


def test_operator_entries_override_add_hide_and_alias() -> None:
    catalog = build_catalog(BUNDLED, {
        "models": [
            {"id": "o3", "priority": 1000, "description": "house favourite"},
            {"id": "local-llama", "display_name": "Llama (on-prem)", "provider": "local", "context_window": 8192},
        ],
        "hide": ["gpt-4o*"],
        "aliases": {"fast": "gpt-5.1-codex-mini"},
    })
    o3 = catalog.resolve("o3")
    assert o3 is not None and o3.priority == 1000 and o3.description == "house favourite"
    assert o3.context_window == 200000  # fields not named keep the bundled value
    assert catalog.models[0].id == "o3"
    llama = catalog.resolve("local-llama")
    assert llama is not None and llama.owned_by == "local" and llama.display_name == "Llama (on-prem)"
    assert catalog.resolve("gpt-4o") is None and catalog.resolve("gpt-4o-mini") is None
    assert catalog.resolve("gpt-4o-2024-08-06") is None  # hidden with its aliases
    fast = catalog.resolve("fast")
    assert fast is not None and fast.id == "gpt-5.1-codex-mini" and "fast" in fast.aliases


def test_the_version_changes_with_content_only() -> None:
    first = build_catalog(BUNDLED)
    assert build_catalog(BUNDLED, previous=first) is first
    changed = build_catalog(BUNDLED, {"models": [{"id": "o3", "priority": 1}]}, previous=first)
    assert changed.version != first.version


@pytest.mark.parametrize(
    ("operator", "message"),
    [
        ({"models": [{"id": "o3", "context_window": "big"}]}, r"model 'o3'.*Expected `int \| null`"),
        ({"models": [{"id": "o3", "colour": "red"}]}, "unknown field `colour`"),
        ({"models": [{"id": "x", "default_reasoning_level": "high"}]}, "default_reasoning_level 'high' is not listed"),
        ({"models": [{"id": "x", "supported_reasoning_levels": [{"effort": "max"}]}]}, "unknown reasoning effort"),
        ({"models": [{"id": "x", "input_modalities": ["smell"]}]}, "unknown modality"),
        ({"models": [{"display_name": "no id"}]}, r"models\[0\] needs a string 'id'"),
        ({"aliases": {"fast": "nope"}}, "alias 'fast' points to unknown or hidden model 'nope'"),
        ({"aliases": {"o3-2025-04-16": "gpt-5"}}, "already a name of"),
        ({"models": [{"id": "x", "aliases": ["o3"]}]}, "alias 'o3' of 'x' is already a name of 'o3'"),
        ({"hide": "gpt-4o"}, "'hide' must be a list"),
    ],
)
def test_invalid_operator_files_are_refused_with_the_reason(operator: dict[str, object], message: str) -> None:
    with pytest.raises(CatalogError, match=message):
        build_catalog(BUNDLED, operator, source="catalog.json")


def test_operator_files_are_read_as_json_or_toml(tmp_path: Path) -> None:
    toml = tmp_path / "catalog.toml"
    toml.write_text('hide = ["o3"]\n[[models]]\nid = "gpt-5"\npriority = 7\n[aliases]\nfive = "gpt-5"\n')
    assert read_operator_file(toml) == {"hide": ["o3"], "models": [{"id": "gpt-5", "priority": 7}],
                                        "aliases": {"five": "gpt-5"}}
    broken = tmp_path / "catalog.json"
    broken.write_text('{"models": [')
    with pytest.raises(CatalogError, match="not valid JSON"):
        read_operator_file(broken)
    unknown = tmp_path / "other.json"
    unknown.write_text('{"modles": []}')
    with pytest.raises(CatalogError, match="unknown key 'modles'"):
        read_operator_file(unknown)
    with pytest.raises(CatalogError, match="cannot read"):
        read_operator_file(tmp_path / "missing.json")


def test_a_model_may_choose_its_own_balancer() -> None:
    catalog = build_catalog(BUNDLED, {"models": [{"id": "o3", "balancer": "latency"}]})
    model = catalog.resolve("o3")
    assert model is not None and model.balancer == "latency"
    with pytest.raises(CatalogError, match="balancer must be one of"):
        build_catalog(BUNDLED, {"models": [{"id": "o3", "balancer": "fastest"}]})
