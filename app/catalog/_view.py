"""A key's view of the catalog: filtered to what it may call, trimmed to what it may use,
ordered by its priority rules, and rendered to bytes once per (policy, catalog, filter).

The list body is cached as a prefix that ends just before the value of
``catalog_age_seconds``; a request appends the age and the closing brace. The ETag
is a hash over the catalog version and each listed item's digest, in order, so it
changes exactly when the view's content does.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

import msgspec

from app.catalog._loader import Catalog
from app.catalog._model import ModelInfo, parse_version
from keys import EFFORTS, VERBOSITIES, NameIndex, Policy

__all__ = [
    "DEFAULT_BASE_INSTRUCTIONS",
    "ModelView",
    "PageTokenError",
    "Renderer",
    "ViewCache",
    "build_view",
    "codex_entry",
    "make_page_token",
    "read_page_token",
    "trim_model",
]

_encode = msgspec.json.encode
_ALWAYS_OUTPUT = frozenset({"text", "embedding"})
_CODEX_INPUTS = ("text", "image")
"""The input modalities Codex knows; any other value makes it drop the whole catalog."""

DEFAULT_BASE_INSTRUCTIONS = (
    "You are a coding agent working in the user's terminal and repository. Read the relevant code before "
    "changing it, make focused changes in the project's own style, run its checks when you can, and end with "
    "a short account of what you changed and why. Ask when a request is ambiguous, and never run a destructive "
    "command the user did not ask for."
)


class PageTokenError(ValueError):
    """A page token that is forged, from another key or filter, or from an older catalog."""


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


def _nearest(wanted: str | None, allowed: list[str], order: tuple[str, ...]) -> str | None:
    """The allowed value closest to ``wanted``: the highest not above it, else the lowest."""
    if not allowed:
        return None
    if wanted in allowed:
        return wanted
    rank = {value: i for i, value in enumerate(order)}
    target = rank.get(wanted or "", len(order) // 2)
    below = [v for v in allowed if rank.get(v, 0) <= target]
    return max(below, key=lambda v: rank.get(v, 0)) if below else min(allowed, key=lambda v: rank.get(v, 0))


def trim_model(model: ModelInfo, policy: Policy) -> dict[str, Any] | None:
    """The model's metadata as this key may use it, or None when the key cannot use it at all."""
    levels = list(model.supported_reasoning_levels)
    default_level = model.default_reasoning_level
    if policy.allowed_reasoning_efforts is not None and levels:
        levels = [lv for lv in levels if lv.effort in policy.allowed_reasoning_efforts]
        if not levels:
            return None
        default_level = _nearest(default_level, [lv.effort for lv in levels], EFFORTS)

    inputs = list(model.input_modalities)
    outputs = list(model.output_modalities)
    if policy.allowed_modalities is not None:
        allowed = policy.allowed_modalities
        inputs = [m for m in inputs if m in allowed]
        outputs = [m for m in outputs if m in allowed or m in _ALWAYS_OUTPUT]
        if not inputs or not outputs:
            return None

    support_verbosity = model.support_verbosity
    verbosities = list(VERBOSITIES) if support_verbosity else []
    default_verbosity = model.default_verbosity
    if support_verbosity and policy.allowed_verbosities is not None:
        verbosities = [v for v in VERBOSITIES if v in policy.allowed_verbosities]
        support_verbosity = bool(verbosities)
        default_verbosity = _nearest(default_verbosity, verbosities, VERBOSITIES)

    return {
        "id": model.id,
        "object": "model",
        "created": model.created,
        "owned_by": model.owned_by,
        "metadata": {
            "display_name": model.display_name,
            "description": model.description,
            "provider": model.provider,
            "aliases": list(model.aliases),
            "context_window": model.context_window,
            "max_output_tokens": model.max_output_tokens,
            "input_modalities": inputs,
            "output_modalities": outputs,
            "supported_reasoning_levels": [{"effort": lv.effort, "description": lv.description} for lv in levels],
            "default_reasoning_level": default_level,
            "supports_reasoning_summaries": model.supports_reasoning_summaries,
            "support_verbosity": support_verbosity,
            "verbosity_levels": verbosities,
            "default_verbosity": default_verbosity if support_verbosity else None,
            "prefer_websockets": model.prefer_websockets,
            "supports_parallel_tool_calls": model.supports_parallel_tool_calls,
            "available_in_api": model.available_in_api,
            "minimal_client_version": model.minimal_client_version,
            "priority": model.priority,
            "supported_endpoints": list(model.supported_endpoints),
        },
        "pricing": msgspec.to_builtins(model.pricing) if model.pricing is not None else None,
    }


