"""``GET /v1/models`` and ``GET /v1/models/{id}``: the calling key's view of the catalog."""

from __future__ import annotations

import hashlib
import time

from litestar import Response, get
from litestar.di import NamedDependency
from litestar.params import FromPath

from app._types import AnyRequest
from app.access import model_not_allowed, model_not_found, resolve_model
from app.catalog import ENDPOINTS, CatalogService, PageTokenError, parse_version, read_page_token, render_page
from app.errors import InvalidRequestError
from app.pool import Pool
from app.quota import QuotaService
from app.routes._auth import authorize
from keys import KeyCache

__all__ = ["list_models", "retrieve_model"]

MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 100
_CACHE_CONTROL = "private, no-cache"


def _not_modified(request: AnyRequest, etag: str) -> bool:
    wanted = request.headers.get("if-none-match")
    if not wanted:
        return False
    tags = {tag.strip().removeprefix("W/") for tag in wanted.split(",")}
    return etag in tags or "*" in tags


def _client_version(request: AnyRequest) -> tuple[int, ...] | None:
    """The Codex CLI's version from ``?client_version=``; its presence asks for the Codex ``models`` list too."""
    text = request.query_params.get("client_version")
    if text is None:
        return None
    version = parse_version(text)
    if version is None:
        raise InvalidRequestError(
            f"Invalid client_version {text!r}: expected a version such as 0.169.0.", param="client_version"
        )
    return version


def _query(request: AnyRequest, providers: frozenset[str]) -> tuple[str | None, str | None, int | None, str | None]:
    query = request.query_params
    endpoint = query.get("endpoint") or None
    if endpoint is not None and endpoint not in ENDPOINTS:
        raise InvalidRequestError(
            f"Invalid endpoint {endpoint!r}: expected one of {', '.join(ENDPOINTS)}.", param="endpoint"
        )
    provider = (query.get("provider") or "").strip().lower() or None
    if provider is not None and provider not in providers:
        raise InvalidRequestError(
            f"Unknown provider {provider!r}: expected one of {', '.join(sorted(providers))}.", param="provider"
        )
    page_token = query.get("page_token") or None
    size_text = query.get("page_size")
    page_size: int | None = None
    if size_text is not None:
        if not size_text.isdigit() or not 1 <= int(size_text) <= MAX_PAGE_SIZE:
            raise InvalidRequestError(
                f"Invalid page_size {size_text!r}: expected an integer from 1 to {MAX_PAGE_SIZE}.", param="page_size"
            )
        page_size = int(size_text)
    elif page_token is not None:
        page_size = DEFAULT_PAGE_SIZE
    return endpoint, provider, page_size, page_token


@get("/v1/models")
async def list_models(request: AnyRequest, keys: NamedDependency[KeyCache], quota: NamedDependency[QuotaService],
                      catalog: NamedDependency[CatalogService], pool: NamedDependency[Pool],
                      page_secret: NamedDependency[bytes]) -> Response[bytes]:
    key, headers = await authorize(request, keys, quota)
    endpoint, provider, page_size, page_token = _query(request, catalog.catalog.providers)
    view = catalog.view(key.policy, endpoint, provider, _client_version(request), pool.served())
    offset = 0
    if page_token is not None:
        try:
            offset = read_page_token(page_token, view, page_secret, key.id)
        except PageTokenError as exc:
            raise InvalidRequestError(str(exc), param="page_token") from None
    etag = view.etag if page_size is None else f'{view.etag[:-1]}-{offset}-{page_size}"'
    headers = {**headers, "etag": etag, "cache-control": _CACHE_CONTROL}
    if _not_modified(request, etag):
        return Response(content=b"", status_code=304, headers=headers)
    age = int(time.time() - catalog.catalog.built_at)
    body = render_page(view, age, page_size=page_size, offset=offset, secret=page_secret, subject=key.id)
    return Response(content=body, media_type="application/json", headers=headers)


@get("/v1/models/{model_id:path}")
async def retrieve_model(request: AnyRequest, keys: NamedDependency[KeyCache], quota: NamedDependency[QuotaService],
                         catalog: NamedDependency[CatalogService], pool: NamedDependency[Pool],
                         model_id: FromPath[str]) -> Response[bytes]:
    key, headers = await authorize(request, keys, quota)
    name = str(model_id).lstrip("/")
    model = resolve_model(catalog.catalog, key, name)
    view = catalog.view(key.policy, served=pool.served())
    position = view.index.get(model.id)
    if position is None:  # allowed by name, but nothing of it is usable by this key, or no upstream serves it
        if model.id not in catalog.view(key.policy).index:
            raise model_not_allowed(name)
        raise model_not_found(name)
    body = view.items[position]
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    headers = {**headers, "etag": etag, "cache-control": _CACHE_CONTROL}
    if _not_modified(request, etag):
        return Response(content=b"", status_code=304, headers=headers)
    return Response(content=body, media_type="application/json", headers=headers)
