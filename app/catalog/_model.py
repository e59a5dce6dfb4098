"""The shape of one catalog entry, validated when the catalog is built, never per request."""

from __future__ import annotations

from typing import Literal

import msgspec

from app.settings import BALANCERS
from keys import EFFORTS, MODALITIES, VERBOSITIES

__all__ = [
    "ENDPOINTS",
    "CatalogError",
    "CodexInfo",
    "ModelInfo",
    "Pricing",
    "ReasoningLevel",
    "TierPrice",
    "TruncationPolicy",
    "parse_version",
]

Endpoint = Literal["chat_completions", "responses", "embeddings"]
ENDPOINTS: tuple[str, ...] = ("chat_completions", "responses", "embeddings")


class CatalogError(ValueError):
    """The catalog (bundled or operator file) cannot be used; the message says where and why."""


class ReasoningLevel(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    effort: str
    description: str = ""


class TierPrice(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """USD per one million tokens on one service tier; a field left out costs what the standard tier does."""

    input: float | None = None
    output: float | None = None
    cache_read: float | None = None
    cache_write: float | None = None


class Pricing(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """USD per one million tokens; ``service_tiers`` prices other tiers (``flex``, ``priority``, ...)."""

    input: float | None = None
    output: float | None = None
    cache_read: float | None = None
    cache_write: float | None = None
    service_tiers: dict[str, TierPrice] | None = None

    def for_tier(self, tier: str | None) -> Pricing:
        """The prices on ``tier``: the standard ones where the catalog does not know that tier's."""
        special = self.service_tiers.get(tier) if tier and self.service_tiers else None
        if special is None:
            return self
        return Pricing(
            input=self.input if special.input is None else special.input,
            output=self.output if special.output is None else special.output,
            cache_read=self.cache_read if special.cache_read is None else special.cache_read,
            cache_write=self.cache_write if special.cache_write is None else special.cache_write,
        )


class TruncationPolicy(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """How the Codex CLI cuts long tool output before sending it back to the model."""

    mode: Literal["bytes", "tokens"] = "tokens"
    limit: int = 10_000


class CodexInfo(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Fields only the Codex CLI reads; each has a default that Codex accepts."""

    shell_type: Literal["shell_command", "default", "local", "unified_exec", "disabled"] = "shell_command"
    visibility: Literal["list", "hide", "none"] = "list"
    base_instructions: str | None = None
    """The system prompt Codex sends first; None sends poolgate's short default."""
    truncation_policy: TruncationPolicy = TruncationPolicy()
    experimental_supported_tools: tuple[str, ...] = ()


class ModelInfo(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    id: str
    provider: str = "openai"
    owned_by: str = ""
    created: int = 0
    aliases: tuple[str, ...] = ()
    display_name: str = ""
    description: str = ""
    context_window: int | None = None
    max_output_tokens: int | None = None
    input_modalities: tuple[str, ...] = ("text",)
    output_modalities: tuple[str, ...] = ("text",)
    supported_reasoning_levels: tuple[ReasoningLevel, ...] = ()
    default_reasoning_level: str | None = None
    supports_reasoning_summaries: bool = False
    support_verbosity: bool = False
    default_verbosity: str | None = None
    prefer_websockets: bool = False
    supports_parallel_tool_calls: bool = False
    available_in_api: bool = True
    minimal_client_version: str | None = None
    priority: int = 0
    supported_endpoints: tuple[Endpoint, ...] = ("chat_completions", "responses")
    pricing: Pricing | None = None
    balancer: str | None = None
    """Operator's choice of strategy for this model; None uses POOLGATE_BALANCER."""
    codex: CodexInfo = CodexInfo()

    @property
    def names(self) -> tuple[str, ...]:
        return (self.id, *self.aliases)

    def check(self) -> ModelInfo:
        """Cross-field rules msgspec's types cannot say; returns a normalised copy."""
        where = f"model {self.id!r}"
        if not self.id or self.id != self.id.strip() or any(c.isspace() for c in self.id):
            raise CatalogError(f"{where}: id must be a non-empty string without spaces")
        efforts = [level.effort for level in self.supported_reasoning_levels]
        unknown = [e for e in efforts if e not in EFFORTS]
        if unknown:
            raise CatalogError(f"{where}: unknown reasoning effort {unknown[0]!r} (expected {', '.join(EFFORTS)})")
        if len(set(efforts)) != len(efforts):
            raise CatalogError(f"{where}: a reasoning effort is listed twice")
        if self.default_reasoning_level is not None and self.default_reasoning_level not in efforts:
            raise CatalogError(f"{where}: default_reasoning_level {self.default_reasoning_level!r} is not listed")
        if self.default_verbosity is not None and self.default_verbosity not in VERBOSITIES:
            raise CatalogError(f"{where}: default_verbosity must be one of {', '.join(VERBOSITIES)}")
        for modality in (*self.input_modalities, *self.output_modalities):
            if modality not in MODALITIES:
                raise CatalogError(f"{where}: unknown modality {modality!r} (expected {', '.join(MODALITIES)})")
        for field_name in ("context_window", "max_output_tokens"):
            value = getattr(self, field_name)
            if value is not None and value < 0:
                raise CatalogError(f"{where}: {field_name} must not be negative")
        if self.balancer is not None and self.balancer not in BALANCERS:
            raise CatalogError(f"{where}: balancer must be one of {', '.join(BALANCERS)}")
        if self.minimal_client_version is not None and not _is_version(self.minimal_client_version):
            raise CatalogError(f"{where}: minimal_client_version must look like 1.2.3")
        if self.codex.truncation_policy.limit <= 0:
            raise CatalogError(f"{where}: codex.truncation_policy.limit must be positive")
        return msgspec.structs.replace(
            self,
            owned_by=self.owned_by or self.provider,
            display_name=self.display_name or self.id,
            default_verbosity=self.default_verbosity if self.support_verbosity else None,
        )


def _is_version(value: str) -> bool:
    parts = value.split(".")
    return 1 <= len(parts) <= 4 and all(p.isdigit() for p in parts)


def parse_version(value: str) -> tuple[int, ...] | None:
    """``0.169.0`` or ``0.170.0-alpha.2`` as numbers (pre-release tags ignored); None if it is no version."""
    core = value.strip().split("-", 1)[0].split("+", 1)[0]
    parts = core.split(".")
    if not 1 <= len(parts) <= 4 or not all(p.isdigit() and len(p) <= 9 for p in parts):
        return None
    numbers = [int(p) for p in parts]
    while len(numbers) > 1 and numbers[-1] == 0:
        numbers.pop()
    return tuple(numbers)
