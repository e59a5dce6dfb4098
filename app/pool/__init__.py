"""Upstream accounts: storage, live health, and choosing one per request."""

from __future__ import annotations

from app.pool._pool import Lease, NoUpstream, Pool, PoolExhausted, credential_headers
from app.pool._state import UpstreamState, parse_reset
from app.pool._store import (
    KINDS,
    ModelRoute,
    UpstreamNotFound,
    UpstreamRecord,
    UpstreamStore,
    parse_routes,
)

__all__ = [
    "KINDS",
    "Lease",
    "ModelRoute",
    "NoUpstream",
    "Pool",
    "PoolExhausted",
    "UpstreamNotFound",
    "UpstreamRecord",
    "UpstreamState",
    "UpstreamStore",
    "credential_headers",
    "parse_reset",
    "parse_routes",
]
