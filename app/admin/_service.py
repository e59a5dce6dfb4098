"""What admins do, once, for every door: the admin API, the dashboard and the CLI all call this.

Inputs are the JSON shapes of ``docs/admin-api.md`` (the CLI turns its flags into the same
shapes); outputs are the shapes ``--json`` prints. Every change is audited with its actor, and
announced so that every replica applies it within 2 seconds (this one at once).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from app.admin._audit import AuditTrail
from app.admin._identities import AdminRecord, AdminStore
from app.crypto import Vault
from app.pool import KINDS, UpstreamRecord, UpstreamStore, credential_headers, parse_routes
from app.pool._store import ModelRoute
from keys import (
    BUDGET_PERIODS,
    KeyRecord,
    KeyStore,
    Policy,
    PolicyError,
    Quotas,
    StoreError,
)

__all__ = ["AdminService", "InputError", "apply_key_changes", "parse_when", "probe_models"]

_POLICY_LISTS = ("allowed_reasoning_efforts", "allowed_modalities", "allowed_verbosities", "allowed_service_tiers")
_QUOTA_INTS = ("rpm", "rpd", "tpm", "tpd", "max_concurrency")
KEY_FIELDS = frozenset({
    "name", "allowed_models", "priority_rules", "tier", "quotas", "expires_at", "disabled", *_POLICY_LISTS,
})
UPSTREAM_FIELDS = frozenset({
    "name", "base_url", "models", "api_key", "weight", "tier", "max_concurrency", "enabled", "kind",
})
MAX_GRACE_SECONDS = 365 * 86400.0
"""How long a rotated key's old secret may keep working, at most."""
_YEAR_10000 = 253_402_300_800.0


