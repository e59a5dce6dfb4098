"""Per-key quotas and OpenAI's rate-limit headers."""

from __future__ import annotations

from app.quota._headers import format_reset
from app.quota._service import QuotaService

__all__ = ["QuotaService", "format_reset"]
