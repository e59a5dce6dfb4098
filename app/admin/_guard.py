"""Slowing down token guessing: failed admin sign-ins and bad admin tokens, counted per client address.

After ``LIMIT`` failures within ``WINDOW`` seconds an address gets 429s (even with a good token)
until its oldest failure leaves the window. Counts live in this process: a guesser spread over
replicas gets the limit once per replica, still far too few tries for a 190-bit secret.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

__all__ = ["SignInGuard"]

LIMIT = 10
WINDOW = 60.0
TRACKED = 10_000


class SignInGuard:
    def __init__(self, clock: Callable[[], float] = time.monotonic, limit: int = LIMIT, window: float = WINDOW) -> None:
        self._clock = clock
        self._limit = limit
        self._window = window
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, address: str) -> deque[float] | None:
        failures = self._failures.get(address)
        if failures is None:
            return None
        cutoff = self._clock() - self._window
        while failures and failures[0] <= cutoff:
            failures.popleft()
        if not failures:
            del self._failures[address]
            return None
        return failures

    def blocked_for(self, address: str) -> float:
        """Seconds until ``address`` may try again (0 when it may now)."""
        failures = self._recent(address)
        if failures is None or len(failures) < self._limit:
            return 0.0
        return max(0.0, failures[0] + self._window - self._clock())

    def failed(self, address: str) -> None:
        if address not in self._failures and len(self._failures) >= TRACKED:
            for stale in list(self._failures)[: TRACKED // 10]:  # forget the oldest addresses first
                self._recent(stale)
            if len(self._failures) >= TRACKED:
                self._failures.pop(next(iter(self._failures)))
        self._failures.setdefault(address, deque(maxlen=self._limit)).append(self._clock())
