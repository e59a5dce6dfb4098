"""Per-key quotas, budgets, token estimates and OpenAI's rate-limit headers."""

from __future__ import annotations

from app.quota._budget import BudgetReload, period_bounds
from app.quota._estimate import OutputEstimates
from app.quota._headers import format_reset
from app.quota._service import QuotaService, Reservation, format_usd

__all__ = [
    "BudgetReload",
    "OutputEstimates",
    "QuotaService",
    "Reservation",
    "format_reset",
    "format_usd",
    "period_bounds",
]
