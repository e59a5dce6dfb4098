"""Liveness and readiness for orchestrators and load balancers."""

from __future__ import annotations

from litestar import Response, get

from app.services import Services

__all__ = ["healthz", "readyz"]


@get("/healthz")
async def healthz() -> Response[bytes]:
    return Response(content=b'{"status":"ok"}', media_type="application/json")


@get("/readyz")
async def readyz(services: Services) -> Response[bytes]:
    ok, detail = await services.ready()
    body = b'{"status":"ready"}' if ok else b'{"status":"unavailable","detail":"' + detail.encode() + b'"}'
    return Response(content=body, status_code=200 if ok else 503, media_type="application/json")
