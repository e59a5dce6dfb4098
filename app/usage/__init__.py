"""Usage: one row per relayed request, running totals per hour and day, and the reports read from them."""

from __future__ import annotations

from app.usage._recorder import UsageRecorder
from app.usage._report import GROUPS, UsageSummary, key_totals, merge, spend_since, summarize

__all__ = [
    "GROUPS",
    "UsageRecorder",
    "UsageSummary",
    "key_totals",
    "merge",
    "spend_since",
    "summarize",
]
