"""Relaying requests to the pool: request checks, retries, streaming, usage capture."""

from __future__ import annotations

from app.proxy._relay import Outcome, Relay, RetryBudget
from app.proxy._request import ClientRequest, parse_request
from app.proxy._service import CLIENT_CLOSED, ProxyService
from app.proxy._usage import StreamUsage, Usage, usage_from_body

__all__ = [
    "CLIENT_CLOSED",
    "ClientRequest",
    "Outcome",
    "ProxyService",
    "Relay",
    "RetryBudget",
    "StreamUsage",
    "Usage",
    "parse_request",
    "usage_from_body",
]