def codex_entry(model: ModelInfo, trimmed: dict[str, Any], rank: int) -> dict[str, Any]:
    """The Codex CLI's ModelInfo for a trimmed model; ``rank`` orders the picker, lowest is the default."""
    meta = trimmed["metadata"]
    codex = model.codex
    return {
        "slug": model.id,
        "display_name": meta["display_name"],
        "description": meta["description"] or None,
        "supported_reasoning_levels": meta["supported_reasoning_levels"],
        "default_reasoning_level": meta["default_reasoning_level"],
        "shell_type": codex.shell_type,
        "visibility": codex.visibility,
        "supported_in_api": model.available_in_api,
        "priority": rank,
        "base_instructions": DEFAULT_BASE_INSTRUCTIONS if codex.base_instructions is None else codex.base_instructions,
        "support_verbosity": meta["support_verbosity"],
        "default_verbosity": meta["default_verbosity"],
        "truncation_policy": {"mode": codex.truncation_policy.mode, "limit": codex.truncation_policy.limit},
        "experimental_supported_tools": list(codex.experimental_supported_tools),
        "supports_reasoning_summaries": model.supports_reasoning_summaries,
        "supports_parallel_tool_calls": model.supports_parallel_tool_calls,
        "prefer_websockets": model.prefer_websockets,
        "context_window": meta["context_window"],
        "input_modalities": [m for m in meta["input_modalities"] if m in _CODEX_INPUTS],
    }


def _serves_codex(model: ModelInfo, client_version: tuple[int, ...]) -> bool:
    """Codex sends every turn to /responses, and does not check minimal_client_version itself."""
    if "responses" not in model.supported_endpoints:
        return False
    if model.minimal_client_version is None:
        return True
    needed = parse_version(model.minimal_client_version)
    return needed is None or needed <= client_version


TrimKey = tuple[tuple[str, ...] | None, tuple[str, ...] | None, tuple[str, ...] | None]


class _Rendered(NamedTuple):
    body: bytes
    digest: bytes


