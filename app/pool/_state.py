"""Live state of one upstream in this process: load, health, cooldown and what it reported."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from app._redact import Redactor
from app.pool._store import UpstreamRecord
from keys import Matcher

__all__ = ["EJECT_AFTER", "EJECT_BASE", "EJECT_MAX", "UpstreamState", "parse_reset"]

EJECT_AFTER = 5  # consecutive 5xx or connect failures
EJECT_BASE = 30.0  # seconds, doubling on each repeat
EJECT_MAX = 600.0
RECOVERED_AFTER = 20  # consecutive successes that forget past ejections
LATENCY_ALPHA = 0.2
MAX_COOLDOWN = 86_400.0  # an upstream asking for longer is believed for a day
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")


def parse_reset(value: str | None) -> float | None:
    """Seconds from ``Retry-After`` (seconds) or ``x-ratelimit-reset-*`` (``1s``, ``6m0s``, ``20ms``)."""
    if not value:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        parts = _DURATION_PART.findall(text)
        if not parts or "".join(n + u for n, u in parts) != text:
            return None
        scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
        seconds = sum(float(n) * scale[u] for n, u in parts)
    if not math.isfinite(seconds):
        return None
    return min(max(0.0, seconds), MAX_COOLDOWN)


@dataclass(eq=False, slots=True)
class UpstreamState:
    """One object per upstream for the life of the process: requests in flight hold it, so an
    edit of the upstream updates it in place (:meth:`update`) rather than replacing it."""

    record: UpstreamRecord
    headers: dict[str, str] = field(repr=False)
    """Headers that authenticate to this upstream (the decrypted credential lives only here)."""
    unusable: str | None = None
    """Why this upstream cannot be used at all (its credential cannot be decrypted here), if so."""
    redactor: Redactor = field(init=False, repr=False)
    matcher: Matcher = field(init=False, repr=False)
    renames: dict[str, str] = field(init=False, repr=False)
    inflight: int = 0
    cooldown_until: float = 0.0
    failures: int = 0
    successes: int = 0
    ejections: int = 0
    ejected_until: float = 0.0
    latency_ewma: float = 0.0
    remaining_requests: int | None = None
    limit_requests: int | None = None
    recent_errors: list[tuple[float, str]] = field(default_factory=list, repr=False)
    """The last few failures (wall-clock time, what happened), for the health page."""

    def __post_init__(self) -> None:
        self.update(self.record, self.headers, self.unusable)

    def update(self, record: UpstreamRecord, headers: dict[str, str], unusable: str | None = None) -> None:
        self.record = record
        self.headers = headers
        self.unusable = unusable
        self.redactor = Redactor(headers.get("authorization", "").removeprefix("Bearer ") or None)
        self.matcher = Matcher([route.pattern for route in record.routes])
        self.renames = {r.pattern.lower(): r.upstream_model for r in record.routes if r.upstream_model}

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def weight(self) -> float:
        return self.record.weight

    @property
    def tier(self) -> int:
        return self.record.tier

    def serves(self, names: tuple[str, ...]) -> bool:
        return self.record.enabled and self.unusable is None and self.matcher.matches(names)

    def upstream_model(self, names: tuple[str, ...]) -> str:
        """The name this upstream knows the model by: a rename for the id or an alias, else the id."""
        for name in names:
            renamed = self.renames.get(name.lower())
            if renamed:
                return renamed
        return names[0]

    def available(self, now: float) -> bool:
        if now < self.ejected_until or now < self.cooldown_until:
            return False
        limit = self.record.max_concurrency
        return limit is None or self.inflight < limit

    def recovers_at(self) -> float:
        return max(self.cooldown_until, self.ejected_until)

    def capacity_share(self) -> float:
        if self.remaining_requests is None or not self.limit_requests:
            return 1.0
        return self.remaining_requests / self.limit_requests

    # -- outcomes -------------------------------------------------------------------------------

    def succeeded(self, seconds: float, headers: Mapping[str, str]) -> None:
        self.failures = 0
        self.successes += 1
        if self.successes >= RECOVERED_AFTER:
            self.ejections = 0
        self.latency_ewma = seconds if not self.latency_ewma else (
            LATENCY_ALPHA * seconds + (1 - LATENCY_ALPHA) * self.latency_ewma)
        self.read_capacity(headers)

    def read_capacity(self, headers: Mapping[str, str]) -> None:
        remaining = headers.get("x-ratelimit-remaining-requests")
        limit = headers.get("x-ratelimit-limit-requests")
        if remaining is not None and remaining.isdigit() and len(remaining) < 12:
            self.remaining_requests = int(remaining)
        if limit is not None and limit.isdigit() and len(limit) < 12:
            self.limit_requests = int(limit)

    def rate_limited(self, headers: Mapping[str, str], now: float) -> float:
        """An upstream 429: cool down until it says it recovers (1 s when it does not say)."""
        wait = parse_reset(headers.get("retry-after"))
        if wait is None:  # no Retry-After: the reset of whichever limit ran out, else the nearest reset
            resets = {kind: parse_reset(headers.get(f"x-ratelimit-reset-{kind}")) for kind in ("requests", "tokens")}
            exhausted = [resets[k] for k in resets if headers.get(f"x-ratelimit-remaining-{k}") == "0"]
            known = [w for w in (exhausted or list(resets.values())) if w is not None]
            wait = min(known) if known else 1.0
        self.cooldown_until = max(self.cooldown_until, now + wait)
        self.remaining_requests = 0
        self.note("rate-limited (429)")
        return wait

    def failed(self, now: float, may_eject: bool, what: str = "failed") -> bool:
        """A 5xx, a timeout or a connection failure; returns True when this ejected the upstream."""
        self.failures += 1
        self.successes = 0
        self.note(what)
        if self.failures < EJECT_AFTER or not may_eject:
            return False
        seconds = min(EJECT_MAX, EJECT_BASE * math.pow(2, self.ejections))
        self.ejections += 1
        self.failures = 0
        self.ejected_until = now + seconds
        return True

    def note(self, what: str) -> None:
        errors = self.recent_errors
        errors.append((time.time(), what))
        if len(errors) > 10:
            del errors[0]

    def snapshot(self, now: float | None = None) -> dict[str, object]:
        now = time.monotonic() if now is None else now
        return {
            "id": self.id, "name": self.name, "tier": self.tier, "weight": self.weight, "inflight": self.inflight,
            "enabled": self.record.enabled, "usable": self.unusable is None, "unusable_reason": self.unusable,
            "cooling_down_s": round(max(0.0, self.cooldown_until - now), 3),
            "ejected_s": round(max(0.0, self.ejected_until - now), 3),
            "consecutive_failures": self.failures, "latency_ewma_ms": round(self.latency_ewma * 1000, 2),
            "remaining_requests": self.remaining_requests,
            "recent_errors": [{"at": round(at, 3), "what": what} for at, what in self.recent_errors],
        }
