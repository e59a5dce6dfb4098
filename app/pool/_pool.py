"""The pool: every upstream's live state, chosen per request by tier, health and strategy.

An attempt holds a :class:`Lease` on the upstream it was given: it counts as in flight until
the lease is released, and the lease reports how the attempt went (success and latency, a
failure, a 429) to the upstream's health.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType

from app.catalog import Served
from app.crypto import Vault, VaultError
from app.pool._balancer import Balancer, rendezvous
from app.pool._state import UpstreamState
from app.pool._store import UpstreamRecord, UpstreamStore

__all__ = ["Lease", "NoUpstream", "Pool", "PoolExhausted", "credential_headers"]

log = logging.getLogger("poolgate.pool")


class NoUpstream(Exception):
    """No enabled upstream serves the model, or every one that does is ejected."""


class PoolExhausted(Exception):
    """Every upstream that serves the model is cooling down or at its concurrency limit."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def credential_headers(record: UpstreamRecord, vault: Vault) -> dict[str, str]:
    """The headers that authenticate to an upstream: the one place a stored credential is decrypted."""
    if record.credential is None:
        return {}
    secret = vault.decrypt(record.credential, what=f"the credential of upstream {record.name!r}")
    return {"authorization": f"Bearer {secret}"}


class Lease:
    """One attempt's hold on an upstream; release it exactly once, however the attempt ends.

    As a context manager it releases on exit unless :meth:`hand_over` passed it on (to a stream
    that outlives the attempt, and releases it when it ends).
    """

    __slots__ = ("_handed", "_pool", "_released", "names", "started", "state")

    def __init__(self, pool: Pool, state: UpstreamState, names: tuple[str, ...]) -> None:
        self._pool = pool
        self.state = state
        self.names = names
        self.started = pool.clock()
        self._released = False
        self._handed = False
        state.inflight += 1

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if not self._handed:
            self.release()

    def hand_over(self) -> Lease:
        self._handed = True
        return self

    def succeeded(self, headers: Mapping[str, str]) -> None:
        self.state.succeeded(self._pool.clock() - self.started, headers)

    def failed(self, what: str = "failed") -> None:
        self._pool.report_failure(self.state, self.names, what)

    def rate_limited(self, headers: Mapping[str, str]) -> float:
        return self._pool.report_rate_limited(self.state, headers)

    def release(self) -> None:
        if not self._released:
            self._released = True
            self.state.inflight -= 1


class Pool:
    def __init__(self, store: UpstreamStore, vault: Vault, strategy: str,
                 clock: Callable[[], float] = time.monotonic,
                 on_health: Callable[[UpstreamState], None] | None = None) -> None:
        self._store = store
        self._vault = vault
        self.strategy = strategy
        self.clock = clock
        self.states: dict[str, UpstreamState] = {}
        self.revision = -1
        self._balancer = Balancer()
        self._served: tuple[int, Served] | None = None
        self._on_health = on_health
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
            if state is not None and state.record.revision == record.revision:
                states[record.id] = state
                continue
            try:
                headers, unusable = credential_headers(record, self._vault), None
            except VaultError as exc:  # said once per change of the upstream, not at every sync
                headers, unusable = {}, "its credential cannot be decrypted with the encryption keys set here"
                log.error("upstream %s is unusable: %s", record.name, exc)
            if state is None:
                state = UpstreamState(record, headers, unusable)
            else:
                # Updated in place: requests in flight keep counting on this same object,
                # and what was learned about its health stays.
                state.update(record, headers, unusable)
            states[record.id] = state
        self.states = states

    def candidates(self, names: tuple[str, ...], key_tier: int) -> list[UpstreamState]:
        return [s for s in self.states.values() if s.tier >= key_tier and s.serves(names)]

    def served(self) -> Served:
        """Which models some enabled, usable upstream serves (for the clients' model lists)."""
        if self._served is None or self._served[0] != self.revision:
            matchers = tuple(s.matcher for s in self.states.values() if s.record.enabled and s.unusable is None)
            self._served = (self.revision, Served(f"pool{self.revision}", matchers))
        return self._served[1]

    def serves(self, names: tuple[str, ...]) -> bool:
        """Whether any enabled, usable upstream serves the model (for the client's model list)."""
        return any(state.serves(names) for state in self.states.values())

    def lease(self, state: UpstreamState, names: tuple[str, ...]) -> Lease:
        return Lease(self, state, names)

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
        return self._balancer.pick(strategy or self.strategy, tier)

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
        if self._on_health is not None:
            self._on_health(state)
        return wait

    def report_failure(self, state: UpstreamState, names: tuple[str, ...], what: str = "failed") -> None:
        if state.failed(self.clock(), self.may_eject(state, names), what):
            log.warning("upstream %s ejected for %.0fs after repeated failures",
                        state.name, state.ejected_until - self.clock())
            if self._on_health is not None:
                self._on_health(state)

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

    def snapshot(self) -> list[dict[str, object]]:
        now = self.clock()
        return [state.snapshot(now) for state in self.states.values()]
