"""The model registry: a bundled catalog, the operator's overrides, and per-key views."""

from __future__ import annotations

from app.catalog._codex import codex_entry
from app.catalog._loader import Catalog, build_catalog, load_bundled
from app.catalog._model import ENDPOINTS, CatalogError, ModelInfo, parse_version
from app.catalog._paging import PageTokenError, read_page_token
from app.catalog._service import CatalogService
from app.catalog._trim import trim_model
from app.catalog._views import Served, build_view, render_page

__all__ = [
    "ENDPOINTS",
    "Catalog",
    "CatalogError",
    "CatalogService",
    "ModelInfo",
    "PageTokenError",
    "Served",
    "build_catalog",
    "build_view",
    "codex_entry",
    "load_bundled",
    "parse_version",
    "read_page_token",
    "render_page",
    "trim_model",
]
