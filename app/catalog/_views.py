"""A key's view of the catalog: filtered to what it may call, trimmed to what it may use, ordered
by its priority rules, and rendered to bytes once per (policy, catalog, filter).

The list body is cached as a prefix that ends just before the value of ``catalog_age_seconds``;
:func:`render_page` appends the age and the closing brace, or builds one page. The ETag is a hash
over the catalog version and each listed item's digest, in order, so it changes exactly when the
view's content does.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

import msgspec

from app.catalog._codex import codex_entry, serves_codex
from app.catalog._loader import Catalog
from app.catalog._paging import make_page_token
from app.catalog._trim import trim_model
from keys import Matcher, NameIndex, Policy

__all__ = ["ModelView", "Renderer", "Served", "ViewCache", "build_view", "render_page"]

_encode = msgspec.json.encode


@dataclass(frozen=True, slots=True)
class Served:
    """Which models some enabled upstream serves; ``signature`` changes whenever that may have."""

    signature: str
    matchers: tuple[Matcher, ...]


@dataclass(frozen=True, slots=True)
class ModelView:
    ids: tuple[str, ...]
    items: tuple[bytes, ...]
    codex_items: tuple[bytes, ...] | None
    """Codex ModelInfo entries aligned with ``items`` when the view was asked for a Codex client."""
    index: dict[str, int]
    prefix: bytes
    etag: str
    catalog_version: str
    filter_tag: str

    def page(self, offset: int, size: int) -> tuple[tuple[bytes, ...], bool]:
        chunk = self.items[offset : offset + size]
        return chunk, offset + size < len(self.items)

    def codex_page(self, offset: int, size: int) -> tuple[bytes, ...] | None:
        return None if self.codex_items is None else self.codex_items[offset : offset + size]


def render_page(view: ModelView, age: int, *, page_size: int | None = None, offset: int = 0,
                secret: bytes = b"", subject: str = "") -> bytes:
    """The list body: the whole view, or one page of it with the token of the next."""
    age_text = str(age).encode()
    if page_size is None:
        return view.prefix + age_text + b"}"
    items, has_more = view.page(offset, page_size)
    next_token = make_page_token(view, offset + page_size, secret, subject) if has_more else None
    codex_items = view.codex_page(offset, page_size)
    codex_part = b"" if codex_items is None else b',"models":[' + b",".join(codex_items) + b"]"
    return (
        b'{"object":"list","data":[' + b",".join(items) + b"]" + codex_part + b',"has_more":'
        + (b"true" if has_more else b"false") + b',"next_page_token":' + _encode(next_token)
        + b',"catalog_version":' + _encode(view.catalog_version) + b',"catalog_age_seconds":' + age_text + b"}"
    )


TrimKey = tuple[tuple[str, ...] | None, tuple[str, ...] | None, tuple[str, ...] | None]


class _Rendered(NamedTuple):
    body: bytes
    digest: bytes


class Renderer:
    """Rendered items of one catalog version, per (model, the policy fields that trim it).

    Keys differ mostly in which models they see and in what order; the few policy fields that
    change an item's content repeat across keys, so each item is rendered once per combination
    of them and reused by every view.
    """

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.names = NameIndex([model.names for model in catalog.models])
        self._items: dict[TrimKey, list[_Rendered | bool | None]] = {}
        self._served: tuple[str, frozenset[int]] | None = None

    def items(self, policy: Policy) -> list[_Rendered | bool | None]:
        """Rendered items aligned with ``catalog.models``, filled in lazily (False = not yet)."""
        trim = (policy.allowed_reasoning_efforts, policy.allowed_modalities, policy.allowed_verbosities)
        items = self._items.get(trim)
        if items is None:
            items = self._items[trim] = [False] * len(self.catalog.models)
        return items

    def served(self, served: Served) -> frozenset[int]:
        """Positions of the models some upstream serves (cached per pool signature)."""
        if self._served is None or self._served[0] != served.signature:
            found: set[int] = set()
            for matcher in served.matchers:
                found |= matcher.find(self.names)
                # Exact patterns may name an alias: Matcher.find resolves those through by_name.
            self._served = (served.signature, frozenset(found))
        return self._served[1]

    async def warm(self, policy: Policy) -> None:
        """Render every item this policy's trim needs, yielding to the loop as it goes."""
        items = self.items(policy)
        for index, item in enumerate(items):
            if item is False:
                self.render(index, policy, items)
                if index % 64 == 63:
                    await asyncio.sleep(0)

    def render(self, index: int, policy: Policy, items: list[_Rendered | bool | None]) -> _Rendered | None:
        data = trim_model(self.catalog.models[index], policy)
        rendered = None
        if data is not None:
            body = _encode(data)
            rendered = _Rendered(body, hashlib.blake2b(body, digest_size=8).digest())
        items[index] = rendered
        return rendered


