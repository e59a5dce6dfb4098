"""The admin API's OpenAPI document, written out by hand from the shapes the service layer takes and gives.

A test compares its paths and methods with the routes the app serves, so neither can drift.
"""

from __future__ import annotations

import functools
from typing import Any

import msgspec

import app
from app.admin._service import MAX_GRACE_SECONDS

__all__ = ["openapi_document", "openapi_spec"]

_STRINGS: dict[str, Any] = {"type": "array", "items": {"type": "string"}}
_NULLABLE_STRINGS: dict[str, Any] = {"type": ["array", "null"], "items": {"type": "string"}}
_ERROR = {"$ref": "#/components/schemas/Error"}


def _ok(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    text = {400: "Invalid input", 401: "No valid admin token", 403: "A viewer's write, or an API key",
            404: "Not found", 409: "Conflict (name taken, already revoked, keys that cannot read credentials)",
            429: "Too many failed sign-ins from this address"}
    return {str(code): {"description": text[code], "content": {"application/json": {"schema": _ERROR}}}
            for code in (401, 429, *codes)}


def _body(ref: str) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _param(name: str, where: str = "path", description: str = "", *, required: bool | None = None) -> dict[str, Any]:
    return {"name": name, "in": where, "required": where == "path" if required is None else required,
            "description": description, "schema": {"type": "string"}}


REF = _param("ref", description="The key's (or upstream's) id or name.")

_QUOTAS: dict[str, Any] = {
    "type": "object",
    "properties": {
        **{name: {"type": ["integer", "null"], "minimum": 1}
           for name in ("rpm", "rpd", "tpm", "tpd", "max_concurrency")},
        "budget_usd": {"type": ["number", "null"]},
        "budget_period": {"enum": ["day", "week", "month", None]},
    },
}
_POLICY: dict[str, Any] = {
    "allowed_models": {**_STRINGS, "description": "ids, aliases and globs; [\"*\"] allows every model"},
    "allowed_reasoning_efforts": _NULLABLE_STRINGS,
    "allowed_modalities": _NULLABLE_STRINGS,
    "allowed_verbosities": _NULLABLE_STRINGS,
    "allowed_service_tiers": _NULLABLE_STRINGS,
    "priority_rules": _STRINGS,
    "tier": {"type": "integer", "minimum": 0},
    "quotas": _QUOTAS,
    "expires_at": {"type": ["string", "null"], "description": "ISO date or time (UTC), or null for never"},
    "disabled": {"type": "boolean"},
}
_KEY: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "string"}, "name": {"type": "string"},
        "status": {"enum": ["active", "expired", "disabled", "revoked"]},
        **{k: v for k, v in _POLICY.items() if k != "disabled"}, "disabled": {"type": "boolean"},
        "revoked_at": {"type": ["string", "null"]}, "previous_secret_valid_until": {"type": ["string", "null"]},
        "created_at": {"type": "string"}, "updated_at": {"type": "string"},
    },
}
_UPSTREAM: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "string"}, "name": {"type": "string"}, "kind": {"type": "string"},
        "base_url": {"type": "string"}, "has_credential": {"type": "boolean"},
        "models": {"type": "array", "items": {"type": "object", "properties": {
            "pattern": {"type": "string"}, "upstream_model": {"type": ["string", "null"]}}}},
        "weight": {"type": "number"}, "tier": {"type": "integer"}, "max_concurrency": {"type": ["integer", "null"]},
        "enabled": {"type": "boolean"}, "created_at": {"type": "string"}, "updated_at": {"type": "string"},
    },
}
_UPSTREAM_IN: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string"}, "base_url": {"type": "string"},
        "models": {"type": "array", "items": {"oneOf": [{"type": "string"}, {
            "type": "object", "required": ["pattern"], "additionalProperties": False,
            "properties": {"pattern": {"type": "string"}, "upstream_model": {"type": ["string", "null"]}}}]},
                   "description": "patterns; 'o3=o3-2025-04-16' (or {\"pattern\": \"o3\", \"upstream_model\": "
                                  "\"o3-2025-04-16\"}) calls a model by another name there"},
        "api_key": {"type": ["string", "null"], "writeOnly": True,
                    "description": "the account's API key: stored encrypted, never returned"},
        "weight": {"type": "number"}, "tier": {"type": "integer"}, "max_concurrency": {"type": ["integer", "null"]},
        "enabled": {"type": "boolean"}, "kind": {"enum": ["openai"]},
    },
}
_TOTALS: dict[str, Any] = {
    "type": "object",
    "properties": {
        **{name: {"type": "integer"} for name in ("requests", "errors", "input_tokens", "output_tokens",
                                                  "cached_tokens", "reasoning_tokens")},
        "cost_usd": {"type": "number"},
        "latency_ms": {"type": "object", "properties": {p: {"type": ["number", "null"]}
                                                        for p in ("mean", "p50", "p95", "p99")}},
    },
}


