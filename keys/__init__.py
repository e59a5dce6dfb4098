"""The API-key store: token format, hashing, policy, persistence and the serving cache.

This package holds no HTTP code; the gateway maps its outcomes to HTTP answers.
"""

from __future__ import annotations

from keys._cache import AuthRejected, KeyCache, NotCached, Rejection
from keys._policy import (
    BUDGET_PERIODS,
    EFFORTS,
    MODALITIES,
    SERVICE_TIERS,
    VERBOSITIES,
    Matcher,
    NameIndex,
    Policy,
    PolicyError,
    Quotas,
    policy_from_dict,
    validate_pattern,
)
from keys._records import KeyRecord
from keys._store import KeyAlreadyRevoked, KeyNameTaken, KeyNotFound, KeyRevoked, KeyStore, StoreError
from keys._token import ADMIN_PREFIX, generate_token, hash_secret, parse_token

__all__ = [
    "ADMIN_PREFIX",
    "BUDGET_PERIODS",
    "EFFORTS",
    "MODALITIES",
    "SERVICE_TIERS",
    "VERBOSITIES",
    "AuthRejected",
    "KeyAlreadyRevoked",
    "KeyCache",
    "KeyNameTaken",
    "KeyNotFound",
    "KeyRecord",
    "KeyRevoked",
    "KeyStore",
    "Matcher",
    "NameIndex",
    "NotCached",
    "Policy",
    "PolicyError",
    "Quotas",
    "Rejection",
    "StoreError",
    "generate_token",
    "hash_secret",
    "parse_token",
    "policy_from_dict",
    "validate_pattern",
]