class InputError(StoreError):
    """A request body the admin layer refuses; ``field`` names what is wrong."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


def _strings(value: object, field: str, *, allow_null: bool = False) -> tuple[str, ...] | None:
    if value is None and allow_null:
        return None
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise InputError(f"'{field}' must be a list of strings" + (" or null" if allow_null else ""), field)
    return tuple(value)


def _int_or_none(value: object, field: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"'{field}' must be a whole number or null", field)
    return value


def parse_when(value: object, field: str = "expires_at") -> float | None:
    """``null``, an ISO date or time (UTC when naive), or epoch seconds: a moment in the future."""
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        moment = float(value)
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise InputError(f"'{field}' must be an ISO date or time, such as 2027-01-01", field) from None
        moment = (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()
    else:
        raise InputError(f"'{field}' must be an ISO date or time, or null", field)
    if moment <= time.time():
        raise InputError(f"'{field}' is in the past", field)
    if moment >= _YEAR_10000:
        raise InputError(f"'{field}' is after the year 9999", field)
    return moment


def apply_key_changes(policy: Policy, changes: Mapping[str, Any]) -> Policy:
    """A policy with the given fields changed (``quotas`` merged field by field); others keep their value."""
    quotas = policy.quotas
    if "quotas" in changes:
        given = changes["quotas"]
        if not isinstance(given, dict):
            raise InputError("'quotas' must be an object", "quotas")
        every = (*_QUOTA_INTS, "budget_usd", "budget_period")
        unknown = sorted(set(given) - set(every))
        if unknown:
            raise InputError(f"unknown quota {unknown[0]!r}: expected {', '.join(every)}", f"quotas.{unknown[0]}")
        values: dict[str, Any] = {name: getattr(quotas, name) for name in every}
        for name in _QUOTA_INTS:
            if name in given:
                values[name] = _int_or_none(given[name], f"quotas.{name}")
        if "budget_usd" in given:
            budget = given["budget_usd"]
            if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int | float)):
                raise InputError("'quotas.budget_usd' must be an amount in USD or null", "quotas.budget_usd")
            values["budget_usd"] = None if budget is None else float(budget)
            if budget is None:
                values["budget_period"] = None
        if "budget_period" in given:
            period = given["budget_period"]
            if period is not None and period not in BUDGET_PERIODS:
                raise InputError("'quotas.budget_period' must be day, week or month", "quotas.budget_period")
            values["budget_period"] = period
        try:
            quotas = Quotas(**values)
        except PolicyError as exc:
            raise InputError(str(exc), "quotas") from None
    lists: dict[str, tuple[str, ...] | None] = {name: getattr(policy, name) for name in _POLICY_LISTS}
    for name in _POLICY_LISTS:
        if name in changes:
            lists[name] = _strings(changes[name], name, allow_null=True)
    tier = policy.tier
    if "tier" in changes:
        tier_value = _int_or_none(changes["tier"], "tier")
        tier = tier_value or 0
    models = policy.allowed_models
    if "allowed_models" in changes:
        models = _strings(changes["allowed_models"], "allowed_models") or ()
    rules = policy.priority_rules
    if "priority_rules" in changes:
        rules = _strings(changes["priority_rules"], "priority_rules", allow_null=True) or ()
    try:
        return Policy(allowed_models=models, priority_rules=rules, tier=tier, quotas=quotas,
                      allowed_reasoning_efforts=lists["allowed_reasoning_efforts"],
                      allowed_modalities=lists["allowed_modalities"],
                      allowed_verbosities=lists["allowed_verbosities"],
                      allowed_service_tiers=lists["allowed_service_tiers"])
    except PolicyError as exc:
        raise InputError(str(exc)) from None


async def probe_models(base_url: str, headers: Mapping[str, str], wait: float) -> dict[str, Any]:
    """GET ``{base_url}/models``: the latency and the models an upstream reports (``upstreams test``)."""
    import msgspec

    from app.proxy import H1Transport, TransportError

    started = time.perf_counter()
    try:
        status, body = await H1Transport.get_once(base_url + "/models", headers, wait)
    except TransportError as exc:
        return {"ok": False, "status": None, "latency_ms": round((time.perf_counter() - started) * 1000, 1),
                "models": [], "error": str(exc)}
    latency = round((time.perf_counter() - started) * 1000, 1)
    if status != 200:
        return {"ok": False, "status": status, "latency_ms": latency, "models": [],
                "error": f"HTTP {status} from {base_url}/models"}
    try:
        data = msgspec.json.decode(body)
    except (msgspec.DecodeError, RecursionError):
        data = None
    items = data.get("data", []) if isinstance(data, dict) else []
    models = sorted(str(m.get("id")) for m in items if isinstance(m, dict))
    return {"ok": True, "status": 200, "latency_ms": latency, "models": models, "error": None}


@dataclass
class AdminService:
    """``refresh`` applies a change to this process's caches at once; ``announce`` tells the others."""

    engine: AsyncEngine
    vault: Vault
    refresh: Callable[[str], Awaitable[None]] | None = None
    announce: Callable[[str], Awaitable[object]] | None = None

    async def _changed(self, what: str) -> None:
        if self.refresh is not None:
            await self.refresh(what)
        if self.announce is not None:
            await self.announce(what)

    # -- keys ----------------------------------------------------------------------------------

    def _keys(self, actor: AuditTrail | None) -> KeyStore:
        return KeyStore(self.engine, audit=None if actor is None else actor.key)

    async def list_keys(self, *, include_revoked: bool = False) -> list[dict[str, Any]]:
        now = time.time()
        return [record.public(now) for record in await self._keys(None).list(include_revoked=include_revoked)]

    async def get_key(self, ref: str) -> KeyRecord:
        return await self._keys(None).get(ref)

    async def create_key(self, spec: Mapping[str, Any], actor: AuditTrail) -> tuple[KeyRecord, str]:
        _only(spec, KEY_FIELDS)
        name = spec.get("name")
        if not isinstance(name, str) or not name.strip():
            raise InputError("'name' is required: a unique name for the key", "name")
        if "allowed_models" not in spec:
            raise InputError("'allowed_models' is required: the models the key may call, e.g. [\"gpt-5*\"] "
                             "or [\"*\"] for all", "allowed_models")
        policy = apply_key_changes(Policy(), spec)
        disabled = spec.get("disabled", False)
        if not isinstance(disabled, bool):
            raise InputError("'disabled' must be true or false", "disabled")
        record, token = await self._keys(actor).create(name, policy, expires_at=parse_when(spec.get("expires_at")),
                                                       disabled=disabled)
        await self._changed("keys")
        return record, token

    async def update_key(self, ref: str, changes: Mapping[str, Any], actor: AuditTrail) -> KeyRecord:
        _only(changes, KEY_FIELDS)
        if not changes:
            raise InputError("nothing to change: give at least one field")
        policy_fields = {k: v for k, v in changes.items() if k not in ("name", "expires_at", "disabled")}
        disabled = changes.get("disabled")
        if "disabled" in changes and not isinstance(disabled, bool):
            raise InputError("'disabled' must be true or false", "disabled")
        name = changes.get("name")
        if "name" in changes and not isinstance(name, str):
            raise InputError("'name' must be a string", "name")
        store = self._keys(actor)
        kwargs: dict[str, Any] = {"name": name, "disabled": disabled}
        if policy_fields:
            kwargs["policy"] = lambda current: apply_key_changes(current, policy_fields)
        if "expires_at" in changes:
            kwargs["expires_at"] = parse_when(changes["expires_at"])
        record = await store.update(ref, **kwargs)
        await self._changed("keys")
        return record

    async def revoke_key(self, ref: str, actor: AuditTrail) -> KeyRecord:
        record = await self._keys(actor).revoke(ref)
        await self._changed("keys")
        return record

    async def rotate_key(self, ref: str, actor: AuditTrail, *, grace_seconds: float = 0.0) -> tuple[KeyRecord, str]:
        if not 0 <= grace_seconds <= MAX_GRACE_SECONDS:
            raise InputError("the grace period must be 0 to 31536000 seconds (a year)", "grace_seconds")
        record, token = await self._keys(actor).rotate(ref, grace_seconds=grace_seconds)
        await self._changed("keys")
        return record, token

    # -- admins --------------------------------------------------------------------------------

    def _admins(self, actor: AuditTrail | None) -> AdminStore:
        return AdminStore(self.engine, audit=None if actor is None else actor.admin)

    async def list_admins(self, *, include_revoked: bool = False) -> list[AdminRecord]:
        return await self._admins(None).list(include_revoked=include_revoked)

    async def create_admin(self, name: str, role: str, actor: AuditTrail) -> tuple[AdminRecord, str]:
        """A new admin and its token (shown once); the audit entry holds the name and role, never the token."""
        record, token = await self._admins(actor).create(name, role)
        await self._changed("admins")
        return record, token

    async def revoke_admin(self, ref: str, actor: AuditTrail) -> AdminRecord:
        record = await self._admins(actor).revoke(ref)
        await self._changed("admins")
        return record

    # -- upstreams -----------------------------------------------------------------------------

    def _upstreams(self, actor: AuditTrail | None) -> UpstreamStore:
        return UpstreamStore(self.engine, self.vault, audit=None if actor is None else actor.upstream)

    async def list_upstreams(self) -> list[UpstreamRecord]:
        return await self._upstreams(None).list()

    async def get_upstream(self, ref: str) -> UpstreamRecord:
        return await self._upstreams(None).get(ref)

    async def create_upstream(self, spec: Mapping[str, Any], actor: AuditTrail) -> UpstreamRecord:
        _only(spec, UPSTREAM_FIELDS)
        name, base_url = spec.get("name"), spec.get("base_url")
        if not isinstance(name, str) or not name.strip():
            raise InputError("'name' is required: a unique name for the account, e.g. acct-1", "name")
        if not isinstance(base_url, str) or not base_url.strip():
            raise InputError("'base_url' is required, e.g. https://api.openai.com/v1", "base_url")
        if "models" not in spec:
            raise InputError("'models' is required: the models this account serves, e.g. [\"gpt-5*\"]", "models")
        kind = spec.get("kind", "openai")
        if kind not in KINDS:
            raise InputError(f"unknown kind {kind!r}: expected {', '.join(KINDS)}", "kind")
        record = await self._upstreams(actor).add(
            name, base_url, _routes(spec["models"]), credential=_credential(spec.get("api_key")),
            weight=_number(spec.get("weight", 1.0), "weight"), tier=_int_or_none(spec.get("tier"), "tier") or 0,
            max_concurrency=_int_or_none(spec.get("max_concurrency"), "max_concurrency") or None,
            enabled=_bool(spec.get("enabled", True), "enabled"), kind=str(kind),
        )
        await self._changed("upstreams")
        return record

    async def update_upstream(self, ref: str, changes: Mapping[str, Any], actor: AuditTrail) -> UpstreamRecord:
        _only(changes, UPSTREAM_FIELDS - {"kind"})
        if not changes:
            raise InputError("nothing to change: give at least one field")
        kwargs: dict[str, Any] = {}
        for field in ("name", "base_url"):
            if field in changes:
                if not isinstance(changes[field], str):
                    raise InputError(f"'{field}' must be a string", field)
                kwargs[field] = changes[field]
        if "models" in changes:
            kwargs["routes"] = _routes(changes["models"])
        if "api_key" in changes:
            kwargs["credential"] = _credential(changes["api_key"])
        if "weight" in changes:
            kwargs["weight"] = _number(changes["weight"], "weight")
        if "tier" in changes:
            kwargs["tier"] = _int_or_none(changes["tier"], "tier") or 0
        if "max_concurrency" in changes:
            kwargs["max_concurrency"] = _int_or_none(changes["max_concurrency"], "max_concurrency") or None
        if "enabled" in changes:
            kwargs["enabled"] = _bool(changes["enabled"], "enabled")
        record = await self._upstreams(actor).update(ref, **kwargs)
        await self._changed("upstreams")
        return record

    async def remove_upstream(self, ref: str, actor: AuditTrail) -> UpstreamRecord:
        record = await self._upstreams(actor).remove(ref)
        await self._changed("upstreams")
        return record

    async def test_upstream(self, ref: str, wait: float = 10.0) -> dict[str, Any]:
        record = await self.get_upstream(ref)
        result = await probe_models(record.base_url, credential_headers(record, self.vault), wait)
        return {"id": record.id, "name": record.name, **result}