def openapi_spec() -> dict[str, Any]:
    created = {"201": _ok({**_KEY, "properties": {**_KEY["properties"], "key": {
        "type": "string", "description": "the full key, shown this once"}}}, "Created; the key is in `key`, once")}
    return {
        "openapi": "3.1.0",
        "info": {"title": "poolgate admin API", "version": app.__version__,
                 "description": "Keys, upstream accounts, usage, health and the audit log. Authenticate with "
                                "`Authorization: Bearer <admin token>`; viewers may read, admins may also change."},
        "servers": [{"url": "/admin/api"}],
        "security": [{"adminToken": []}],
        "paths": {
            "/keys": {
                "get": {"summary": "List keys", "parameters": [_param("include_revoked", "query")],
                        "responses": {"200": _ok({"type": "array", "items": _ref("Key")}), **_errors()}},
                "post": {"summary": "Create a key", "requestBody": _body("KeyCreate"),
                         "responses": {**created, **_errors(400, 403, 409)}},
            },
            "/keys/{ref}": {
                "get": {"summary": "Show a key", "parameters": [REF],
                        "responses": {"200": _ok(_ref("Key")), **_errors(404)}},
                "patch": {"summary": "Change a key (only the fields given)", "parameters": [REF],
                          "requestBody": _body("KeyUpdate"),
                          "responses": {"200": _ok(_ref("Key")), **_errors(400, 403, 404, 409)}},
                "delete": {"summary": "Revoke a key", "parameters": [REF],
                           "responses": {"200": _ok(_ref("Key")), **_errors(403, 404, 409)}},
            },
            "/keys/{ref}/rotate": {
                "post": {"summary": "Give a key a new secret", "parameters": [REF],
                         "requestBody": {"content": {"application/json": {"schema": {
                             "type": "object", "properties": {"grace_seconds": {
                                 "type": "number", "minimum": 0, "maximum": int(MAX_GRACE_SECONDS)}}}}}},
                         "responses": {"200": created["201"], **_errors(400, 403, 404, 409)}},
            },
            "/upstreams": {
                "get": {"summary": "List upstream accounts",
                        "responses": {"200": _ok({"type": "array", "items": _ref("Upstream")}), **_errors()}},
                "post": {"summary": "Add an upstream account", "requestBody": _body("UpstreamIn"),
                         "responses": {"201": _ok(_ref("Upstream"), "Created"), **_errors(400, 403, 409)}},
            },
            "/upstreams/{ref}": {
                "get": {"summary": "Show an upstream", "parameters": [REF],
                        "responses": {"200": _ok(_ref("Upstream")), **_errors(404)}},
                "patch": {"summary": "Change an upstream (only the fields given)", "parameters": [REF],
                          "requestBody": _body("UpstreamIn"),
                          "responses": {"200": _ok(_ref("Upstream")), **_errors(400, 403, 404, 409)}},
                "delete": {"summary": "Remove an upstream", "parameters": [REF],
                           "responses": {"200": _ok(_ref("Upstream")), **_errors(403, 404)}},
            },
            "/upstreams/{ref}/test": {
                "post": {"summary": "Probe the upstream's /models", "parameters": [REF],
                         "responses": {"200": _ok({"type": "object", "properties": {
                             "ok": {"type": "boolean"}, "status": {"type": ["integer", "null"]},
                             "latency_ms": {"type": "number"}, "models": _STRINGS,
                             "error": {"type": ["string", "null"]}}}), **_errors(403, 404)}},
            },
            "/usage": {
                "get": {"summary": "Usage report (JSON, or CSV with format=csv)", "parameters": [
                    _param("since", "query", "7d, 24h or an ISO date/time (default 7d)"),
                    _param("until", "query", "an ISO date/time or a duration back (default now)"),
                    _param("key", "query", "a key's id or name"), _param("model", "query"),
                    _param("upstream", "query"),
                    _param("group_by", "query", "comma-separated: key, model, upstream, day, hour (default key,model)"),
                    _param("limit", "query", "only the N costliest rows (1-100000); totals still count every row"),
                    _param("format", "query", "json (default) or csv"),
                ], "responses": {"200": {"description": "OK", "content": {
                    "application/json": {"schema": _ref("UsageReport")}, "text/csv": {"schema": {"type": "string"}}}},
                    **_errors(400, 404)}},
            },
            "/health": {
                "get": {"summary": "Each upstream's live state, per replica",
                        "responses": {"200": _ok({"type": "object", "properties": {"replicas": {
                            "type": "array", "items": {"type": "object"}}}}), **_errors()}},
            },
            "/audit": {
                "get": {"summary": "The audit log, newest first", "parameters": [
                    _param("limit", "query", "1-1000, default 100"), _param("before", "query", "an entry id"),
                    _param("action", "query", "e.g. key. or upstream.update"), _param("actor", "query"),
                    _param("target", "query")],
                    "responses": {"200": _ok({"type": "object", "properties": {
                        "entries": {"type": "array", "items": _ref("AuditEntry")},
                        "next_before": {"type": ["integer", "null"]}}}), **_errors(400)}},
            },
            "/me": {"get": {"summary": "The calling admin", "responses": {"200": _ok({"type": "object"}),
                                                                          **_errors()}}},
            "/openapi.json": {"get": {"summary": "This document", "security": [],
                                      "responses": {"200": {"description": "OK"}}}},
        },
        "components": {
            "securitySchemes": {"adminToken": {"type": "http", "scheme": "bearer",
                                               "description": "an admin token, pga_..."}},
            "schemas": {
                "Error": {"type": "object", "properties": {"error": {"type": "object", "properties": {
                    "message": {"type": "string"}, "type": {"type": "string"},
                    "param": {"type": ["string", "null"]}, "code": {"type": ["string", "null"]}}}}},
                "Key": _KEY,
                "KeyCreate": {"type": "object", "required": ["name", "allowed_models"],
                              "properties": {"name": {"type": "string"}, **_POLICY}},
                "KeyUpdate": {"type": "object", "properties": {"name": {"type": "string"}, **_POLICY}},
                "Upstream": _UPSTREAM,
                "UpstreamIn": _UPSTREAM_IN,
                "UsageReport": {"type": "object", "properties": {
                    "since": {"type": "string"}, "until": {"type": "string"}, "group_by": _STRINGS,
                    "rows": {"type": "array", "items": _TOTALS}, "totals": _TOTALS,
                    "has_more": {"type": "boolean", "description": "true when limit cut the rows"}}},
                "AuditEntry": {"type": "object", "properties": {
                    "id": {"type": "integer"}, "at": {"type": "string"}, "actor": {"type": "string"},
                    "source": {"enum": ["api", "dashboard", "cli"]}, "action": {"type": "string"},
                    "target": {"type": "string"}, "before": {"type": ["object", "null"]},
                    "after": {"type": ["object", "null"]}}},
            },
        },
    }


@functools.cache
def openapi_document() -> bytes:
    return msgspec.json.encode(openapi_spec())
