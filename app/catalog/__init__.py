"""The model registry: a bundled catalog, the operator's overrides, and per-key views."""

from __future__ import annotations

from app.catalog._loader import Catalog, build_catalog, load_bundled, read_operator_file
from app.catalog._model import (
    ENDPOINTS,
    CatalogError,
    CodexInfo,
    ModelInfo,
    Pricing,
    ReasoningLevel,
    TruncationPolicy,
    parse_version,
)
from app.catalog._service import CatalogService
from app.catalog._view import (
    DEFAULT_BASE_INSTRUCTIONS,
    ModelView,
    PageTokenError,
    Renderer,
    ViewCache,
    build_view,
    codex_entry,
    make_page_token,
    read_page_token,
    trim_model,
)

__all__ = [
    "DEFAULT_BASE_INSTRUCTIONS",
    "ENDPOINTS",
    "Catalog",
    "CatalogError",
    "CatalogService",
    "CodexInfo",
    "ModelInfo",
    "ModelView",
    "PageTokenError",
    "Pricing",
    "ReasoningLevel",
    "Renderer",
    "TruncationPolicy",
    "ViewCache",
    "build_catalog",
    "build_view",
    "codex_entry",
    "load_bundled",
    "make_page_token",
    "parse_version",
    "read_operator_file",
    "read_page_token",
    "trim_model",
]
