"""The Codex CLI's own catalog entries (its ``ModelInfo``), built from a key's trimmed view.

Codex rejects its whole catalog when one entry does not parse, so every required field is
always filled, and only input modalities Codex knows are listed.
"""

from __future__ import annotations

from typing import Any

from app.catalog._model import ModelInfo, parse_version
from app.catalog._trim import TrimmedModel

__all__ = ["DEFAULT_BASE_INSTRUCTIONS", "codex_entry", "serves_codex"]

_CODEX_INPUTS = ("text", "image")
"""The input modalities Codex knows; any other value makes it drop the whole catalog."""

DEFAULT_BASE_INSTRUCTIONS = (
    "You are a coding agent working in the user's terminal and repository. Read the relevant code before "
    "changing it, make focused changes in the project's own style, run its checks when you can, and end with "
    "a short account of what you changed and why. Ask when a request is ambiguous, and never run a destructive "
    "command the user did not ask for."
)


def codex_entry(model: ModelInfo, trimmed: TrimmedModel, rank: int) -> dict[str, Any]:
    """The Codex CLI's ModelInfo for a trimmed model; ``rank`` orders the picker, lowest is the default."""
    meta = trimmed.metadata
    codex = model.codex
    return {
        "slug": model.id,
        "display_name": meta.display_name,
        "description": meta.description or None,
        "supported_reasoning_levels": [{"effort": lv.effort, "description": lv.description}
                                       for lv in meta.supported_reasoning_levels],
        "default_reasoning_level": meta.default_reasoning_level,
        "shell_type": codex.shell_type,
        "visibility": codex.visibility,
        "supported_in_api": model.available_in_api,
        "priority": rank,
        "base_instructions": DEFAULT_BASE_INSTRUCTIONS if codex.base_instructions is None else codex.base_instructions,
        "support_verbosity": meta.support_verbosity,
        "default_verbosity": meta.default_verbosity,
        "truncation_policy": {"mode": codex.truncation_policy.mode, "limit": codex.truncation_policy.limit},
        "experimental_supported_tools": list(codex.experimental_supported_tools),
        "supports_reasoning_summaries": model.supports_reasoning_summaries,
        "supports_parallel_tool_calls": model.supports_parallel_tool_calls,
        "prefer_websockets": model.prefer_websockets,
        "context_window": meta.context_window,
        "input_modalities": [m for m in meta.input_modalities if m in _CODEX_INPUTS],
    }


def serves_codex(model: ModelInfo, client_version: tuple[int, ...]) -> bool:
    """Codex sends every turn to /responses, and does not check minimal_client_version itself."""
    if "responses" not in model.supported_endpoints:
        return False
    if model.minimal_client_version is None:
        return True
    needed = parse_version(model.minimal_client_version)
    return needed is None or needed <= client_version
