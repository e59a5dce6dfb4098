from __future__ import annotations

import json

import msgspec
import pytest

from app.catalog import PageTokenError, build_catalog, build_view, load_bundled, read_page_token
from app.catalog import trim_model as trim_typed
from app.catalog._paging import make_page_token
from app.catalog._views import ViewCache
from keys import Policy


def trim_model(model, policy):  # type: ignore[no-untyped-def]
    """The trimmed model as a client reads it (the JSON of the typed value)."""
    trimmed = trim_typed(model, policy)
    return None if trimmed is None else msgspec.json.decode(msgspec.json.encode(trimmed))

CATALOG = build_catalog(load_bundled())


def _model(model_id: str):  # type: ignore[no-untyped-def]
    model = CATALOG.resolve(model_id)
    assert model is not None
    return model


def test_view_lists_only_allowed_models_in_the_keys_priority_order() -> None:
    policy = Policy(allowed_models=("gpt-5*", "o3"), priority_rules=("o3", "gpt-5.1-codex"))
    view = build_view(CATALOG, policy, None, None)
    assert view.ids[0] == "o3"
    assert view.ids[1] == "gpt-5.1-codex"
    rest = [CATALOG.resolve(i) for i in view.ids[2:]]
    assert [(-m.priority, m.id) for m in rest if m] == sorted((-m.priority, m.id) for m in rest if m)
    assert all(i.startswith("gpt-5") for i in view.ids[1:])
    assert "gpt-4o" not in view.ids and "claude-sonnet-4-5" not in view.ids


def test_reasoning_levels_are_trimmed_and_the_default_moved_into_what_is_allowed() -> None:
    model = _model("gpt-5.1-codex")
    assert model.default_reasoning_level == "medium"
    item = trim_model(model, Policy(allowed_models=("*",), allowed_reasoning_efforts=("low", "high")))
    assert item is not None
    meta = item["metadata"]
    assert [lv["effort"] for lv in meta["supported_reasoning_levels"]] == ["low", "high"]
    assert meta["default_reasoning_level"] == "low"  # the highest allowed level not above the default


def test_a_reasoning_model_with_no_allowed_effort_is_hidden_but_plain_models_stay() -> None:
    policy = Policy(allowed_models=("*",), allowed_reasoning_efforts=("xhigh",))
    assert trim_model(_model("o3"), policy) is None
    plain = trim_model(_model("gpt-4.1"), policy)
    assert plain is not None and plain["metadata"]["supported_reasoning_levels"] == []


def test_modalities_are_trimmed_and_models_needing_others_are_hidden() -> None:
    policy = Policy(allowed_models=("*",), allowed_modalities=("text",))
    item = trim_model(_model("gpt-5.1"), policy)
    assert item is not None and item["metadata"]["input_modalities"] == ["text"]
    only_images = Policy(allowed_models=("*",), allowed_modalities=("image",))
    assert trim_model(_model("text-embedding-3-small"), only_images) is None


def test_verbosity_is_trimmed_to_what_the_key_may_use() -> None:
    model = _model("gpt-5.1")
    assert model.support_verbosity
    item = trim_model(model, Policy(allowed_models=("*",), allowed_verbosities=("high",)))
    assert item is not None
    assert item["metadata"]["verbosity_levels"] == ["high"]
    assert item["metadata"]["default_verbosity"] == "high"


def test_endpoint_and_provider_filters() -> None:
    everything = Policy(allowed_models=("*",))
    embeddings = build_view(CATALOG, everything, "embeddings", None)
    assert embeddings.ids and all("embedding" in i for i in embeddings.ids)
    anthropic = build_view(CATALOG, everything, None, "anthropic")
    assert anthropic.ids and all(i.startswith("claude") for i in anthropic.ids)


def test_the_rendered_list_is_valid_json_with_the_openai_list_shape() -> None:
    view = build_view(CATALOG, Policy(allowed_models=("o3",)), None, None)
    body = json.loads(view.prefix + b"12}")
    assert body["object"] == "list" and body["has_more"] is False
    assert body["catalog_version"] == CATALOG.version and body["catalog_age_seconds"] == 12
    assert [item["id"] for item in body["data"]] == ["o3"]
    item = body["data"][0]
    assert {"id", "object", "created", "owned_by", "metadata", "pricing"} <= set(item)


def test_etag_follows_the_content() -> None:
    a = build_view(CATALOG, Policy(allowed_models=("o3",)), None, None)
    b = build_view(CATALOG, Policy(allowed_models=("o3",)), None, None)
    c = build_view(CATALOG, Policy(allowed_models=("o3", "gpt-5")), None, None)
    trimmed = build_view(CATALOG, Policy(allowed_models=("o3",), allowed_reasoning_efforts=("low",)), None, None)
    assert a.etag == b.etag != c.etag
    assert trimmed.ids == a.ids and trimmed.etag != a.etag  # same models, different content


def test_page_tokens_round_trip_and_refuse_forgery_other_keys_and_stale_catalogs() -> None:
    policy = Policy(allowed_models=("*",))
    view = build_view(CATALOG, policy, None, None)
    secret = b"server-secret"
    token = make_page_token(view, 5, secret, "key-a")
    assert read_page_token(token, view, secret, "key-a") == 5
    with pytest.raises(PageTokenError, match="not valid for this key"):
        read_page_token(token, view, secret, "key-b")
    with pytest.raises(PageTokenError, match="not valid for this key"):
        read_page_token(make_page_token(view, 5, b"guessed", "key-a"), view, secret, "key-a")
    with pytest.raises(PageTokenError):
        read_page_token(token[:-2] + "AA", view, secret, "key-a")
    with pytest.raises(PageTokenError, match="not valid"):
        read_page_token("garbage!", view, secret, "key-a")
    newer = build_catalog(load_bundled(), {"models": [{"id": "o3", "priority": 1}]})
    with pytest.raises(PageTokenError, match="stale"):
        read_page_token(token, build_view(newer, policy, None, None), secret, "key-a")


def test_the_view_cache_reuses_views_and_follows_catalog_versions() -> None:
    cache = ViewCache(max_entries=2)
    policy = Policy(allowed_models=("*",))
    first = cache.get(CATALOG, policy, None, None)
    assert cache.get(CATALOG, Policy(allowed_models=("*",)), None, None) is first
    newer = build_catalog(load_bundled(), {"hide": ["o3"]})
    assert "o3" not in cache.get(newer, policy, None, None).ids