class Renderer:
    """Rendered items of one catalog version, per (model, the policy fields that trim it).

    Keys differ mostly in which models they see and in what order; the few policy
    fields that change an item's content repeat across keys, so each item is
    rendered once per combination of them and reused by every view.
    """

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.names = NameIndex([model.names for model in catalog.models])
        self._items: dict[TrimKey, list[_Rendered | bool | None]] = {}

    def items(self, policy: Policy) -> list[_Rendered | bool | None]:
        """Rendered items aligned with ``catalog.models``, filled in lazily (False = not yet)."""
        trim = (policy.allowed_reasoning_efforts, policy.allowed_modalities, policy.allowed_verbosities)
        items = self._items.get(trim)
        if items is None:
            items = self._items[trim] = [False] * len(self.catalog.models)
        return items

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
) -> ModelView:
    """The key's list; with ``client_version`` (a Codex client), only what that Codex can use, plus its entries."""
    renderer = renderer if renderer is not None and renderer.catalog is catalog else Renderer(catalog)
    models = catalog.models
    rendered_items = renderer.items(policy)
    candidates: list[tuple[int, int, str, _Rendered]] = []
    for rank, index in policy.select(renderer.names):
        model = models[index]
        if endpoint is not None and endpoint not in model.supported_endpoints:
            continue
        if provider is not None and model.provider.lower() != provider:
            continue
        if client_version is not None and not _serves_codex(model, client_version):
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
        codex_items = tuple(
            _encode(codex_entry(models[c[1]], trim_model(models[c[1]], policy) or {}, rank))
            for rank, c in enumerate(candidates)
        )
        codex_part = b',"models":[' + b",".join(codex_items) + b"]"
        etag_source.update(b"codex")
    prefix = (
        b'{"object":"list","data":[' + b",".join(items) + b"]" + codex_part + b',"has_more":false,"catalog_version":'
        + _encode(catalog.version) + b',"catalog_age_seconds":'
    )
    for candidate in candidates:
        etag_source.update(candidate[3].digest)
    version_tag = "" if client_version is None else "codex" + ".".join(map(str, client_version))
    return ModelView(
        ids=ids,
        items=items,
        codex_items=codex_items,
        index={model_id: i for i, model_id in enumerate(ids)},
        prefix=prefix,
        etag='"' + etag_source.hexdigest() + '"',
        catalog_version=catalog.version,
        filter_tag=f"{policy.view_fingerprint}:{endpoint or ''}:{provider or ''}:{version_tag}",
    )


def make_page_token(view: ModelView, offset: int, secret: bytes, subject: str) -> str:
    """An opaque token for the page at ``offset``, signed with the server's secret for one key."""
    payload = f"{view.catalog_version}|{view.filter_tag}|{offset}".encode()
    mac = hmac.new(secret, subject.encode() + b"|" + payload, hashlib.sha256).digest()[:12]
    return base64.urlsafe_b64encode(payload + b"|" + mac).decode().rstrip("=")


def read_page_token(token: str, view: ModelView, secret: bytes, subject: str) -> int:
    """The offset a token stands for; raises PageTokenError for any token not made for this view."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        payload, mac = raw[:-13], raw[-12:]
        if raw[-13:-12] != b"|":
            raise ValueError
        version, tag, offset_text = payload.decode().rsplit("|", 2)
        offset = int(offset_text)
    except (ValueError, UnicodeDecodeError):
        raise PageTokenError("page_token is not valid") from None
    expected = hmac.new(secret, subject.encode() + b"|" + payload, hashlib.sha256).digest()[:12]
    if not hmac.compare_digest(mac, expected) or tag != view.filter_tag or offset < 0:
        raise PageTokenError("page_token is not valid for this key and filter")
    if version != view.catalog_version:
        raise PageTokenError("page_token is stale: the model catalog changed; list again from the first page")
    return offset


class ViewCache:
    """Bounded LRU of rendered views; a new catalog version simply stops hitting old entries."""

    def __init__(self, max_entries: int = 4096) -> None:
        self._entries: OrderedDict[
            tuple[str, str, str | None, str | None, tuple[int, ...] | None], ModelView
        ] = OrderedDict()
        self._max = max_entries
        self._renderer: Renderer | None = None

    def _renderer_for(self, catalog: Catalog) -> Renderer:
        if self._renderer is None or self._renderer.catalog is not catalog:
            self._renderer = Renderer(catalog)
        return self._renderer

    async def warm(self, catalog: Catalog, policies: Iterable[Policy]) -> None:
        """Pre-render items for the policies in use, so a key's first view only sorts and joins."""
        renderer = self._renderer_for(catalog)
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
    ) -> ModelView:
        key = (policy.view_fingerprint, catalog.version, endpoint, provider, client_version)
        entries = self._entries
        view = entries.get(key)
        if view is not None:
            entries.move_to_end(key)
            return view
        view = build_view(catalog, policy, endpoint, provider, self._renderer_for(catalog), client_version)
        entries[key] = view
        if len(entries) > self._max:
            entries.popitem(last=False)
        return view
