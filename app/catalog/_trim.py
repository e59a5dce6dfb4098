"""One model as a key may use it: reasoning levels, verbosity and modalities cut to the key's policy.

:class:`TrimmedModel` is both the typed value the proxy reads (the default effort a key
must use, say) and, encoded, the item of ``GET /v1/models``.
"""

from __future__ import annotations

import msgspec

from app.catalog._model import ModelInfo, Pricing
from keys import EFFORTS, VERBOSITIES, Policy

__all__ = ["LevelItem", "ModelMetadata", "TrimmedModel", "nearest", "trim_model"]

_ALWAYS_OUTPUT = frozenset({"text", "embedding"})


class LevelItem(msgspec.Struct, frozen=True):
    effort: str
    description: str


class ModelMetadata(msgspec.Struct, frozen=True):
    display_name: str
    description: str
    provider: str
    aliases: tuple[str, ...]
    context_window: int | None
    max_output_tokens: int | None
    input_modalities: tuple[str, ...]
    output_modalities: tuple[str, ...]
    supported_reasoning_levels: tuple[LevelItem, ...]
    default_reasoning_level: str | None
    supports_reasoning_summaries: bool
    support_verbosity: bool
    verbosity_levels: tuple[str, ...]
    default_verbosity: str | None
    prefer_websockets: bool
    supports_parallel_tool_calls: bool
    available_in_api: bool
    minimal_client_version: str | None
    priority: int
    supported_endpoints: tuple[str, ...]


class TrimmedModel(msgspec.Struct, frozen=True):
    id: str
    object: str
    created: int
    owned_by: str
    metadata: ModelMetadata
    pricing: Pricing | None

    @property
    def default_reasoning_level(self) -> str | None:
        return self.metadata.default_reasoning_level

    @property
    def default_verbosity(self) -> str | None:
        return self.metadata.default_verbosity


def nearest(wanted: str | None, allowed: list[str], order: tuple[str, ...]) -> str | None:
    """The allowed value closest to ``wanted``: the highest not above it, else the lowest."""
    if not allowed:
        return None
    if wanted in allowed:
        return wanted
    rank = {value: i for i, value in enumerate(order)}
    target = rank.get(wanted or "", len(order) // 2)
    below = [v for v in allowed if rank.get(v, 0) <= target]
    return max(below, key=lambda v: rank.get(v, 0)) if below else min(allowed, key=lambda v: rank.get(v, 0))


def trim_model(model: ModelInfo, policy: Policy) -> TrimmedModel | None:
    """The model's metadata as this key may use it, or None when the key cannot use it at all."""
    levels = list(model.supported_reasoning_levels)
    default_level = model.default_reasoning_level
    if policy.allowed_reasoning_efforts is not None and levels:
        levels = [lv for lv in levels if lv.effort in policy.allowed_reasoning_efforts]
        if not levels:
            return None
        default_level = nearest(default_level, [lv.effort for lv in levels], EFFORTS)

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
        default_verbosity = nearest(default_verbosity, verbosities, VERBOSITIES)

    return TrimmedModel(
        id=model.id,
        object="model",
        created=model.created,
        owned_by=model.owned_by,
        metadata=ModelMetadata(
            display_name=model.display_name,
            description=model.description,
            provider=model.provider,
            aliases=model.aliases,
            context_window=model.context_window,
            max_output_tokens=model.max_output_tokens,
            input_modalities=tuple(inputs),
            output_modalities=tuple(outputs),
            supported_reasoning_levels=tuple(LevelItem(lv.effort, lv.description) for lv in levels),
            default_reasoning_level=default_level,
            supports_reasoning_summaries=model.supports_reasoning_summaries,
            support_verbosity=support_verbosity,
            verbosity_levels=tuple(verbosities),
            default_verbosity=default_verbosity if support_verbosity else None,
            prefer_websockets=model.prefer_websockets,
            supports_parallel_tool_calls=model.supports_parallel_tool_calls,
            available_in_api=model.available_in_api,
            minimal_client_version=model.minimal_client_version,
            priority=model.priority,
            supported_endpoints=model.supported_endpoints,
        ),
        pricing=model.pricing,
    )
