"""Liveness, readiness, and the Prometheus metrics."""

from __future__ import annotations

import asyncio
import hmac

import msgspec
from litestar import Response, get
from sqlalchemy import text

from app._types import AnyRequest
from app.access import bearer_token
from app.errors import AuthenticationError, PermissionDeniedError, RateLimitError
from app.metrics import CONTENT_TYPE
from app.routes._admin_auth import client_address

__all__ = ["healthz", "metrics", "readyz"]


@get("/healthz")
async def healthz() -> Response[bytes]:
    return Response(content=b'{"status":"ok"}', media_type="application/json")


@get("/readyz")
async def readyz(request: AnyRequest) -> Response[bytes]:
    """Ready once model views are pre-rendered, while the key cache is fresh and the database answers."""
    state = request.app.state
    settings, syncer = state.settings, state.syncer
    detail = "ready"
    if not state.catalog_sync.warm:
        detail = "pre-rendering model views"
    elif (stale := syncer.age("keys")) > max(10.0, settings.sync_interval * 20):
        detail = f"key store not synced for {stale:.0f}s"
    else:
        try:
            async with asyncio.timeout(2.0), state.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except Exception as exc:
            detail = f"database unreachable: {exc.__class__.__name__}"
    recorder = state.recorder
    body: dict[str, object] = {"status": "ready" if detail == "ready" else "unavailable"}
    if detail != "ready":
        body["detail"] = detail
    if recorder.failing_since is not None:
        body["usage"] = (f"the database refuses usage writes: {recorder.queued} rows waiting, "
                         f"{recorder.spill.written} spilled to disk")
    return Response(content=msgspec.json.encode(body), status_code=200 if detail == "ready" else 503,
                    media_type="application/json")


@get("/metrics")
async def metrics(request: AnyRequest) -> Response[bytes]:
    """Prometheus text; needs an admin token or the metrics token unless POOLGATE_METRICS_PUBLIC is set."""
    state = request.app.state
    settings = state.settings
    if not settings.metrics_public:
        await _metrics_allowed(request)
    recorder = state.recorder
    extra = (
        ("poolgate_usage_queued_rows", "gauge", "Usage rows waiting in memory to be written.", recorder.queued),
        ("poolgate_usage_spilled_rows_total", "counter",
         "Usage rows written to the spill file because the database refused them.", state.metrics.spilled_rows),
        ("poolgate_key_lookups_total", "counter",
         "Database lookups for keys this process had not cached yet.", state.key_cache.lookups),
    )
    body = state.metrics.render(state.pool.snapshot(), extra)
    return Response(content=body, headers={"content-type": CONTENT_TYPE})


async def _metrics_allowed(request: AnyRequest) -> None:
    state = request.app.state
    address = client_address(request.scope)
    wait = state.guard.blocked_for(address)
    if wait:
        raise RateLimitError("Too many bad tokens from this address; try again later.", retry_after=wait)
    token = bearer_token(request.headers)
    expected = state.settings.metrics_token
    if expected and token and hmac.compare_digest(token.encode(), expected.encode()):
        return
    if token.startswith("pga_") and await state.admins.authenticate(token) is not None:
        return
    if token.startswith("pg_"):
        raise PermissionDeniedError("/metrics needs an admin token or the metrics token, not an API key.",
                                    code="admin_token_required")
    state.guard.failed(address)
    raise AuthenticationError("/metrics needs an admin token or the metrics token (Authorization: Bearer ...), "
                              "or POOLGATE_METRICS_PUBLIC=true.", code="invalid_admin_token")

