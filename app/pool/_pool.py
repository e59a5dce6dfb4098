"""The pool: every upstream's live state, chosen per request by tier, health and strategy."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence

from app.crypto import Vault
from app.pool._balancer import STRATEGIES, rendezvous
from app.pool._state import UpstreamState
from app.pool._store import UpstreamRecord, UpstreamStore

__all__ = ["NoUpstream", "Pool", "PoolExhausted"]

log = logging.getLogger("poolgate.pool")


class NoUpstream(Exception):
    """No enabled upstream serves the model, or every one that does is ejected."""


class PoolExhausted(Exception):
    """Every upstream that serves the model is cooling down or at its concurrency limit."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Pool:
    def __init__(self, store: UpstreamStore, vault: Vault, strategy: str,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._store = store
        self._vault = vault
        self.strategy = strategy
        self.clock = clock
        self.states: dict[str, UpstreamState] = {}
        self.revision = -1
        self.on_health: Callable[[UpstreamState], None] | None = None
        """Called when this process cools down or ejects an upstream (to tell other replicas)."""

    async def refresh(self) -> bool:
        """Reload upstreams when the store changed; live counters survive for unchanged ones."""
        revision = await self._store.revision()
        if revision == self.revision:
            return False
        self.apply(await self._store.list())
        self.revision = revision
        return True

    def apply(self, records: Sequence[UpstreamRecord]) -> None:
        states: dict[str, UpstreamState] = {}
        for record in records:
            state = self.states.get(record.id)
            if state is None:
                state = UpstreamState(record, self._auth_headers(record))
            elif state.record.revision != record.revision:
                # Updated in place: requests in flight keep counting on this same object,
                # and what was learned about its health stays.
                state.update(record, self._auth_headers(record))
            states[record.id] = state
        self.states = states

    def _auth_headers(self, record: UpstreamRecord) -> dict[str, str]:
        if record.credential is None:
            return {}
        secret = self._vault.decrypt(record.credential, what=f"the credential of upstream {record.name!r}")
        return {"authorization": f"Bearer {secret}"}

    def candidates(self, names: tuple[str, ...], key_tier: int) -> list[UpstreamState]:
        return [s for s in self.states.values() if s.tier >= key_tier and s.serves(names)]

    def choose(
        self, names: tuple[str, ...], key_tier: int, *, strategy: str | None = None, sticky: str | None = None,
        exclude: frozenset[str] = frozenset(),
    ) -> UpstreamState:
        """The upstream for one attempt; raises NoUpstream (503) or PoolExhausted (429)."""
        serving = [s for s in self.candidates(names, key_tier) if s.id not in exclude]
        if not serving:
            raise NoUpstream(f"No upstream serves the model '{names[0]}' for this key.")
        now = self.clock()
        available = [s for s in serving if s.available(now)]
        if not available:
            waiting = [s for s in serving if s.ejected_until <= now]  # cooling down or full, not down
            if not waiting:
                raise NoUpstream(f"Every upstream for the model '{names[0]}' is failing; try again shortly.")
            recovery = min(max(s.cooldown_until - now, 0.0) for s in waiting)
            raise PoolExhausted(
                f"Every upstream for the model '{names[0]}' is rate-limited or busy.", max(recovery, 0.05)
            )
        best = min(s.tier for s in available)
        tier = [s for s in available if s.tier == best]
        if sticky:
            return rendezvous(tier, sticky)
        return STRATEGIES[strategy or self.strategy](tier)

    def earliest_recovery(self, names: tuple[str, ...], key_tier: int) -> float | None:
        """Seconds until the first cooling-down upstream for the model is back, if any is cooling."""
        now = self.clock()
        waits = [s.cooldown_until - now for s in self.candidates(names, key_tier) if s.cooldown_until > now]
        return min(waits) if waits else None

    def may_eject(self, state: UpstreamState, names: tuple[str, ...]) -> bool:
        """Never eject the last healthy upstream of a model: a failing one beats none."""
        now = self.clock()
        return any(
            other is not state and other.ejected_until <= now and other.serves(names)
            for other in self.states.values()
        )

    def report_rate_limited(self, state: UpstreamState, headers: Mapping[str, str]) -> float:
        """An upstream 429: cool it down here, and tell the other replicas; returns the wait."""
        wait = state.rate_limited(headers, self.clock())
        if self.on_health is not None:
            self.on_health(state)
        return wait

    def report_failure(self, state: UpstreamState, names: tuple[str, ...]) -> None:
        if state.failed(self.clock(), self.may_eject(state, names)):
            log.warning("upstream %s ejected for %.0fs after repeated failures",
                        state.name, state.ejected_until - self.clock())
            if self.on_health is not None:
                self.on_health(state)

    def apply_shared(self, upstream_id: str, cooldown_in: float, ejected_in: float) -> None:
        """What another replica saw: cooling down or ejected for so many more seconds."""
        state = self.states.get(upstream_id)
        if state is None:
            return
        now = self.clock()
        if cooldown_in > 0:
            state.cooldown_until = max(state.cooldown_until, now + cooldown_in)
            state.remaining_requests = 0
        if ejected_in > 0 and all(self.may_eject(state, (route.pattern,)) for route in state.record.routes):
            # Not when this would leave a model with no healthy upstream here: replicas that each
            # ejected a different one of two accounts must not, between them, eject both.
            state.ejected_until = max(state.ejected_until, now + ejected_in)
