"""The model registry: a bundled catalog, the operator's overrides, and per-key views."""

from __future__ import annotations

from app.catalog._loader import Catalog, build_catalog, load_bundled, read_operator_file
from app.catalog._model import ENDPOINTS, CatalogError, ModelInfo, Pricing, ReasoningLevel
from app.catalog._service import CatalogService
from app.catalog._view import (
    ModelView,
    PageTokenError,
    Renderer,
    ViewCache,
    build_view,
    make_page_token,
    read_page_token,
    trim_model,
)

__all__ = [
    "ENDPOINTS",
    "Catalog",
    "CatalogError",
    "CatalogService",
    "ModelInfo",
    "ModelView",
    "PageTokenError",
    "Pricing",
    "ReasoningLevel",
    "Renderer",
    "ViewCache",
    "build_catalog",
    "build_view",
    "load_bundled",
    "make_page_token",
    "read_operator_file",
    "read_page_token",
    "trim_model",
]
