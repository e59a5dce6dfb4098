"""Per-key quotas and OpenAI's rate-limit headers."""

from __future__ import annotations

from app.quota._budget import BudgetBook, period_bounds
from app.quota._headers import format_reset
from app.quota._service import QuotaService, Reservation

__all__ = ["BudgetBook", "QuotaService", "Reservation", "format_reset", "period_bounds"]
