"""Spend budgets per key over calendar periods (UTC): day, week starting Monday, month."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from keys import KeyCache

__all__ = ["BudgetBook", "BudgetReload", "period_bounds"]

RELOAD_EVERY = 5.0  # seconds between reloads of spend from the database


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


class BudgetReload:
    """Each budgeted key's spend this period, reloaded from what every replica wrote, every few seconds.

    ``spend_since(moment)`` answers spend per key since a moment from the usage aggregates, so a
    reload costs one small grouped query per budget period in use, however many requests there were.
    """

    name = "budgets"

    def __init__(self, book: BudgetBook, keys: KeyCache,
                 spend_since: Callable[[datetime], Awaitable[dict[str, float]]], every: float = RELOAD_EVERY) -> None:
        self._book = book
        self._keys = keys
        self._spend_since = spend_since
        self._every = every
        self._due = 0.0

    async def refresh(self) -> bool:
        if time.monotonic() < self._due:
            return False
        self._due = time.monotonic() + self._every
        if not any(policy.quotas.budget_period for policy in self._keys.policies()):
            return False  # the common case: no key has a budget, so no need to walk every cached key
        budgeted = [k for k in self._keys.records() if k.policy.quotas.budget_period is not None]
        if not budgeted:
            return False
        now = datetime.now(UTC)
        for period in {k.policy.quotas.budget_period for k in budgeted}:
            assert period is not None
            start, _ = period_bounds(period, now)
            spent = await self._spend_since(start)
            for key in budgeted:
                if key.policy.quotas.budget_period == period:
                    self._book.load(key.id, period, spent.get(key.id, 0.0), now)
        return True
