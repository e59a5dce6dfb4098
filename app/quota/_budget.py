"""Spend budgets per key over calendar periods (UTC): day, week starting Monday, month."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

__all__ = ["BudgetBook", "period_bounds"]


def period_bounds(period: str, now: datetime) -> tuple[datetime, datetime]:
    """Start and end of the calendar period (UTC) that ``now`` falls in."""
    day = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return day, day + timedelta(days=1)
    if period == "week":
        start = day - timedelta(days=day.weekday())
        return start, start + timedelta(days=7)
    start = day.replace(day=1)
    end = (start + timedelta(days=32)).replace(day=1)
    return start, end


class BudgetBook:
    """What each budgeted key has spent in its current period.

    The database is the truth (the sync loop reloads the sums); spend recorded here in
    between keeps the check current without a read per request.
    """

    def __init__(self) -> None:
        self._spent: dict[str, tuple[datetime, float]] = {}

    def spent(self, key_id: str, period: str, now: datetime) -> float:
        start, _ = period_bounds(period, now)
        held = self._spent.get(key_id)
        return held[1] if held is not None and held[0] == start else 0.0

    def add(self, key_id: str, period: str, cost: float, now: datetime) -> None:
        start, _ = period_bounds(period, now)
        self._spent[key_id] = (start, self.spent(key_id, period, now) + cost)

    def load(self, key_id: str, period: str, total: float, now: datetime) -> None:
        """The database's total for the period. Spend within a period only grows, and costs settled
        here may not be written yet, so a lower total never undoes them (the next reload catches up)."""
        start, _ = period_bounds(period, now)
        self._spent[key_id] = (start, max(total, self.spent(key_id, period, now)))
