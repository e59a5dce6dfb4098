"""Who is calling and what they may touch: maps the key store's answers to OpenAI errors."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TypeVar

from app.catalog import Catalog, ModelInfo
from app.errors import AuthenticationError, GatewayError, NotFoundError, PermissionDeniedError
from keys import AuthRejected, KeyCache, KeyRecord, NotCached, Rejection

__all__ = [
    "authenticate",
    "bearer_token",
    "codex_fatal",
    "is_codex",
    "model_not_allowed",
    "model_not_found",
    "rejection_error",
    "resolve_model",
]

E = TypeVar("E", bound=GatewayError)

INVALID_KEY_MESSAGE = (
    "Incorrect API key provided. Pass a poolgate key as 'Authorization: Bearer <key>'; "
    "your poolgate admin can issue one."
)


def bearer_token(headers: Mapping[str, str]) -> str:
    auth = headers.get("authorization")
    if auth is not None:
        scheme, _, token = auth.partition(" ")
        return token.strip() if scheme.lower() == "bearer" else ""
    return (headers.get("x-api-key") or "").strip()


async def authenticate(headers: Mapping[str, str], cache: KeyCache, now: float | None = None) -> KeyRecord:
    """The calling key, from the cache; a well-formed key the cache has not seen yet is looked up once."""
    moment = time.time() if now is None else now
    try:
        return cache.authenticate(bearer_token(headers), moment)
    except NotCached as miss:
        try:
            return await cache.fetch(miss, moment)
        except AuthRejected as exc:
            raise rejection_error(exc) from None
    except AuthRejected as exc:
        raise rejection_error(exc) from None


def rejection_error(exc: AuthRejected) -> GatewayError:
    if exc.reason is Rejection.EXPIRED:
        return AuthenticationError(
            "This API key has expired. Ask your poolgate admin for a new one.", code="api_key_expired"
        )
    if exc.reason is Rejection.DISABLED:
        return PermissionDeniedError(
            "This API key is disabled. Ask your poolgate admin to enable it.", code="api_key_disabled"
        )
    return AuthenticationError(INVALID_KEY_MESSAGE)


def model_not_found(name: str) -> NotFoundError:
    return NotFoundError(
        f"The model '{name}' does not exist or you do not have access to it.", code="model_not_found", param="model"
    )


def model_not_allowed(name: str) -> PermissionDeniedError:
    return PermissionDeniedError(
        f"This API key may not use the model '{name}'.", code="model_not_allowed", param="model"
    )


def resolve_model(catalog: Catalog, key: KeyRecord, name: str) -> ModelInfo:
    """The canonical model a name stands for, if this key may call it."""
    model = catalog.resolve(name)
    if model is None:
        raise model_not_found(name)
    if not key.policy.allows_model(model.names):
        raise model_not_allowed(name)
    return model


_FATAL_FOR_CODEX = frozenset({
    "model_not_allowed", "endpoint_not_allowed", "reasoning_effort_not_allowed", "modality_not_allowed",
    "verbosity_not_allowed", "service_tier_not_allowed",
})


def is_codex(headers: Mapping[str, str]) -> bool:
    """The Codex CLI names itself in ``originator`` (codex_exec, codex_cli_rs, ...) and its user agent."""
    originator = headers.get("originator") or headers.get("user-agent") or ""
    return originator[:5].lower() == "codex"


def codex_fatal(exc: E) -> E:
    """The same error for Codex, shaped so that Codex stops at once when no retry can help.

    Codex retries a 403 six times, but stops on ``model_not_found``: a refusal that no retry can
    change keeps its message (which names the model) and takes that code. (A 429 that waiting
    cannot fix already comes without ``Retry-After`` for every client, which Codex obeys.)
    """
    if isinstance(exc, PermissionDeniedError) and exc.code in _FATAL_FOR_CODEX:
        exc.code = "model_not_found"
    return exc
