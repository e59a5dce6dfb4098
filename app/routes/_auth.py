"""The first step of every client route: who is calling, and one unit of their request quota."""

from __future__ import annotations

from app._types import AnyRequest
from app.access import authenticate
from app.quota import QuotaService
from keys import KeyCache, KeyRecord

__all__ = ["authorize"]


async def authorize(request: AnyRequest, keys: KeyCache, quota: QuotaService) -> tuple[KeyRecord, dict[str, str]]:
    """The calling key and its rate-limit headers; the headers also go on any error that follows."""
    key = await authenticate(request.headers, keys)
    headers = await quota.take_request(key)
    request.scope["state"]["ratelimit_headers"] = headers
    return key, headers
