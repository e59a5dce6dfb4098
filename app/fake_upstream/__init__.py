"""A local fake OpenAI-compatible upstream for tests, benchmarks and demos.

It answers /v1/models, /v1/chat/completions, /v1/responses and /v1/embeddings deterministically
and can be scripted to misbehave (429s, 5xx, hangs, cut streams, slow streams) so the gateway's
retry, failover and disconnect handling can be exercised without a real provider.
"""

from __future__ import annotations

from app.fake_upstream._faults import (
    Fault,
    client_error,
    cut_after,
    delay,
    garbage,
    hang,
    rate_limited,
    raw,
    server_error,
    trickle,
)
from app.fake_upstream._server import FakeUpstream

__all__ = [
    "FakeUpstream",
    "Fault",
    "client_error",
    "cut_after",
    "delay",
    "garbage",
    "hang",
    "rate_limited",
    "raw",
    "server_error",
    "trickle",
]
