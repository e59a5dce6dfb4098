"""The API-key store: token format, hashing, policy, persistence and the serving cache.

This package holds no HTTP code; the gateway maps its outcomes to HTTP answers.
"""

from __future__ import annotations

from keys._cache import AuthRejected, KeyCache, Rejection
from keys._policy import (
    BUDGET_PERIODS,
    EFFORTS,
    MODALITIES,
    VERBOSITIES,
    Matcher,
    NameIndex,
    Policy,
    PolicyError,
    Quotas,
    policy_from_dict,
    validate_pattern,
)
from keys._records import KeyRecord, KeyStatus
from keys._store import (
    WRITE_OPTION,
    KeyNameTaken,
    KeyNotFound,
    KeyRevoked,
    KeyStore,
    StoreError,
    bump_counter,
    read_counter,
    write_transaction,
)
from keys._table import ApiKeyRow, CounterRow
from keys._token import generate_token, hash_secret, parse_token

__all__ = [
    "BUDGET_PERIODS",
    "EFFORTS",
    "MODALITIES",
    "VERBOSITIES",
    "WRITE_OPTION",
    "ApiKeyRow",
    "AuthRejected",
    "CounterRow",
    "KeyCache",
    "KeyNameTaken",
    "KeyNotFound",
    "KeyRecord",
    "KeyRevoked",
    "KeyStatus",
    "KeyStore",
    "Matcher",
    "NameIndex",
    "Policy",
    "PolicyError",
    "Quotas",
    "Rejection",
    "StoreError",
    "bump_counter",
    "generate_token",
    "hash_secret",
    "parse_token",
    "policy_from_dict",
    "read_counter",
    "validate_pattern",
    "write_transaction",
]
