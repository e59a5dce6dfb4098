"""Usage: one row per relayed request (``app.usage._table``) and the reports read from it."""

from __future__ import annotations

from app.usage._report import UsageSummary, key_totals, summarize

__all__ = ["UsageSummary", "key_totals", "summarize"]
