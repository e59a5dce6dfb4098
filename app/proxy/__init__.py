"""Relaying requests to the pool: request checks, the upstream transport, retries, streaming, accounting."""

from __future__ import annotations

from app.proxy._exchange import Exchange, Reply, new_request_id
from app.proxy._h1 import H1Transport
from app.proxy._relay import Relay, RetryBudget
from app.proxy._request import parse_request
from app.proxy._service import ProxyService, cost_usd
from app.proxy._transport import (
    ConnectFailed,
    MockResponse,
    MockTransport,
    ReadFailed,
    Transport,
    TransportError,
)
from app.proxy._usage import Usage

__all__ = [
    "ConnectFailed",
    "Exchange",
    "H1Transport",
    "MockResponse",
    "MockTransport",
    "ProxyService",
    "ReadFailed",
    "Relay",
    "Reply",
    "RetryBudget",
    "Transport",
    "TransportError",
    "Usage",
    "cost_usd",
    "new_request_id",
    "parse_request",
]