def build_view(
    catalog: Catalog,
    policy: Policy,
    endpoint: str | None,
    provider: str | None,
    renderer: Renderer | None = None,
    client_version: tuple[int, ...] | None = None,
    served: Served | None = None,
) -> ModelView:
    """The key's list; with ``client_version`` (a Codex client), only what that Codex can use, plus its
    entries; with ``served``, only models some upstream serves."""
    renderer = renderer if renderer is not None and renderer.catalog is catalog else Renderer(catalog)
    models = catalog.models
    rendered_items = renderer.items(policy)
    serving = renderer.served(served) if served is not None else None
    candidates: list[tuple[int, int, str, _Rendered]] = []
    for rank, index in policy.select(renderer.names):
        model = models[index]
        if serving is not None and index not in serving:
            continue
        if endpoint is not None and endpoint not in model.supported_endpoints:
            continue
        if provider is not None and model.provider.lower() != provider:
            continue
        if client_version is not None and not serves_codex(model, client_version):
            continue
        rendered = rendered_items[index]
        if rendered is False:
            rendered = renderer.render(index, policy, rendered_items)
        if isinstance(rendered, _Rendered):
            candidates.append((rank, index, model.id, rendered))
    candidates.sort(key=lambda c: (c[0], c[1]))  # catalog order breaks ties: priority desc, then id
    ids = tuple(c[2] for c in candidates)
    items = tuple(c[3].body for c in candidates)
    codex_items = None
    codex_part = b""
    etag_source = hashlib.blake2b(catalog.version.encode(), digest_size=16)
    if client_version is not None:
        entries = []
        for rank, c in enumerate(candidates):
            trimmed = trim_model(models[c[1]], policy)
            assert trimmed is not None  # it rendered, so it trims
            entries.append(_encode(codex_entry(models[c[1]], trimmed, rank)))
        codex_items = tuple(entries)
        codex_part = b',"models":[' + b",".join(codex_items) + b"]"
        etag_source.update(b"codex")
    prefix = (
        b'{"object":"list","data":[' + b",".join(items) + b"]" + codex_part + b',"has_more":false,"catalog_version":'
        + _encode(catalog.version) + b',"catalog_age_seconds":'
    )
    for candidate in candidates:
        etag_source.update(candidate[3].digest)
    version_tag = "" if client_version is None else "codex" + ".".join(map(str, client_version))
    served_tag = "" if served is None else served.signature
    return ModelView(
        ids=ids,
        items=items,
        codex_items=codex_items,
        index={model_id: i for i, model_id in enumerate(ids)},
        prefix=prefix,
        etag='"' + etag_source.hexdigest() + '"',
        catalog_version=catalog.version,
        filter_tag=f"{policy.view_fingerprint}:{endpoint or ''}:{provider or ''}:{version_tag}:{served_tag}",
    )


ViewKey = tuple[str, str, str | None, str | None, tuple[int, ...] | None, str | None]


class ViewCache:
    """Bounded LRU of rendered views; a new catalog version simply stops hitting old entries."""

    def __init__(self, max_entries: int = 4096) -> None:
        self._entries: OrderedDict[ViewKey, ModelView] = OrderedDict()
        self._max = max_entries
        self._renderer: Renderer | None = None

    def renderer(self, catalog: Catalog) -> Renderer:
        if self._renderer is None or self._renderer.catalog is not catalog:
            self._renderer = Renderer(catalog)
        return self._renderer

    async def warm(self, catalog: Catalog, policies: Iterable[Policy]) -> None:
        """Pre-render items for the policies in use, so a key's first view only sorts and joins."""
        renderer = self.renderer(catalog)
        seen = set()
        for policy in policies:
            trim = (policy.allowed_reasoning_efforts, policy.allowed_modalities, policy.allowed_verbosities)
            if trim not in seen:
                seen.add(trim)
                await renderer.warm(policy)

    def get(
        self,
        catalog: Catalog,
        policy: Policy,
        endpoint: str | None,
        provider: str | None,
        client_version: tuple[int, ...] | None = None,
        served: Served | None = None,
    ) -> ModelView:
        key = (policy.view_fingerprint, catalog.version, endpoint, provider, client_version,
               None if served is None else served.signature)
        entries = self._entries
        view = entries.get(key)
        if view is not None:
            entries.move_to_end(key)
            return view
        view = build_view(catalog, policy, endpoint, provider, self.renderer(catalog), client_version, served)
        entries[key] = view
        if len(entries) > self._max:
            entries.popitem(last=False)
        return view
