"""The Codex CLI's catalog shape: every entry poolgate sends must decode as Codex's ModelInfo.

Codex drops the whole catalog when one entry fails to parse, so the schema below mirrors
the fields Codex 0.169 requires and the values it accepts (measured with the real client).
"""

from __future__ import annotations

from typing import Literal

import msgspec
import pytest

from app.catalog import CatalogError, build_catalog, build_view, codex_entry, load_bundled, parse_version, trim_model
from keys import Policy

CATALOG = build_catalog(load_bundled())
CODEX = (0, 169, 0)


class CodexLevel(msgspec.Struct):
    effort: str
    description: str


class CodexTruncation(msgspec.Struct):
    mode: Literal["bytes", "tokens"]
    limit: int


class CodexModelInfo(msgspec.Struct):
    slug: str
    display_name: str
    supported_reasoning_levels: list[CodexLevel]
    shell_type: Literal["shell_command", "default", "local", "unified_exec", "disabled"]
    visibility: Literal["list", "hide", "none"]
    supported_in_api: bool
    priority: int
    base_instructions: str
    support_verbosity: bool
    truncation_policy: CodexTruncation
    experimental_supported_tools: list[str]
    description: str | None = None
    default_reasoning_level: str | None = None
    default_verbosity: Literal["low", "medium", "high"] | None = None
    context_window: int | None = None
    input_modalities: list[Literal["text", "image"]] = msgspec.field(default_factory=list)
    supports_reasoning_summaries: bool = False
    supports_parallel_tool_calls: bool = False
    prefer_websockets: bool = False


class CodexModelsResponse(msgspec.Struct):
    models: list[CodexModelInfo]


def codex_models(policy: Policy, version: tuple[int, ...] = CODEX, catalog=CATALOG) -> list[CodexModelInfo]:  # type: ignore[no-untyped-def]
    view = build_view(catalog, policy, None, None, client_version=version)
    assert view.codex_items is not None
    body = view.prefix + b"0}"
    return msgspec.json.decode(body, type=CodexModelsResponse).models


@pytest.mark.parametrize("model", CATALOG.models, ids=lambda m: m.id)
def test_every_bundled_model_renders_as_a_valid_codex_entry(model) -> None:  # type: ignore[no-untyped-def]
    trimmed = trim_model(model, Policy(allowed_models=("*",)))
    assert trimmed is not None
    entry = msgspec.json.decode(msgspec.json.encode(codex_entry(model, trimmed, 7)), type=CodexModelInfo)
    assert entry.priority == 7
    assert entry.slug == model.id
    assert entry.display_name == model.display_name
    assert [lv.effort for lv in entry.supported_reasoning_levels] == [
        lv.effort for lv in model.supported_reasoning_levels
    ]
    assert entry.base_instructions  # Codex sends nothing as its system prompt when this is empty
    assert entry.context_window == model.context_window


RESPONSES_MODELS = [m for m in CATALOG.models if "responses" in m.supported_endpoints]


@pytest.mark.parametrize("model", RESPONSES_MODELS, ids=lambda m: m.id)
def test_every_model_codex_can_call_is_listed_for_codex(model) -> None:  # type: ignore[no-untyped-def]
    (entry,) = codex_models(Policy(allowed_models=(model.id,)))
    assert entry.slug == model.id


def test_the_whole_catalog_decodes_for_a_key_that_may_use_everything() -> None:
    models = codex_models(Policy(allowed_models=("*",)))
    assert len(models) == sum(1 for m in CATALOG.models if "responses" in m.supported_endpoints)
    assert "claude-sonnet-4-5" not in {m.slug for m in models}  # chat-only models cannot serve a Codex turn


def test_priority_is_the_keys_own_order_so_codexs_default_is_the_keys_first_model() -> None:
    policy = Policy(allowed_models=("gpt-5-mini", "gpt-5.2", "o3"), priority_rules=("o3", "gpt-5-mini"))
    models = codex_models(policy)
    assert [(m.slug, m.priority) for m in models] == [("o3", 0), ("gpt-5-mini", 1), ("gpt-5.2", 2)]
    assert min(models, key=lambda m: m.priority).slug == "o3"


def test_reasoning_levels_are_trimmed_to_the_key_and_the_default_moves_inside() -> None:
    policy = Policy(allowed_models=("gpt-5.2",), allowed_reasoning_efforts=("low", "high"))
    (entry,) = codex_models(policy)
    assert [lv.effort for lv in entry.supported_reasoning_levels] == ["low", "high"]
    assert entry.default_reasoning_level == "low"


def test_pdf_and_audio_inputs_are_left_out_because_codex_refuses_them() -> None:
    (entry,) = codex_models(Policy(allowed_models=("gpt-5.2",)))
    assert entry.input_modalities == ["text", "image"]


def test_models_newer_than_the_client_are_left_out() -> None:
    catalog = build_catalog(load_bundled(), {"models": [{"id": "gpt-5.2", "minimal_client_version": "0.170.0"}]})
    policy = Policy(allowed_models=("gpt-5.2", "gpt-5.1"))
    assert [m.slug for m in codex_models(policy, (0, 169, 0), catalog)] == ["gpt-5.1"]
    assert [m.slug for m in codex_models(policy, (0, 170), catalog)] == ["gpt-5.2", "gpt-5.1"]
    assert [m.slug for m in codex_models(policy, (1, 0), catalog)] == ["gpt-5.2", "gpt-5.1"]
    plain = build_view(catalog, policy, None, None)
    assert plain.codex_items is None and b'"models"' not in plain.prefix
    assert plain.ids == ("gpt-5.2", "gpt-5.1")  # clients that are not Codex still see every model


def test_operator_codex_fields_override_one_at_a_time_and_are_validated() -> None:
    catalog = build_catalog(load_bundled(), {"models": [
        {"id": "gpt-5.2", "codex": {"base_instructions": "Be terse."}},
        {"id": "gpt-5.2", "codex": {"visibility": "hide"}},
    ]})
    (entry,) = codex_models(Policy(allowed_models=("gpt-5.2",)), catalog=catalog)
    assert entry.visibility == "hide"
    assert entry.base_instructions == "Be terse."
    assert entry.shell_type == "shell_command"
    with pytest.raises(CatalogError, match="visibility"):
        build_catalog(load_bundled(), {"models": [{"id": "gpt-5.2", "codex": {"visibility": "public"}}]})
    with pytest.raises(CatalogError, match="limit"):
        build_catalog(load_bundled(), {"models": [{"id": "gpt-5.2", "codex": {"truncation_policy": {"limit": 0}}}]})


@pytest.mark.parametrize(
    ("text", "expected"),
    [("0.169.0", (0, 169)), ("0.170.0-alpha.2", (0, 170)), ("1", (1,)), ("1.0.0", (1,)), ("x", None), ("", None)],
)
def test_client_versions_parse_with_pre_release_tags_ignored(text: str, expected: tuple[int, ...] | None) -> None:
    assert parse_version(text) == expected


def test_client_versions_alike_share_one_cached_view() -> None:
    from app.catalog import CatalogService

    service = CatalogService(None)
    policy = Policy(allowed_models=("*",))
    versions = [(0, minor, patch) for minor in range(150, 200) for patch in (0, 3)]
    views = {id(service.view(policy, client_version=version)) for version in versions}
    assert len(views) == 1  # a client cannot fill the view cache by varying its version string
