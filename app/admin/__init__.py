"""Admins: their identities, the audit log, sign-in throttling, and the service layer the admin API,
the dashboard and the CLI share."""

from __future__ import annotations

from app.admin._audit import AuditTrail, cli_actor, read_audit
from app.admin._guard import SignInGuard
from app.admin._identities import ROLES, AdminCache, AdminRecord, AdminStore
from app.admin._service import AdminService, probe_models

__all__ = [
    "ROLES",
    "AdminCache",
    "AdminRecord",
    "AdminService",
    "AdminStore",
    "AuditTrail",
    "SignInGuard",
    "cli_actor",
    "probe_models",
    "read_audit",
]
