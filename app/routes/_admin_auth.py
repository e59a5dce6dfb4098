"""Who is calling the admin surface: an admin token (API) or a dashboard session (cookie), never a key."""

from __future__ import annotations

from typing import Any

from litestar.types import Scope

from app._types import AnyRequest
from app.access import bearer_token
from app.admin import AdminRecord, AuditTrail
from app.errors import AuthenticationError, PermissionDeniedError, RateLimitError

__all__ = ["admin_for", "client_address", "trail"]


def client_address(scope: Scope | dict[str, Any]) -> str:
    """The peer's address (behind a proxy, the proxy's: throttling then counts per proxy)."""
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


async def admin_for(request: AnyRequest, *, write: bool = False, token: str | None = None) -> AdminRecord:
    """The admin behind a request's token; 401 for none or a bad one, 403 for a viewer's write or a key."""
    state = request.app.state
    address = client_address(request.scope)
    wait = state.guard.blocked_for(address)
    if wait:
        raise RateLimitError("Too many failed admin sign-ins from this address; try again later.", retry_after=wait)
    token = token if token is not None else bearer_token(request.headers)
    if token.startswith("pg_"):
        raise PermissionDeniedError("An API key cannot use the admin API; use an admin token (poolgate admins create).",
                                    code="admin_token_required")
    record: AdminRecord | None = await state.admins.authenticate(token) if token else None
    if record is None:
        state.guard.failed(address)
        raise AuthenticationError(
            "A valid admin token is required (Authorization: Bearer pga_...); an operator can create one with "
            "`poolgate admins create NAME --role admin`.", code="invalid_admin_token")
    if write and not record.may_change:
        raise PermissionDeniedError(f"The admin '{record.name}' is a viewer: viewers may read, not change.",
                                    code="admin_role_required")
    return record


def trail(record: AdminRecord, source: str = "api") -> AuditTrail:
    return AuditTrail(f"{record.name} (admin {record.id})", source)
