"""OpenAI's rate-limit header formats."""

from __future__ import annotations

import math

__all__ = ["format_reset"]


def format_reset(seconds: float) -> str:
    """``x-ratelimit-reset-*`` values as OpenAI writes them: ``20ms``, ``1s``, ``6m0s``, ``1h2m3s``."""
    if seconds <= 0:
        return "0s"
    if seconds < 1:
        return f"{max(1, math.ceil(seconds * 1000))}ms"
    total = math.ceil(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"
