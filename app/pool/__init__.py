"""Upstream accounts: storage, live health, and choosing one per request."""

from __future__ import annotations

from app.pool._balancer import STRATEGIES, rendezvous
from app.pool._pool import NoUpstream, Pool, PoolExhausted
from app.pool._state import UpstreamState, parse_reset
from app.pool._store import KINDS, ModelRoute, UpstreamNotFound, UpstreamRecord, UpstreamStore, parse_routes

__all__ = [
    "KINDS",
    "STRATEGIES",
    "ModelRoute",
    "NoUpstream",
    "Pool",
    "PoolExhausted",
    "UpstreamNotFound",
    "UpstreamRecord",
    "UpstreamState",
    "UpstreamStore",
    "parse_reset",
    "parse_routes",
    "rendezvous",
]
