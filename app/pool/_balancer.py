"""Choosing one upstream among healthy candidates of the same tier.

Every strategy takes the candidates (non-empty) and returns one. They read the live
counters on :class:`~app.pool._state.UpstreamState` and never block.
"""

from __future__ import annotations

import hashlib
import itertools
import random
from collections.abc import Callable, Sequence

from app.pool._state import UpstreamState

__all__ = ["STRATEGIES", "Balancer", "Strategy", "rendezvous"]

Strategy = Callable[[Sequence[UpstreamState]], UpstreamState]
ROTATIONS_KEPT = 1024


def _weighted_pick(candidates: Sequence[UpstreamState]) -> UpstreamState:
    return random.choices(candidates, weights=[c.weight for c in candidates])[0]  # noqa: S311


def least_inflight(candidates: Sequence[UpstreamState]) -> UpstreamState:
    """Power of two choices, weighted: two weighted draws, the lighter-loaded per unit of weight wins."""
    if len(candidates) == 1:
        return candidates[0]
    a, b = _weighted_pick(candidates), _weighted_pick(candidates)
    return a if a.inflight / a.weight <= b.inflight / b.weight else b


def weighted_random(candidates: Sequence[UpstreamState]) -> UpstreamState:
    return _weighted_pick(candidates)


def latency(candidates: Sequence[UpstreamState]) -> UpstreamState:
    """Lowest EWMA latency of two weighted draws; unmeasured upstreams count as fast, so they get tried."""
    if len(candidates) == 1:
        return candidates[0]
    a, b = _weighted_pick(candidates), _weighted_pick(candidates)
    return a if a.latency_ewma <= b.latency_ewma else b


def usage(candidates: Sequence[UpstreamState]) -> UpstreamState:
    """In proportion to the remaining capacity the upstreams last reported (x-ratelimit-remaining-*),
    so a burst spreads instead of landing on whichever reported most."""
    weights = [max(c.capacity_share(), 0.001) * c.weight for c in candidates]
    return random.choices(candidates, weights=weights)[0]  # noqa: S311


def rendezvous(candidates: Sequence[UpstreamState], sticky: str) -> UpstreamState:
    """Highest-random-weight hashing: a conversation stays on one upstream while it is a candidate,
    and only the conversations of an upstream that drops out move."""

    def score(c: UpstreamState) -> float:
        digest = hashlib.blake2b(f"{sticky}|{c.id}".encode(), digest_size=8).digest()
        return (int.from_bytes(digest, "big") + 1) / 2**64 * c.weight

    return max(candidates, key=score)


STRATEGIES: dict[str, Strategy] = {
    "least_inflight": least_inflight,
    "weighted_random": weighted_random,
    "latency": latency,
    "usage": usage,
}


class Balancer:
    """The strategies, and the one that needs memory: round robin keeps a turn per set of candidates
    (so models served by different sets each rotate fully), at most ``ROTATIONS_KEPT`` sets."""

    def __init__(self) -> None:
        self._turns: dict[tuple[str, ...], itertools.count[int]] = {}

    def pick(self, strategy: str, candidates: Sequence[UpstreamState]) -> UpstreamState:
        if strategy != "round_robin":
            return STRATEGIES[strategy](candidates)
        ring = tuple(c.id for c in candidates)
        turn = self._turns.get(ring)
        if turn is None:
            if len(self._turns) >= ROTATIONS_KEPT:  # sets come and go as upstreams cool down: forget old ones
                self._turns.clear()
            turn = self._turns[ring] = itertools.count()
        return candidates[next(turn) % len(candidates)]