def _only(given: Mapping[str, Any], allowed: frozenset[str]) -> None:
    if not isinstance(given, Mapping):
        raise InputError("the request body must be a JSON object")
    unknown = sorted(set(given) - allowed)
    if unknown:
        raise InputError(f"unknown field {unknown[0]!r}: expected {', '.join(sorted(allowed))}", unknown[0])


def _route_text(item: Mapping[str, Any]) -> str:
    """``{"pattern": ..., "upstream_model": ...}`` (the shape upstreams are shown in) as ``pattern=model``."""
    pattern, model = item.get("pattern"), item.get("upstream_model")
    if not isinstance(pattern, str) or not (model is None or isinstance(model, str)) or \
            set(item) - {"pattern", "upstream_model"}:
        raise InputError("each of 'models' must be a pattern, or {\"pattern\": ..., \"upstream_model\": ...} "
                         "with strings", "models")
    return f"{pattern}={model}" if model else pattern


def _routes(value: object) -> tuple[ModelRoute, ...]:
    if isinstance(value, list) and all(isinstance(v, str | dict) for v in value):
        value = ",".join(v if isinstance(v, str) else _route_text(v) for v in value)
    if not isinstance(value, str):
        raise InputError("'models' must be a list of model patterns", "models")
    try:
        return parse_routes(value)
    except (StoreError, PolicyError) as exc:
        raise InputError(str(exc), "models") from None


def _credential(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise InputError("'api_key' must be the account's API key (a non-empty string) or null", "api_key")
    return value.strip()


def _number(value: object, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError(f"'{field}' must be a number", field)
    return float(value)


def _bool(value: object, field: str) -> bool:
    if not isinstance(value, bool):
        raise InputError(f"'{field}' must be true or false", field)
    return value
